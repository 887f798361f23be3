// Loads a Qwen2 / Qwen3 / Llama checkpoint's tensors into the weight format chosen at load time. Every tensor is
// read once from disk into its final SharedArrayBuffer storage (bf16 -> bf16 with no conversion at
// all); conversions and quantization go through a piece of rows at a time, never a second full
// copy, on every thread the model will run on (load-pieces.ts).
import {
  BF16,
  F32,
  FORMAT_CODES,
  makeMatrix,
  Q4_0,
  QBLOCK,
  sharedFloat32,
  type Matrix,
  type WeightFormat,
} from '../tensor/matrix.js';
import { startTaskThreads } from '../platform/runtime.js';
import { allocGgmlMatrix } from '../tensor/formats/ggml.js';
import { kQuantFileType, tensorType } from './gguf/quant-mix.js';
import { allocQuantizedMatrix } from '../tensor/matmul.js';
import type { ModelConfig } from './config.js';
import {
  abandonPieces,
  PieceScratch,
  planPieces,
  runPiece,
  takePiece,
  type LoadPlan,
  type PiecesResult,
  type TensorJob,
} from './load-pieces.js';
import { SafetensorsError, type TensorStore } from './safetensors.js';
import { hfLayerName, LAYER_TENSORS, MODEL_TENSORS, type LayerTensorField } from './tensor-names.js';

export interface LayerWeights {
  inputNorm: Float32Array; // [hidden]
  qProj: Matrix; // [heads*headDim, hidden]
  qBias: Float32Array | null; // [heads*headDim]; qwen2 always, llama/qwen3 with attention_bias
  kProj: Matrix; // [kvHeads*headDim, hidden]
  kBias: Float32Array | null; // [kvHeads*headDim]
  vProj: Matrix; // [kvHeads*headDim, hidden]
  vBias: Float32Array | null; // [kvHeads*headDim]
  qNorm: Float32Array | null; // [headDim]: qwen3's per-head RMSNorm of q before RoPE
  kNorm: Float32Array | null; // [headDim]: same for k
  oProj: Matrix; // [hidden, heads*headDim]
  oBias: Float32Array | null; // [hidden]: llama and qwen3 with attention_bias
  postAttentionNorm: Float32Array; // [hidden]
  gateProj: Matrix; // [intermediate, hidden]
  gateBias: Float32Array | null; // [intermediate]: llama's mlp_bias
  upProj: Matrix; // [intermediate, hidden]
  upBias: Float32Array | null; // [intermediate]
  downProj: Matrix; // [hidden, intermediate]
  downBias: Float32Array | null; // [hidden]
}

export interface ModelWeights {
  format: WeightFormat;
  /** The tensor types as loaded when they are not all `format` (a GGUF's mix, e.g. "GGUF 24 Q4_K, 5 Q6_K, 21 F32"). */
  description?: string;
  embed: Matrix; // [vocab, hidden]
  layers: LayerWeights[];
  finalNorm: Float32Array; // [hidden]
  lmHead: Matrix; // [vocab, hidden]; the same object as embed when tie_word_embeddings
  /**
   * The checkpoint has no output head (a bare decoder, `architectures: ["Qwen3Model"]`, such as
   * Qwen3-Embedding): it only embeds. lmHead is then the embeddings, so the runner's weight table
   * keeps its shape, and the LLM refuses to generate with it.
   */
  headless?: boolean;
}

