// qwen-ts serve: the OpenAI-compatible server from the command line. The model flags (--model,
// --preset, --threads, --weights, --context-length) are the ones `generate` and `chat` take.
import * as net from 'node:net';
import * as path from 'node:path';
import { CliError, HELP_OPTION, MODEL_HELP, MODEL_OPTIONS, modelArgsFrom, parseCommandArgs } from './args.js';
import { loadLLM, note, resolveModelSource } from './common.js';
import { isLoopbackAddress, parseAllowedOrigins } from '../server/access.js';
import { createDemoServer } from '../server/demo.js';
import { createServer } from '../server/server.js';

export const SERVE_HELP = `Usage: qwen-ts serve [options]

An OpenAI-compatible HTTP server: GET /v1/models, POST /v1/chat/completions, POST /v1/completions,
POST /v1/responses (streamed with "stream": true), GET /health, GET /metrics (Prometheus), and a
chat page at /.

Server:
      --host HOST            address to bind (default 127.0.0.1)
      --port N               port (default 8000; 0 picks a free one)
      --served-model-name NAME
                             the model id clients send as "model" (default: the hub or Ollama name
                             given to --model, else the model folder's name, e.g.
                             Qwen2.5-0.5B-Instruct for --model ./Qwen2.5-0.5B-Instruct)
      --api-key KEY          require "Authorization: Bearer KEY" on /v1 (or set QWEN_TS_API_KEY)
      --allowed-origins LIST comma list of browser origins whose pages may call the server, e.g.
                             http://localhost:3000,https://app.example; '*' for any. Default: only
                             this server's own origin (http://localhost:PORT, http://127.0.0.1:PORT).
                             Requests without an Origin header (curl, SDKs) are not affected.
      --max-concurrency N    requests generating at once (default: --max-sequences)
      --max-queue N          requests waiting beyond those before 429 (default 64)
      --max-sequences N      KV cache slots: sequences decoded together (default 8)
      --quiet                no per-request log lines on stderr
      --no-webui             do not serve the chat page at /
      --demo                 serve instead a page that runs the bundled stories260K in the browser
                             tab itself (qwen-ts/browser), with the COOP/COEP headers that let it
                             use a pool of Web Workers; no model is loaded here. With --model (a
                             folder or a .gguf file) the page runs that one; /?model=URL any other
${MODEL_HELP}
  -h, --help                 this help
`;

const SERVE_OPTIONS = {
  ...MODEL_OPTIONS,
  host: { type: 'string' },
  port: { type: 'string' },
  'served-model-name': { type: 'string' },
  'api-key': { type: 'string' },
  'allowed-origins': { type: 'string' },
  'max-concurrency': { type: 'string' },
  'max-queue': { type: 'string' },
  'max-sequences': { type: 'string' },
  quiet: { type: 'boolean' },
  'no-webui': { type: 'boolean' },
  demo: { type: 'boolean' },
  ...HELP_OPTION,
} as const;

function intFlag(values: Record<string, unknown>, flag: string, min: number, max: number): number | undefined {
  const v = values[flag];
  if (typeof v !== 'string') return undefined;
  const n = /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new CliError(`--${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`, 2);
  return n;
}

/** --api-key, else $QWEN_TS_API_KEY; an empty one (a forgotten variable) is an error, not "no key". */
function apiKeyFrom(flag: unknown, env: string | undefined): string | undefined {
  const [key, name] = typeof flag === 'string' ? [flag, '--api-key'] : [env, 'QWEN_TS_API_KEY'];
  if (key === undefined) return undefined;
  if (key.trim() === '')
    throw new CliError(`${name} is empty: give a key, or leave ${name} out to serve without one`, 2);
  if (key.trim() !== key) throw new CliError(`${name} must not begin or end with spaces`, 2);
  return key;
}

function allowedOriginsFrom(flag: unknown): string[] | undefined {
  if (typeof flag !== 'string') return undefined;
  const list = flag.split(',').map((o) => o.trim());
  if (list.some((o) => o === ''))
    throw new CliError(
      `--allowed-origins must be a comma list of origins such as http://localhost:3000, or '*', got ${JSON.stringify(flag)}`,
      2,
    );
  try {
    return parseAllowedOrigins(list, '--allowed-origins');
  } catch (e) {
    throw new CliError((e as Error).message, 2);
  }
}

function listenError(host: string, port: number, e: unknown): CliError {
  const code = (e as NodeJS.ErrnoException).code;
  const hint =
    code === 'EADDRINUSE'
      ? `: port ${port} is in use; give another --port (or --port 0 for a free one)`
      : code === 'EACCES'
        ? `: not allowed (ports below 1024 need privileges); give --port 1024 or above`
        : code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND'
          ? `: ${host} is not an address of this machine; give --host 127.0.0.1, or 0.0.0.0 for every interface`
          : `: ${(e as Error).message}`;
  return new CliError(`cannot listen on ${host}:${port}${hint}`, 2);
}

