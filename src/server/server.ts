// An OpenAI-compatible HTTP server over one LLM, on node:http:
//   GET  /v1/models, /v1/models/{id}     the served model
//   POST /v1/chat/completions            chat, streamed (SSE) or not
//   POST /v1/completions                 text completion, streamed (SSE) or not
//   POST /v1/embeddings, /v1/rerank      embeddings and reranking (embeddings.ts)
//   POST /v1/responses                   OpenAI's Responses API, stateless (responses.ts)
//   GET  /health, /metrics               liveness, Prometheus metrics
// The engine's scheduler batches whatever runs at once; this layer admits at most maxConcurrency
// requests, queues maxQueue more (FIFO), answers 429 beyond that, and aborts the generation of a
// client that goes away (its KV cache slot is freed at the next step). Host, Origin and CORS rules
// (against DNS rebinding and foreign web pages) are in access.ts.
import { timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { LLM } from '../engine/llm.js';
import type { CompletionOutput, RequestMetrics } from '../engine/request.js';
import { AccessPolicy } from './access.js';
import { openResponsesStream, parseResponsesRequest, responseBody } from './responses.js';
import { Admission, QueueFullError } from './admission.js';
import {
  ApiError,
  badRequest,
  clientErrorResponse,
  internalError,
  methodNotAllowed,
  payloadTooLarge,
  queueFull,
  routeNotFound,
  unauthorized,
  unavailable,
  type ErrorBody,
} from './errors.js';
import {
  completionBody,
  SSE_DONE,
  sseData,
  StreamChunks,
  TokenText,
  unixSeconds,
  usage,
  type Usage,
} from './format.js';
import { Metrics } from './metrics.js';
import { isWebPath, WEB_HEADERS, webAsset, type WebConfig } from './web.js';
import { parseChatRequest, parseCompletionRequest, type GenerationRequest } from './protocol.js';
import { parsePoolingRequest, type PoolingRoute } from './embeddings.js';

export interface ServerOptions {
  /** The model id clients see (and must send as `model`, if they send one). */
  modelName: string;
  /** When set, /v1 routes need `Authorization: Bearer <apiKey>`. An empty key is an error. */
  apiKey?: string;
  /**
   * Browser origins (scheme://host[:port]) whose pages may call the server, '*' for any. Requests
   * without Origin, and same-host origins (http://localhost:PORT, http://127.0.0.1:PORT), are always
   * allowed; any other Origin gets 403. Default none.
   */
  allowedOrigins?: string[];
  /** Time to receive a request's headers before a 408 (Node's headersTimeout). Default 60 s. */
  headersTimeoutMs?: number;
  /**
   * Time to receive a whole request, body included, before a 408 (Node's requestTimeout; it ends
   * once the request is read, so it does not limit a long streamed answer). Default 300 s.
   */
  requestTimeoutMs?: number;
  /** Generation requests running at once; default the model's maxSequences (KV cache slots). */
  maxConcurrency?: number;
  /** Generation requests waiting beyond those; more get 429. Default 64. */
  maxQueue?: number;
  /** Largest accepted request body. Default 1 MiB. */
  maxBodyBytes?: number;
  /** One line per request: true/undefined → stderr, false → silent, or a function of the line. */
  log?: boolean | ((line: string) => void);
  /** Serve the chat page at / (src/web). Default true. */
  webui?: boolean;
}

export interface OpenAIServer {
  server: http.Server;
  metrics: Metrics;
  /** Start listening (default 127.0.0.1:8000); resolves with the bound address. */
  listen(port?: number, host?: string): Promise<AddressInfo>;
  /**
   * Stop accepting connections, refuse queued requests (503), give running ones `graceMs`
   * (default 0) to finish, then abort them and close every connection. The LLM stays open.
   */
  close(opts?: { graceMs?: number }): Promise<void>;
}

type Route = 'models' | 'model' | 'chat' | 'completions' | 'responses' | 'health' | 'metrics' | 'web' | PoolingRoute;

const ROUTES: Record<string, { route: Route; methods: string[] }> = {
  '/v1/models': { route: 'models', methods: ['GET'] },
  '/v1/chat/completions': { route: 'chat', methods: ['POST'] },
  '/v1/completions': { route: 'completions', methods: ['POST'] },
  '/v1/embeddings': { route: 'embeddings', methods: ['POST'] },
  '/v1/rerank': { route: 'rerank', methods: ['POST'] },
  '/rerank': { route: 'rerank', methods: ['POST'] },
  '/v1/score': { route: 'score', methods: ['POST'] },
  '/v1/responses': { route: 'responses', methods: ['POST'] },
  '/health': { route: 'health', methods: ['GET', 'HEAD'] },
  '/metrics': { route: 'metrics', methods: ['GET'] },
};

function matchRoute(path: string): { route: Route; methods: string[]; label: string } | null {
  const exact = ROUTES[path];
  if (exact) return { ...exact, label: path };
  if (isWebPath(path)) return { route: 'web', methods: ['GET', 'HEAD'], label: path };
  if (path.startsWith('/v1/models/') && path.length > '/v1/models/'.length)
    return { route: 'model', methods: ['GET'], label: '/v1/models/{id}' };
  return null;
}

/** State of one HTTP request. */
interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  method: string;
  path: string;
  label: string;
  start: number;
  /** Aborted when the client goes away or the server shuts down: stops generation. */
  abort: AbortController;
  clientGone: boolean;
  promptTokens?: number;
  completionTokens?: number;
  /** While the engine runs the request: a client that leaves is logged once it stops (with its tokens). */
  generating: boolean;
  logPending: boolean;
}