/** Options of loadWeights. */
export interface LoadWeightsOptions {
  /** Threads that load, the calling thread included. Default 1. */
  threads?: number;
  /** Bytes of the file per piece of work (see load-pieces.ts). Default PIECE_BYTES; tests use tiny pieces. */
  pieceBytes?: number;
  /** Fewest bytes to convert or quantize for which loading starts worker threads. Default PARALLEL_MIN_BYTES. */
  parallelMinBytes?: number;
  /** Bytes of the weight files read so far and in all; called at most every 100 ms, and at the end. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

// Pieces of 16 KiB to 1 MiB loaded the 0.5B model as q4_0 in the same time; 256 KiB makes 4000
// pieces of it, so the threads finish within a piece of each other.
const PIECE_BYTES = 256 << 10;
const PARALLEL_MIN_BYTES = 32 << 20;

/** Storage for tensor `name`, a [rows, cols] matrix in `format`, to be filled by the pieces of `jobs`. */
function planMatrix(
  store: TensorStore,
  jobs: TensorJob[],
  name: string,
  rows: number,
  cols: number,
  format: WeightFormat,
  layers: number,
  tied: boolean,
): Matrix {
  const info = store.get(name, [rows, cols]);
  // (Rows not a whole number of 32-blocks have no ggml quantized type: they stay bf16 below.)
  if ((format === 'q4_k' || format === 'q5_k' || format === 'q6_k' || format === 'q4_k_m') && cols % QBLOCK === 0) {
    // llama-quantize's type for this tensor (by its role and layer), quantized by ggml's rules.
    const type = tensorType(kQuantFileType(format), {
      name: ggufRoleName(name),
      cols,
      nDims: 2,
      layer: layerOf(name),
      layers,
      tiedEmbedding: tied,
    });
    const m = allocGgmlMatrix(type, rows, cols);
    jobs.push({ info, dest: m });
    return m;
  }
  let code = FORMAT_CODES[format];
  // Quantized formats need whole 32-blocks (and row pairs for q4_0); other shapes stay bf16.
  if (code >= 2 && (cols % QBLOCK !== 0 || (code === Q4_0 && rows % 2 !== 0))) code = BF16;
  const m =
    code === F32
      ? makeMatrix(F32, rows, cols, { f32: sharedFloat32(rows * cols) })
      : code === BF16
        ? makeMatrix(BF16, rows, cols, { u16: new Uint16Array(new SharedArrayBuffer(rows * cols * 2)) })
        : allocQuantizedMatrix(code, rows, cols);
  jobs.push({ info, dest: m });
  return m;
}

/** The GGUF name quant-mix decides by (output, token_embd, attn_v, ffn_down; the rest alike), from an HF name. */
function ggufRoleName(name: string): string {
  if (name === 'lm_head.weight') return 'output.weight';
  if (name === 'model.embed_tokens.weight') return 'token_embd.weight';
  const layer = layerOf(name);
  if (name.endsWith('.self_attn.v_proj.weight')) return `blk.${layer}.attn_v.weight`;
  if (name.endsWith('.mlp.down_proj.weight')) return `blk.${layer}.ffn_down.weight`;
  return `blk.${layer}.${name.replace(/^model\.layers\.\d+\./, '')}`;
}

function layerOf(name: string): number {
  const m = /^model\.layers\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : 0;
}

/** Storage for a 1-D tensor (norm weight, bias) as f32: one row of n. */
function planVector(store: TensorStore, jobs: TensorJob[], name: string, n: number): Float32Array {
  const info = store.get(name, [n]);
  const m = makeMatrix(F32, 1, n, { f32: sharedFloat32(n) });
  jobs.push({ info, dest: m });
  return m.f32;
}

/**
 * Every weight of the model, converted or quantized to `format`. The tensors are looked up and
 * their storage allocated first (so a missing or mis-shaped tensor fails before any reading), then
 * filled in pieces by `threads` threads.
 */
export async function loadWeights(
  store: TensorStore,
  c: ModelConfig,
  format: WeightFormat,
  opts: LoadWeightsOptions = {},
): Promise<ModelWeights> {
  const jobs: TensorJob[] = [];
  let weights: ModelWeights;
  try {
    weights = planWeights(store, c, format, jobs);
  } catch (e) {
    // A model larger than the memory a runtime lets one buffer or the process have (a browser
    // tab's limits are the usual case) fails here, while its tensors are allocated.
    if (!(e instanceof RangeError) || !/allocat|array buffer length/i.test(e.message)) throw e;
    let fileBytes = 0;
    for (const info of store.tensors.values()) fileBytes += info.byteLength;
    throw new RangeError(
      `${store.dir}: cannot allocate the weights (${e.message}): the checkpoint holds ${(fileBytes / 2 ** 30).toFixed(2)} GiB ` +
        `and loads as ${format}; this runtime (a browser tab caps each buffer and the tab's memory) has not that much. ` +
        'Use a smaller model, or weights q8_0 / q4_0 (about a quarter and an eighth of f32)',
    );
  }
  const plan = planPieces(jobs, opts.pieceBytes ?? PIECE_BYTES);
  // Workers for the bytes that are converted or quantized. Copies (bf16 to bf16, f32 to f32) are
  // bound by the page faults of their fresh memory, which took 0.8x-1.4x as long on two threads as
  // on one on this VM; below PARALLEL_MIN_BYTES, starting the workers costs more than they save.
  let fileBytes = 0;
  let convertedBytes = 0;
  for (const { info, dest } of jobs) {
    fileBytes += info.byteLength;
    const copy = (dest.format === F32 && info.dtype === 'F32') || (dest.format === BF16 && info.dtype === 'BF16');
    if (!copy) convertedBytes += info.byteLength;
  }
  const parallel = convertedBytes >= (opts.parallelMinBytes ?? PARALLEL_MIN_BYTES);
  let reported = performance.now();
  const onPiece = opts.onProgress
    ? (done: number) => {
        const now = performance.now();
        if (now - reported < 100) return;
        reported = now;
        opts.onProgress!(done, fileBytes);
      }
    : null;
  opts.onProgress?.(0, fileBytes);
  await runPieces(store, plan, parallel ? (opts.threads ?? 1) : 1, onPiece);
  opts.onProgress?.(fileBytes, fileBytes);
  return weights;
}

/** Run the plan's pieces on this thread and threads - 1 workers; throws the first failure. */
async function runPieces(
  store: TensorStore,
  plan: LoadPlan,
  threads: number,
  onPiece: ((doneBytes: number) => void) | null,
): Promise<void> {
  const workers = threads - 1;
  // (null in the browser: the fetched files are in this thread's memory, so this thread loads alone.)
  const piscina = workers > 0 ? startTaskThreads(new URL('./load-worker.js', import.meta.url), workers) : null;
  const results = piscina
    ? Promise.all(Array.from({ length: workers }, () => piscina.run(plan) as Promise<PiecesResult>))
    : null;
  let failure: unknown = null;
  try {
    const scratch = new PieceScratch();
    let yielded = performance.now();
    for (let p = takePiece(plan); p >= 0; p = takePiece(plan)) {
      runPiece(plan, p, store, scratch);
      onPiece?.(Number(Atomics.load(plan.doneBytes, 0)));
      // Piscina hands the workers their task from the event loop: let it run now and then.
      if (piscina && performance.now() - yielded > 10) {
        await new Promise((resolve) => setImmediate(resolve));
        yielded = performance.now();
      }
    }
  } catch (e) {
    abandonPieces(plan);
    failure = e;
  }
  if (piscina && results) {
    try {
      for (const r of await results) {
        if (r !== null && failure === null)
          failure = r.name === 'SafetensorsError' ? new SafetensorsError(r.message) : new Error(r.message);
      }
    } catch (e) {
      failure ??= new Error(`qwen-ts: a weight-loading worker thread failed: ${(e as Error).message ?? e}`);
    } finally {
      await piscina.destroy();
    }
  }
  if (failure !== null) throw failure;
}

function planWeights(store: TensorStore, c: ModelConfig, format: WeightFormat, jobs: TensorJob[]): ModelWeights {
  const matrix = (name: string, rows: number, cols: number) =>
    planMatrix(store, jobs, name, rows, cols, format, c.numLayers, c.tieWordEmbeddings);
  const vector = (name: string, n: number) => planVector(store, jobs, name, n);
  const h = c.hiddenSize;
  const embed = matrix(MODEL_TENSORS.embed.hf, c.vocabSize, h);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    // A tensor the family (config) does not have is null, so a missing one of a family that has it is an error.
    const layer = {} as Record<LayerTensorField, Matrix | Float32Array | null>;
    for (const t of LAYER_TENSORS) {
      const shape = t.shape(c);
      const name = hfLayerName(l, t);
      layer[t.field] = !t.present(c)
        ? null
        : shape.length === 2
          ? matrix(name, shape[0], shape[1])
          : vector(name, shape[0]);
    }
    layers.push(layer as unknown as LayerWeights);
  }
  const finalNorm = vector(MODEL_TENSORS.finalNorm.hf, h);
  let lmHead = embed;
  if (!c.tieWordEmbeddings && !store.has(MODEL_TENSORS.lmHead.hf) && isBareDecoder(c))
    return { format, embed, layers, finalNorm, lmHead, headless: true };
  if (!c.tieWordEmbeddings) {
    if (!store.has(MODEL_TENSORS.lmHead.hf)) {
      throw new SafetensorsError(
        `${store.dir}: tensor "lm_head.weight" not found, and config.json has tie_word_embeddings: false (a model without an output head says so with architectures: ["Qwen3Model"], as Qwen3-Embedding does)`,
      );
    }
    lmHead = matrix(MODEL_TENSORS.lmHead.hf, c.vocabSize, h);
  }
  return { format, embed, layers, finalNorm, lmHead };
}

/** config.json names the bare decoder (Qwen3Model, Qwen2Model, LlamaModel), not a ...ForCausalLM. */
export function isBareDecoder(c: ModelConfig): boolean {
  const a = c.architectures ?? [];
  return a.length > 0 && a.every((name) => /Model$/.test(name));
}
