// qwen-ts convert DIR --out FILE.gguf --type TYPE: a Hugging Face model folder to a GGUF file.
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { CONVERT_TYPES, convertToGguf } from '../model/gguf/convert.js';
import { ggmlTypeName } from '../model/gguf/file.js';
import { CliError } from './args.js';

export const CONVERT_HELP = `usage: qwen-ts convert DIR --out FILE.gguf [--type TYPE]

Write a Hugging Face model folder (config.json, *.safetensors, tokenizer.json) as a GGUF file that
llama.cpp, Ollama, LM Studio and qwen-ts load: what convert_hf_to_gguf.py + llama-quantize do,
without Python.

Options:
  -o, --out FILE     the .gguf file to write
      --type TYPE    ${CONVERT_TYPES.join(', ')} (default f16); the quantized types use
                     llama-quantize's per-tensor mix (e.g. q4_k_m: Q6_K output and some attn_v /
                     ffn_down, 32-block fallbacks where a row is not a multiple of 256)
  -h, --help         this help
`;

export function runConvert(argv: string[]): number {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { out: { type: 'string', short: 'o' }, type: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (e) {
    throw new CliError((e as Error).message, 2, CONVERT_HELP);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(CONVERT_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new CliError('convert: give one model folder', 2, CONVERT_HELP);
  const dir = positionals[0];
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new CliError(`convert: ${dir} is not a folder`, 2);
  if (!values.out) throw new CliError('convert: --out FILE.gguf is required', 2, CONVERT_HELP);
  const type = values.type ?? 'f16';
  if (!CONVERT_TYPES.includes(type))
    throw new CliError(`convert: --type must be one of ${CONVERT_TYPES.join(', ')}, got ${JSON.stringify(type)}`, 2);
  const t0 = performance.now();
  const tty = process.stderr.isTTY;
  const types = convertToGguf(dir, values.out, {
    type,
    onProgress: (done, total) => {
      if (tty) process.stderr.write(`\rconverting: ${done}/${total} tensors`);
    },
  });
  if (tty) process.stderr.write('\r\x1b[K');
  const counts = new Map<string, number>();
  for (const t of types.values()) counts.set(ggmlTypeName(t), (counts.get(ggmlTypeName(t)) ?? 0) + 1);
  const mix = [...counts].map(([name, n]) => `${n} ${name}`).join(', ');
  const mb = (fs.statSync(values.out).size / 2 ** 20).toFixed(1);
  process.stderr.write(
    `qwen-ts: wrote ${values.out} (${mb} MB; tensors: ${mix}) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
  );
  return 0;
}