const SHUTDOWN = Symbol('shutdown');

export function createServer(llm: LLM, opts: ServerOptions): OpenAIServer {
  if (typeof opts.modelName !== 'string' || opts.modelName === '')
    throw new TypeError('createServer: modelName must be a non-empty string');
  if (
    opts.apiKey !== undefined &&
    (typeof opts.apiKey !== 'string' || opts.apiKey.trim() !== opts.apiKey || !opts.apiKey)
  )
    throw new TypeError(
      'createServer: apiKey must be a non-empty string without surrounding spaces (leave it out for no key)',
    );
  const access = new AccessPolicy(opts.allowedOrigins ?? []);
  const headersTimeout = timeoutOption(opts.headersTimeoutMs, 'headersTimeoutMs', 60_000);
  const requestTimeout = timeoutOption(opts.requestTimeoutMs, 'requestTimeoutMs', 300_000);
  if (headersTimeout > requestTimeout)
    throw new TypeError(
      `createServer: headersTimeoutMs (${headersTimeout}) must not exceed requestTimeoutMs (${requestTimeout})`,
    );
  const maxBodyBytes = opts.maxBodyBytes ?? 1 << 20;
  const admission = new Admission(opts.maxConcurrency ?? llm.model.kvCache.maxSequences, opts.maxQueue ?? 64);
  const metrics = new Metrics({
    engine: () => llm.state,
    server: () => ({ running: admission.running, queued: admission.queued }),
  });
  const tokenText = new TokenText(llm.tokenizer);
  const created = unixSeconds();
  const writeLog =
    opts.log === false
      ? null
      : typeof opts.log === 'function'
        ? opts.log
        : (line: string) => process.stderr.write(line + '\n');
  const apiKey = opts.apiKey ? Buffer.from(opts.apiKey) : null;
  const contexts = new Set<Ctx>();
  let closing: Promise<void> | null = null;

  // Idle keep-alive connections are kept longer than clients keep theirs (Node's own 5 s races a
  // client reusing a connection just as the server closes it), so clients close first.
  // headersTimeout/requestTimeout bound slow clients (slowloris); both stop counting once the request
  // is read, so a long answer is not cut. Node checks them every connectionsCheckingInterval (30 s by
  // default: a quarter of the headers timeout here, so a 408 comes close to on time).
  const serverOptions: http.ServerOptions = {
    noDelay: true,
    keepAliveTimeout: 65_000,
    headersTimeout,
    requestTimeout,
    connectionsCheckingInterval: Math.max(50, Math.min(5000, Math.floor(headersTimeout / 4))),
  };
  const server = http.createServer(serverOptions, (req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q >= 0 ? url.slice(0, q) : url;
    const match = matchRoute(path);
    const ctx: Ctx = {
      req,
      res,
      method: req.method ?? 'GET',
      path,
      label: match?.label ?? 'other',
      start: performance.now(),
      abort: new AbortController(),
      clientGone: false,
      generating: false,
      logPending: false,
    };
    contexts.add(ctx);
    res.on('error', () => {}); // a write racing a disconnect must not crash the process
    res.on('close', () => {
      contexts.delete(ctx);
      if (!res.writableFinished) {
        ctx.clientGone = true;
        ctx.abort.abort(new Error('client disconnected'));
      }
      if (ctx.generating) ctx.logPending = true;
      else finishLog(ctx);
    });
    handle(ctx, match).catch((e) => fail(ctx, e));
  });
  // A connection Node's parser gave up on (malformed, headers too large, too slow): answer in
  // OpenAI JSON, unless a response is already under way on it (writing then would corrupt it).
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const inFlight = (socket as Duplex & { _httpMessage?: http.ServerResponse })._httpMessage;
    if (!socket.writable || err.code === 'ECONNRESET' || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    socket.end(clientErrorResponse(err));
    // end() lets the client read the answer and close; one that never does is dropped later.
    setTimeout(() => socket.destroy(), 5000).unref();
  });

  function finishLog(ctx: Ctx): void {
    const status = ctx.clientGone ? 499 : ctx.res.statusCode;
    metrics.countRequest(ctx.label, status);
    if (!writeLog) return;
    const secs = ((performance.now() - ctx.start) / 1000).toFixed(3);
    const tokens =
      ctx.promptTokens !== undefined
        ? ` prompt_tokens=${ctx.promptTokens} completion_tokens=${ctx.completionTokens ?? 0}`
        : '';
    writeLog(`${new Date().toISOString()} ${ctx.method} ${ctx.path} ${status}${tokens} ${secs}s`);
  }

  function sendJson(
    res: http.ServerResponse,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ): void {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
  }

  /** Any error → an OpenAI error response (or, mid-stream, an error event and the end). */
  function fail(ctx: Ctx, e: unknown): void {
    if (ctx.clientGone || ctx.res.destroyed) return;
    const err = e instanceof ApiError ? e : internalError(`Internal error: ${(e as Error)?.message ?? String(e)}`);
    if (!(e instanceof ApiError) && writeLog)
      writeLog(`error in ${ctx.method} ${ctx.path}: ${(e as Error)?.stack ?? String(e)}`);
    if (ctx.res.headersSent) {
      if (!ctx.res.writableEnded) {
        ctx.res.write(sseData(err.toBody()) + SSE_DONE);
        ctx.res.end();
      }
      return;
    }
    const headers = { ...err.headers };
    // A body we did not read (too large, or refused before reading): do not keep the connection.
    if (!ctx.req.complete) headers.Connection = 'close';
    sendJson(ctx.res, err.status, err.toBody() satisfies ErrorBody, headers);
  }

  function checkAuth(req: http.IncomingMessage): void {
    if (!apiKey) return;
    const h = req.headers.authorization ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(h.trim());
    const given = Buffer.from(m ? m[1].trim() : '');
    if (given.length !== apiKey.length || !timingSafeEqual(given, apiKey)) throw unauthorized();
  }

  function readBody(req: http.IncomingMessage): Promise<Buffer> {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > maxBodyBytes) return Promise.reject(payloadTooLarge(maxBodyBytes));
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const cleanup = () => {
        req.off('data', onData);
        req.off('end', onEnd);
        req.off('error', onError);
      };
      const onData = (c: Buffer) => {
        size += c.length;
        if (size > maxBodyBytes) {
          cleanup();
          req.pause(); // stop reading; the connection closes after the 413
          reject(payloadTooLarge(maxBodyBytes));
          return;
        }
        chunks.push(c);
      };
      const onEnd = () => {
        cleanup();
        resolve(Buffer.concat(chunks));
      };
      const onError = (e: Error) => {
        cleanup();
        reject(e);
      };
      req.on('data', onData);
      req.on('end', onEnd);
      req.on('error', onError);
    });
  }

  async function readJsonObject(req: http.IncomingMessage): Promise<Record<string, unknown>> {
    const raw = await readBody(req);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (e) {
      throw badRequest(`The request body is not valid JSON: ${(e as Error).message}`, null, 'invalid_json');
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body))
      throw badRequest('The request body must be a JSON object.', null, 'invalid_json');
    return body as Record<string, unknown>;
  }

  const modelCard = () => ({
    id: opts.modelName,
    object: 'model',
    created,
    owned_by: 'qwen-ts',
    root: opts.modelName,
    parent: null,
    max_model_len: llm.model.kvCache.contextLength,
  });

  async function handle(ctx: Ctx, match: ReturnType<typeof matchRoute>): Promise<void> {
    const bound = server.address();
    access.check(ctx.req, ctx.res, typeof bound === 'object' ? bound : null, match?.methods ?? null);
    if (!match) throw routeNotFound(ctx.path);
    if (ctx.method === 'OPTIONS') {
      ctx.res.writeHead(204, { Allow: [...match.methods, 'OPTIONS'].join(', ') }).end();
      return;
    }
    if (!match.methods.includes(ctx.method)) throw methodNotAllowed(ctx.method, ctx.path, match.methods);
    if (closing) throw unavailable();
    if (ctx.path.startsWith('/v1/')) checkAuth(ctx.req);
    switch (match.route) {
      case 'health':
        ctx.res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
        return;
      case 'metrics':
        ctx.res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' }).end(metrics.render());
        return;
      case 'models':
        sendJson(ctx.res, 200, { object: 'list', data: [modelCard()] });
        return;
      case 'model': {
        let id: string;
        try {
          id = decodeURIComponent(ctx.path.slice('/v1/models/'.length));
        } catch {
          throw new ApiError(
            400,
            'The model id in the path is not valid percent-encoded UTF-8.',
            'invalid_request_error',
            'model',
          );
        }
        if (id !== opts.modelName)
          throw new ApiError(404, `The model \`${id}\` does not exist.`, 'not_found_error', 'model', 'model_not_found');
        sendJson(ctx.res, 200, modelCard());
        return;
      }
      case 'chat':
      case 'completions':
      case 'responses':
        return generate(ctx, match.route);
      case 'web':
        return sendWeb(ctx);
      case 'embeddings':
      case 'rerank':
      case 'score':
        return pooling(ctx, match.route);
    }
  }

  /** /v1/embeddings, /v1/rerank, /v1/score: checked, then run under admission like a generation. */
  async function pooling(ctx: Ctx, route: PoolingRoute): Promise<void> {
    const run = parsePoolingRequest(llm, opts.modelName, route, await readJsonObject(ctx.req));
    let release: () => void;
    try {
      release = await admission.acquire(ctx.abort.signal);
    } catch (e) {
      if (e instanceof QueueFullError) throw queueFull(admission.maxQueue);
      if (e instanceof ApiError) throw e;
      if (ctx.abort.signal.reason === SHUTDOWN) throw unavailable();
      return;
    }
    try {
      const result = await run(ctx.abort.signal);
      ctx.promptTokens = result.promptTokens;
      sendJson(ctx.res, 200, result.body);
    } catch (e) {
      if (ctx.abort.signal.aborted) {
        if (ctx.abort.signal.reason === SHUTDOWN)
          throw unavailable('The server shut down before the request finished.');
        return; // the client is gone
      }
      throw e;
    } finally {
      release();
    }
  }

  function sendWeb(ctx: Ctx): void {
    if (opts.webui === false) throw routeNotFound(ctx.path);
    if (ctx.path === '/web/config.json') {
      const gen = llm.model.generationConfig;
      const config: WebConfig = {
        model: opts.modelName,
        chatTemplate: llm.tokenizer.chatTemplate !== null,
        contextLength: llm.model.kvCache.contextLength,
        auth: apiKey !== null,
        defaults: { temperature: gen.temperature, topP: gen.topP },
      };
      ctx.res.writeHead(200, { 'Content-Type': 'application/json', ...WEB_HEADERS }).end(JSON.stringify(config));
      return;
    }
    const asset = webAsset(ctx.path)!;
    ctx.res.writeHead(200, { 'Content-Type': asset.contentType, ...WEB_HEADERS });
    ctx.res.end(ctx.method === 'HEAD' ? undefined : asset.body);
  }

  async function generate(ctx: Ctx, route: 'chat' | 'completions' | 'responses'): Promise<void> {
    const body = await readJsonObject(ctx.req);
    if (llm.task.task === 'embed')
      throw badRequest(
        `The model \`${opts.modelName}\` embeds (${llm.task.reason}): it cannot generate text; use /v1/embeddings.`,
        'model',
        'wrong_model_task',
      );
    const request =
      route === 'chat'
        ? await parseChatRequest(llm, opts.modelName, body)
        : route === 'responses'
          ? await parseResponsesRequest(llm, opts.modelName, body)
          : await parseCompletionRequest(llm, opts.modelName, body);
    ctx.promptTokens = request.prompts.reduce((s, p) => s + p.ids.length, 0);
    let release: () => void;
    try {
      release = await admission.acquire(ctx.abort.signal);
    } catch (e) {
      if (e instanceof QueueFullError) throw queueFull(admission.maxQueue);
      if (e instanceof ApiError) throw e;
      if (ctx.abort.signal.reason === SHUTDOWN) throw unavailable();
      return; // the client left while queued
    }
    const admitted = performance.now();
    ctx.generating = true;
    try {
      await run(ctx, request, admitted);
    } finally {
      release();
      ctx.generating = false;
      if (ctx.logPending) finishLog(ctx);
    }
  }

  interface SeqResult {
    output?: CompletionOutput;
    metrics?: RequestMetrics;
    error?: unknown;
  }

  /** Run every sequence of the request; the first failure aborts the others. */
  async function run(ctx: Ctx, request: GenerationRequest, admitted: number): Promise<void> {
    const gen = new AbortController();
    const onAbort = () => gen.abort();
    ctx.abort.signal.addEventListener('abort', onAbort, { once: true });
    const stream = !request.stream
      ? null
      : request.responses
        ? openResponsesStream(ctx.res, request.responses)
        : openStream(ctx, request);
    let results: SeqResult[];
    try {
      results = await Promise.all(
        request.sequences.map((s) =>
          llm
            .submit(request.prompts[s.prompt].ids, s.params, {
              signal: gen.signal,
              index: s.index,
              onDelta: stream ? (d) => stream.delta(s.index, d) : undefined,
            })
            .then(
              (r): SeqResult => {
                stream?.finish(r.output);
                return r;
              },
              (error): SeqResult => {
                gen.abort();
                return { error };
              },
            ),
        ),
      );
    } finally {
      ctx.abort.signal.removeEventListener('abort', onAbort);
    }
    const done = results.filter((r) => r.output);
    ctx.completionTokens = done.reduce((s, r) => s + r.output!.tokenIds.length, 0);
    const m = done.map((r) => r.metrics!);
    const waited = (admitted - ctx.start) / 1000;
    metrics.observeGeneration({
      promptTokens: ctx.promptTokens ?? 0,
      completionTokens: ctx.completionTokens,
      ttft: m.length ? waited + Math.min(...m.map((x) => x.timeToFirstToken)) : undefined,
      queue: m.length ? waited + Math.min(...m.map((x) => x.queueSeconds)) : undefined,
      e2e: (performance.now() - ctx.start) / 1000,
      decodeTokensPerSec: m.length ? m.reduce((s, x) => s + x.decodeTokensPerSec, 0) / m.length : undefined,
    });

    const failed = results.find((r) => r.error !== undefined);
    if (failed) throw internalError(`Generation failed: ${(failed.error as Error)?.message ?? String(failed.error)}`);
    if (ctx.abort.signal.aborted) {
      if (ctx.abort.signal.reason === SHUTDOWN)
        throw unavailable('The server shut down before the generation finished.');
      return; // the client is gone
    }
    const outputs = results.map((r) => r.output!).sort((a, b) => a.index - b.index);
    // Cached prompt tokens: those of each prompt's first sequence (the n copies share one prompt).
    const cached = results
      .filter((r, i) => r.metrics && request.sequences[i].index % request.n === 0)
      .reduce((sum, r) => sum + r.metrics!.cachedTokens, 0);
    const u = usage(ctx.promptTokens ?? 0, ctx.completionTokens, cached);
    if (stream) stream.end(u);
    else if (request.responses) sendJson(ctx.res, 200, responseBody(request.responses, outputs[0], u));
    else sendJson(ctx.res, 200, completionBody(request, opts.modelName, outputs, tokenText, u));
  }

  /** Server-Sent Events for one request: chunks written (and flushed) as they come. */
  function openStream(ctx: Ctx, request: GenerationRequest) {
    const { res } = ctx;
    const chunks = new StreamChunks(request, opts.modelName, tokenText);
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.flushHeaders();
    const send = (list: unknown[]) => {
      for (const obj of list) if (!res.writableEnded && !res.destroyed) res.write(sseData(obj));
    };
    send(chunks.opening());
    return {
      delta: (index: number, text: string) => send(chunks.delta(index, text)),
      finish: (o: CompletionOutput) => send(chunks.finish(o)),
      end(u: Usage) {
        send(chunks.closing(u));
        if (!res.writableEnded && !res.destroyed) res.end(SSE_DONE);
      },
    };
  }

  async function waitIdle(ms: number): Promise<boolean> {
    const until = performance.now() + ms;
    while (contexts.size > 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 10));
    return contexts.size === 0;
  }

  return {
    server,
    metrics,
    listen(port = 8000, host = '127.0.0.1') {
      return new Promise((resolve, reject) => {
        const onError = (e: Error) => reject(e);
        server.once('error', onError);
        server.listen(port, host, () => {
          server.off('error', onError);
          resolve(server.address() as AddressInfo);
        });
      });
    },
    close({ graceMs = 0 } = {}) {
      if (closing) return closing;
      closing = (async () => {
        const closed = new Promise<void>((r) => server.close(() => r()));
        admission.rejectWaiting(unavailable());
        server.closeIdleConnections();
        if (!(await waitIdle(graceMs))) {
          for (const ctx of contexts) ctx.abort.abort(SHUTDOWN);
          await waitIdle(2000);
        }
        server.closeAllConnections();
        await closed;
      })();
      return closing;
    },
  };
}

function timeoutOption(value: number | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1)
    throw new TypeError(`createServer: ${name} must be a positive integer of milliseconds, got ${value}`);
  return value;
}
