// qwen-ts serve: the OpenAI-compatible server from the command line.
//   qwen-ts serve [--model DIR] [--host 127.0.0.1] [--port 8000] [--threads N] [--weights bf16|f32|q8_0|q4_0]
//                 [--max-concurrency N] [--max-queue N] [--api-key KEY] [--served-model-name NAME]
//                 [--context-length N] [--max-sequences N] [--quiet]
// Without --model it serves a synthetic Qwen2.5-0.5B (random weights), made once in .cache/models/.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { LLM } from '../engine/llm.js';
import { WEIGHT_FORMATS, type LoadOptions } from '../model/load.js';
import { writeSyntheticModel } from '../model/synthetic.js';
import type { WeightFormat } from '../tensor/matrix.js';
import { createServer } from './server.js';

export const SERVE_USAGE = `usage: qwen-ts serve [--model DIR] [--host 127.0.0.1] [--port 8000] [--threads N]
                     [--weights ${WEIGHT_FORMATS.join('|')}] [--max-concurrency N] [--max-queue N]
                     [--api-key KEY] [--served-model-name NAME] [--context-length N]
                     [--max-sequences N] [--quiet]

An OpenAI-compatible server: GET /v1/models, POST /v1/chat/completions, POST /v1/completions,
GET /health, GET /metrics. Without --model, a synthetic Qwen2.5-0.5B (random weights) is made
once in .cache/models/ and served. The API key may also come from QWEN_TS_API_KEY.`;

/** The synthetic model served without --model (the same one the seed example makes). */
export function syntheticModelDir(): string {
  const dir = path.resolve('.cache/models/qwen2.5-0.5b-seed0');
  if (!fs.existsSync(path.join(dir, 'model.safetensors'))) {
    console.error(`making a synthetic Qwen2.5-0.5B (random weights) in ${dir} ...`);
    writeSyntheticModel(dir, { preset: 'qwen2.5-0.5b', seed: 0 });
  }
  return dir;
}

class UsageError extends Error {}

function intOption(name: string, v: string | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got "${v}"`);
  return n;
}

/**
 * Parse the arguments, load the model, serve until SIGINT/SIGTERM, then close gracefully.
 * Resolves once the server has shut down (bad arguments: prints usage, sets exitCode 2).
 */
export async function runServe(argv: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      allowPositionals: false,
      options: {
        model: { type: 'string' },
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'string', default: '8000' },
        threads: { type: 'string' },
        weights: { type: 'string' },
        'max-concurrency': { type: 'string' },
        'max-queue': { type: 'string' },
        'api-key': { type: 'string' },
        'served-model-name': { type: 'string' },
        'context-length': { type: 'string' },
        'max-sequences': { type: 'string' },
        quiet: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    console.error(`qwen-ts serve: ${(e as Error).message}\n${SERVE_USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (values.help) {
    console.log(SERVE_USAGE);
    return;
  }

  let port: number, load: LoadOptions, maxConcurrency: number | undefined, maxQueue: number | undefined;
  try {
    port = intOption('port', values.port, 0, 65535)!;
    if (values.weights !== undefined && !WEIGHT_FORMATS.includes(values.weights as WeightFormat)) {
      throw new UsageError(`--weights must be one of ${WEIGHT_FORMATS.join(', ')}, got "${values.weights}"`);
    }
    load = {
      threads: intOption('threads', values.threads, 1, 64),
      weights: values.weights as WeightFormat | undefined,
      contextLength: intOption('context-length', values['context-length'], 1),
      maxSequences: intOption('max-sequences', values['max-sequences'], 1, 4096),
    };
    maxConcurrency = intOption('max-concurrency', values['max-concurrency'], 1);
    maxQueue = intOption('max-queue', values['max-queue'], 0);
    if (values.model !== undefined && !fs.existsSync(values.model)) throw new UsageError(`--model ${values.model} does not exist`);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`qwen-ts serve: ${e.message}\n${SERVE_USAGE}`);
    process.exitCode = 2;
    return;
  }

  const modelDir = values.model ?? syntheticModelDir();
  const modelName = values['served-model-name'] ?? path.basename(path.resolve(modelDir));
  const t0 = performance.now();
  const llm = await LLM.load(modelDir, Object.fromEntries(Object.entries(load).filter(([, v]) => v !== undefined)) as LoadOptions);
  const cache = llm.model.kvCache;
  console.error(
    `loaded ${modelDir} in ${((performance.now() - t0) / 1000).toFixed(1)} s: context ${cache.contextLength} tokens, ` +
      `${cache.maxSequences} sequences, KV cache ${cache.capacityTokens} tokens`,
  );
  const app = createServer(llm, {
    modelName,
    apiKey: values['api-key'] ?? (process.env.QWEN_TS_API_KEY || undefined),
    maxConcurrency,
    maxQueue,
    log: !values.quiet,
  });
  let address;
  try {
    address = await app.listen(port, values.host);
  } catch (e) {
    console.error(`qwen-ts serve: cannot listen on ${values.host}:${port}: ${(e as Error).message}`);
    await llm.close();
    process.exitCode = 1;
    return;
  }
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  console.log(`listening on http://${host}:${address.port}`);
  console.error(`serving model "${modelName}"${values['api-key'] || process.env.QWEN_TS_API_KEY ? ' (API key required)' : ''}; Ctrl-C to stop`);

  await new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        console.error(`${sig} again: exiting now`);
        process.exit(130);
      }
      stopping = true;
      console.error(`${sig}: shutting down (finishing running requests for up to 10 s; send it again to exit at once)`);
      void app
        .close({ graceMs: 10_000 })
        .then(() => llm.close())
        .catch((e) => console.error(`qwen-ts serve: error while closing: ${(e as Error).message}`))
        .finally(() => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          resolve();
        });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
