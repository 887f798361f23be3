// Per ggml tensor type at the real Qwen2.5 layer shapes: the linear layers of one decoder layer
// (qkv, o, gate+up, down) as a GGUF of that type stores them (a type whose block does not divide a
// row takes llama-quantize's fallback, as quant-mix.ts does: the 0.5B's 896-wide rows), repacked
// by ggmlToMatrix as a GGUF load does, multiplied on `threads` threads for one token (decode) and
// for a prefill chunk, in interleaved rounds so that every type sees the same machine (the best
// round of each counts). Tokens/s
// count only these matmuls (times the layer count): what matters is the ratio to q4_0 (4-bit and
// smaller types) or q8_0 (5- to 8-bit and float types) within the same run.
import { allocQuantizedActivations, quantizeActivations } from '../src/tensor/formats/activations.js';
import { GGML_TYPE, GGML_TYPES, ggmlRowBytes, ggmlToMatrix } from '../src/tensor/formats/ggml.js';
import { matrixBytes, sharedFloat32, type Matrix } from '../src/tensor/matrix.js';
import { ThreadPool } from '../src/tensor/pool.js';
import { fillUniform, log, StreamTable } from './common.js';
import { createRunner, type FormatBenchState } from './format-runner.js';

export interface FormatModelShape {
  model: string;
  hidden: number;
  intermediate: number;
  qDim: number;
  kvDim: number;
  layers: number;
}

export const FORMAT_SHAPES: FormatModelShape[] = [
  { model: '0.5b', hidden: 896, intermediate: 4864, qDim: 896, kvDim: 128, layers: 24 },
  { model: '1.5b', hidden: 1536, intermediate: 8960, qDim: 1536, kvDim: 256, layers: 28 },
];

export const FORMAT_TYPES = [
  'Q4_0',
  'Q8_0',
  'Q4_K',
  'Q5_K',
  'Q6_K',
  'Q5_0',
  'Q5_1',
  'Q4_1',
  'Q2_K',
  'Q3_K',
  'F16',
  'BF16',
  'IQ4_NL',
  'IQ4_XS',
];

// llama-quantize's fallbacks for rows its block does not divide (quant-mix.ts).
const FALLBACK: Record<string, string> = {
  Q2_K: 'Q4_0',
  Q3_K: 'Q4_0',
  Q4_K: 'Q5_0',
  Q5_K: 'Q5_1',
  Q6_K: 'Q8_0',
  IQ4_XS: 'IQ4_NL',
};

export interface FormatResult {
  model: string;
  type: string;
  /** The types the layer holds (with fallbacks). */
  mix: string;
  baseline: string;
  prefillTokS: number;
  decodeTokS: number;
  prefillRatio: number;
  decodeRatio: number;
  /** Resident matrix bytes / the GGUF tensor bytes of the same matrices. */
  memoryRatio: number;
}

/** The ratio baseline of a type: q4_0 for 4 bits and fewer, q8_0 for the rest. */
function baselineOf(type: string): string {
  return ['Q4_0', 'Q4_1', 'Q4_K', 'Q2_K', 'Q3_K', 'IQ4_NL', 'IQ4_XS'].includes(type) ? 'Q4_0' : 'Q8_0';
}

// Where each type keeps its f16 scales (byte offsets in a block): set to small normal values so
// that random levels give finite, normal weights.
const SCALE_OFFSETS: Record<string, number[]> = {
  Q4_0: [0],
  Q8_0: [0],
  Q4_1: [0, 2],
  Q5_0: [0],
  Q5_1: [0, 2],
  Q2_K: [16, 18],
  Q3_K: [108],
  Q4_K: [0, 2],
  Q5_K: [0, 2],
  Q6_K: [208],
};

/** Random GGUF bytes of `rows` x `cols` values of `type` (speed only: the values do not matter). */
export function randomTensor(type: string, rows: number, cols: number, seed: number): Uint8Array {
  const code = GGML_TYPE[type as keyof typeof GGML_TYPE];
  const bytes = new Uint8Array(rows * ggmlRowBytes(code, cols));
  let s = seed >>> 0 || 1;
  for (let i = 0; i < bytes.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    bytes[i] = s & 0xff;
  }
  if (type === 'F16' || type === 'BF16') {
    // Magnitudes about 2^-6 .. 2^-4: exponent bits fixed, mantissa and sign random.
    for (let i = 1; i < bytes.length; i += 2) bytes[i] = (bytes[i] & 0x80) | (type === 'F16' ? 0x24 : 0x3c);
  } else {
    const { typeSize } = GGML_TYPES.get(code)!;
    for (let o = 0; o < bytes.length; o += typeSize)
      for (const k of SCALE_OFFSETS[type] ?? [0]) {
        bytes[o + k] = 0x00;
        bytes[o + k + 1] = 0x20; // f16 2^-7
      }
  }
  return bytes;
}

interface Layer {
  mats: Matrix[];
  types: string[];
  fileBytes: number;
}

function buildLayer(shape: FormatModelShape, type: string): Layer {
  const dims: [number, number][] = [
    [shape.qDim + 2 * shape.kvDim, shape.hidden],
    [shape.hidden, shape.qDim],
    [2 * shape.intermediate, shape.hidden],
    [shape.hidden, shape.intermediate],
  ];
  const mats: Matrix[] = [];
  const types: string[] = [];
  let fileBytes = 0;
  dims.forEach(([rows, cols], i) => {
    let t = type;
    const block = GGML_TYPES.get(GGML_TYPE[t as keyof typeof GGML_TYPE])!.blockSize;
    if (cols % block !== 0) t = FALLBACK[t] ?? t;
    const src = randomTensor(t, rows, cols, 1 + i + rows);
    fileBytes += src.length;
    mats.push(ggmlToMatrix(GGML_TYPE[t as keyof typeof GGML_TYPE], src, rows, cols));
    types.push(t);
  });
  return { mats, types, fileBytes };
}