/** Listen on host:port and close at once: a taken port is an error before the model loads. */
function checkPort(host: string, port: number): Promise<void> {
  if (port === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', (e) => reject(listenError(host, port, e)));
    probe.listen({ port, host, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/**
 * Parse the arguments, load the model, serve until SIGINT/SIGTERM, then close gracefully
 * (running requests get up to 10 s; a second signal exits at once). Resolves with the exit code
 * once the server has shut down; bad flags throw CliError (exit code 2).
 */
export async function runServe(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, SERVE_OPTIONS, SERVE_HELP, false);
  if (values.help) {
    process.stdout.write(SERVE_HELP);
    return 0;
  }
  const port = intFlag(values, 'port', 0, 65535) ?? 8000;
  const host = typeof values.host === 'string' ? values.host : '127.0.0.1';
  if (values.demo === true) {
    // Only the flags that mean something to a static file server: nothing is silently ignored.
    const demoFlags = new Set(['demo', 'host', 'port', 'model', 'revision', 'help']);
    const other = Object.keys(values).find((k) => !demoFlags.has(k));
    if (other !== undefined)
      throw new CliError(
        `--${other} does not apply to --demo (the model runs in the browser tab; set it in the page's code)`,
      );
    const model = typeof values.model === 'string' ? (await resolveModelSource(modelArgsFrom(values))).dir : undefined;
    return serveDemo(host, port, model);
  }
  const maxConcurrency = intFlag(values, 'max-concurrency', 1, 1 << 20);
  const maxQueue = intFlag(values, 'max-queue', 0, 1 << 20);
  const modelArgs = modelArgsFrom(values);
  modelArgs.load.maxSequences = intFlag(values, 'max-sequences', 1, 4096) ?? 8;
  const servedName = typeof values['served-model-name'] === 'string' ? values['served-model-name'] : undefined;
  if (servedName === '') throw new CliError('--served-model-name cannot be empty');
  const apiKey = apiKeyFrom(values['api-key'], process.env.QWEN_TS_API_KEY);
  const allowedOrigins = allowedOriginsFrom(values['allowed-origins']);

  await checkPort(host, port); // before a load that can take a minute
  // --model (a folder, or a hub / Ollama name: the id clients see, as in vLLM), or the cached synthetic model
  const source = await resolveModelSource(modelArgs);
  const modelDir = source.dir;
  const llm = await loadLLM({ ...modelArgs, model: modelDir, revision: undefined, preset: undefined });
  const modelName = servedName ?? (source.name || path.basename(modelDir));
  const cache = llm.model.kvCache;
  note(
    `context ${cache.contextLength} tokens, ${cache.maxSequences} sequences at once, KV cache for ${cache.capacityTokens} tokens`,
  );
  const app = createServer(llm, {
    modelName,
    apiKey,
    allowedOrigins,
    maxConcurrency,
    maxQueue,
    log: values.quiet !== true,
    webui: values['no-webui'] !== true,
  });
  let address;
  try {
    address = await app.listen(port, host);
  } catch (e) {
    await llm.close();
    throw listenError(host, port, e);
  }
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  process.stdout.write(`listening on http://${shown}:${address.port}\n`);
  note(`serving "${modelName}"${apiKey ? ' (API key required)' : ''}; Ctrl-C to stop`);
  if (values['no-webui'] !== true) note(`chat page: http://${shown}:${address.port}/`);
  if (!isLoopbackAddress(address.address))
    note(
      `${host} is not a loopback address: any Host name is served (no DNS-rebinding check)${apiKey ? '' : '; consider --api-key'}`,
    );

  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        note(`${sig} again: exiting now`);
        process.exit(130);
      }
      stopping = true;
      note(`${sig}: shutting down (running requests get up to 10 s; send it again to exit at once)`);
      let code = 0;
      app
        .close({ graceMs: 10_000 })
        .then(() => llm.close())
        .catch((e: Error) => {
          note(`error while closing: ${e.message}`);
          code = 1;
        })
        .finally(() => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          resolve(code);
        });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

/** `--demo`: the in-tab engine's demo page, static files only, until SIGINT/SIGTERM. */
async function serveDemo(host: string, port: number, model?: string): Promise<number> {
  const server = createDemoServer({ model });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(listenError(host, port, e)));
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as net.AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  process.stdout.write(`listening on http://${shown}:${address.port}\n`);
  const what = model === undefined ? 'stories260K' : path.basename(model);
  note(`demo page (${what} runs in the browser tab, cross-origin isolated): http://${shown}:${address.port}/`);
  return new Promise<number>((resolve) => {
    const onSignal = () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      server.close(() => resolve(0));
      server.closeAllConnections();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