const table = new StreamTable(
  "Formats (one decoder layer's matmuls x layers; tok/s of those matmuls only; ratio to q4_0 / q8_0 of the same run; memory = resident / GGUF bytes)",
  [
    { title: 'model', width: 5, align: 'left' },
    { title: 'type', width: 5, align: 'left' },
    { title: 'layer holds', width: 22, align: 'left' },
    { title: 'vs', width: 4, align: 'left' },
    { title: 'prefill t/s', width: 11 },
    { title: 'ratio', width: 5 },
    { title: 'decode t/s', width: 10 },
    { title: 'ratio', width: 5 },
    { title: 'memory', width: 6 },
  ],
);

// The best of the rounds: on a shared machine other jobs only ever add time, so the fastest round
// is the closest to the kernel's own speed (medians swung by 2x under load 20+).
const best = (a: number[]) => Math.min(...a);

/** Time every type in `types` on each shape: decode (n = 1) and prefill (n = prefillN), `rounds` interleaved rounds. */
export async function runFormats(opts: {
  shapes: FormatModelShape[];
  types: string[];
  threads: number;
  prefillN: number;
  rounds: number;
}): Promise<FormatResult[]> {
  const results: FormatResult[] = [];
  for (const shape of opts.shapes) {
    log(`  formats ${shape.model}: building ${opts.types.join(', ')}`);
    const layers = opts.types.map((t) => buildLayer(shape, t));
    const mats = layers.flatMap((l) => l.mats);
    // Activations per distinct width, shared by the matrices of that width.
    const byCols = new Map<number, { x: Float32Array; xq: ReturnType<typeof allocQuantizedActivations> }>();
    for (const m of mats)
      if (!byCols.has(m.cols)) {
        const x = sharedFloat32(opts.prefillN * m.cols);
        fillUniform(x, 1, m.cols);
        const xq = allocQuantizedActivations(opts.prefillN, m.cols, true);
        quantizeActivations(x, 0, m.cols, 0, opts.prefillN, xq);
        byCols.set(m.cols, { x, xq });
      }
    const state: FormatBenchState = {
      mats,
      xs: mats.map((m) => byCols.get(m.cols)!.x),
      xqs: mats.map((m) => byCols.get(m.cols)!.xq),
      ys: mats.map((m) => sharedFloat32(opts.prefillN * m.rows)),
    };
    const pool = await ThreadPool.create(
      opts.threads,
      new URL('./format-runner.js', import.meta.url),
      state,
      createRunner(state),
    );
    const decode: number[][] = layers.map(() => []);
    const prefill: number[][] = layers.map(() => []);
    const layerTime = (li: number, n: number, reps: number) => {
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < reps; k++) for (let i = 0; i < 4; i++) pool.run(4 * li + i, n);
      return Number(process.hrtime.bigint() - t0) / 1e9 / reps;
    };
    try {
      for (let li = 0; li < layers.length; li++) {
        layerTime(li, 1, 2); // warm up both kernels
        layerTime(li, opts.prefillN, 1);
      }
      for (let round = 0; round < opts.rounds; round++) {
        // Alternate the order so that no type always runs right after the same neighbour.
        const order = layers.map((_, i) => i);
        if (round % 2 === 1) order.reverse();
        for (const li of order) {
          decode[li].push(layerTime(li, 1, 4));
          prefill[li].push(layerTime(li, opts.prefillN, 1));
        }
      }
    } finally {
      await pool.close();
    }
    const tokS = (li: number) => ({
      decode: 1 / (shape.layers * best(decode[li])),
      prefill: opts.prefillN / (shape.layers * best(prefill[li])),
    });
    const ref = (type: string) => tokS(opts.types.indexOf(type));
    for (let li = 0; li < layers.length; li++) {
      const type = opts.types[li];
      const baseline = baselineOf(type);
      const s = tokS(li);
      const b = opts.types.includes(baseline) ? ref(baseline) : null;
      const memory = layers[li].mats.reduce((a, m) => a + matrixBytes(m), 0) / layers[li].fileBytes;
      const counts = new Map<string, number>();
      for (const t of layers[li].types) counts.set(t, (counts.get(t) ?? 0) + 1);
      const r: FormatResult = {
        model: shape.model,
        type,
        mix: [...counts].map(([t, n]) => (n === 4 ? t : `${n} ${t}`)).join(', '),
        baseline: baseline.toLowerCase(),
        prefillTokS: s.prefill,
        decodeTokS: s.decode,
        prefillRatio: b ? s.prefill / b.prefill : NaN,
        decodeRatio: b ? s.decode / b.decode : NaN,
        memoryRatio: memory,
      };
      results.push(r);
      table.row([
        r.model,
        r.type,
        r.mix,
        r.baseline,
        r.prefillTokS.toFixed(1),
        r.prefillRatio.toFixed(2),
        r.decodeTokS.toFixed(2),
        r.decodeRatio.toFixed(2),
        r.memoryRatio.toFixed(2),
      ]);
    }
  }
  return results;
}
