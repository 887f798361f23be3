// Local-server hardening on the tiny synthetic model: the Host check against DNS rebinding, the
// Origin check and CORS headers, preflights, empty API keys, explicit timeouts, and Node's parser
// errors answered as OpenAI JSON (checked over raw sockets, since fetch cannot send a bad request).
import * as http from 'node:http';
import * as net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { normalizeOrigin, parseAllowedOrigins } from '../src/server/access.js';
import { runServe } from '../src/cli/serve.js';
import { createServer, type OpenAIServer, type ServerOptions } from '../src/server/server.js';
import { makeTempModel, removeDir } from './helpers/models.js';

const MODEL = 'tiny-test';
let dir: string;
let llm: LLM;
const apps: OpenAIServer[] = [];

async function start(opts: Partial<ServerOptions> = {}, host = '127.0.0.1'): Promise<number> {
  const app = createServer(llm, { modelName: MODEL, log: false, ...opts });
  apps.push(app);
  return (await app.listen(0, host)).port;
}

beforeAll(async () => {
  dir = makeTempModel({ preset: 'tiny', seed: 0 });
  llm = await LLM.load(dir, { threads: 1, contextLength: 256 });
});
afterAll(async () => {
  for (const a of apps) await a.close();
  await llm?.close();
  removeDir(dir);
});

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request through node:http, which (unlike fetch) may set any Host and Origin. */
function request(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
      );
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Writes `data` on a fresh connection and returns everything the server sends until it closes. */
function rawExchange(port: number, data: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
    socket.write(data);
  });
}

function parseRaw(raw: string): { statusLine: string; headers: string[]; body: unknown } {
  const at = raw.indexOf('\r\n\r\n');
  const [statusLine, ...headers] = raw.slice(0, at).split('\r\n');
  return { statusLine, headers, body: JSON.parse(raw.slice(at + 4)) };
}

const chatBody = JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });

const error = (message: string, type: string, code: string) => ({ error: { message, type, param: null, code } });

describe('Host check (DNS rebinding)', () => {
  let port: number;
  beforeAll(async () => {
    port = await start();
  });

  it('403 with an OpenAI error for a Host that is not the loopback address', async () => {
    for (const [method, path, body] of [
      ['GET', '/health', undefined],
      ['GET', '/v1/models', undefined],
      ['POST', '/v1/chat/completions', chatBody],
      ['GET', '/no/such/route', undefined],
    ] as const) {
      const r = await request(port, method, path, { Host: `evil.example:${port}` }, body);
      expect(r.status).toBe(403);
      expect(r.headers['content-type']).toBe('application/json');
      expect(JSON.parse(r.body)).toEqual(
        error(
          `Host "evil.example:${port}" is not allowed: this server listens on a loopback address and answers only ` +
            `Host localhost:${port}, 127.0.0.1:${port}, [::1]:${port} (a guard against DNS rebinding). Reach it by one of those names.`,
          'request_forbidden',
          'host_not_allowed',
        ),
      );
    }
  });

  it('the right names with the wrong port, or without the port, are refused too', async () => {
    for (const host of ['127.0.0.1:1', 'localhost', `localhost.evil.example:${port}`, `127.0.0.1.nip.io:${port}`])
      expect((await request(port, 'GET', '/health', { Host: host })).status).toBe(403);
  });

  it('localhost, 127.0.0.1 and [::1] with the port are served (any case)', async () => {
    for (const host of [`localhost:${port}`, `LocalHost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`]) {
      const r = await request(port, 'GET', '/health', { Host: host });
      expect([host, r.status, r.body]).toEqual([host, 200, 'ok\n']);
    }
  });

  it('bound to 0.0.0.0, any Host is served (clients use names the server cannot know), as Ollama does', async () => {
    const open = await start({}, '0.0.0.0');
    const r = await request(open, 'GET', '/v1/models', { Host: `my-box.lan:${open}` });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).data[0].id).toBe(MODEL);
    // The Origin rule still holds there.
    const o = await request(open, 'GET', '/v1/models', { Host: `my-box.lan:${open}`, Origin: 'http://my-box.lan:1' });
    expect(o.status).toBe(403);
  });
});

describe('Origin check and CORS', () => {
  let port: number;
  beforeAll(async () => {
    port = await start({ apiKey: 'sk-test' });
  });

  it('403 for a browser Origin that is not allowed, before any work (no generation, no auth check)', async () => {
    const before = llm.load;
    const r = await request(
      port,
      'POST',
      '/v1/chat/completions',
      { Origin: 'http://evil.example', 'Content-Type': 'text/plain', Authorization: 'Bearer sk-test' },
      chatBody,
    );
    expect(r.status).toBe(403);
    expect(r.headers['access-control-allow-origin']).toBeUndefined();
    expect(r.headers.connection).toBe('close'); // the body was never read
    expect(JSON.parse(r.body)).toEqual(
      error(
        'Origin "http://evil.example" is not allowed: browser pages from other origins may call this server only ' +
          'when it is started with --allowed-origins http://evil.example (library: the allowedOrigins option).',
        'request_forbidden',
        'origin_not_allowed',
      ),
    );
    expect(llm.load).toEqual(before);
  });

  it('no CORS headers without an Origin; same-host origins get them', async () => {
    const plain = await request(port, 'GET', '/health', {});
    expect(plain.status).toBe(200);
    expect(plain.headers['access-control-allow-origin']).toBeUndefined();
    for (const origin of [`http://localhost:${port}`, `http://127.0.0.1:${port}`, `http://[::1]:${port}`]) {
      const r = await request(port, 'GET', '/v1/models', { Origin: origin, Authorization: 'Bearer sk-test' });
      expect(r.status).toBe(200);
      expect(r.headers['access-control-allow-origin']).toBe(origin);
      expect(r.headers.vary).toBe('Origin');
    }
    // Another port on localhost is another origin (another local app's page).
    expect((await request(port, 'GET', '/health', { Origin: 'http://localhost:3000' })).status).toBe(403);
    expect((await request(port, 'GET', '/health', { Origin: 'null' })).status).toBe(403);
  });

  it('OPTIONS preflight: 204 with the CORS grant for an allowed origin (no API key needed), 403 otherwise', async () => {
    const origin = `http://localhost:${port}`;
    const r = await request(port, 'OPTIONS', '/v1/chat/completions', {
      Origin: origin,
      'Access-Control-Request-Method': 'POST',
      'Access-Control-Request-Headers': 'authorization, content-type, x-stainless-os',
    });
    expect(r.status).toBe(204);
    expect(r.body).toBe('');
    expect(r.headers['access-control-allow-origin']).toBe(origin);
    expect(r.headers['access-control-allow-methods']).toBe('POST, OPTIONS');
    expect(r.headers['access-control-allow-headers']).toBe('authorization, content-type, x-stainless-os');
    expect(r.headers['access-control-max-age']).toBe('600');
    expect(r.headers.allow).toBe('POST, OPTIONS');

    const bad = await request(port, 'OPTIONS', '/v1/chat/completions', {
      Origin: 'https://evil.example',
      'Access-Control-Request-Method': 'POST',
    });
    expect(bad.status).toBe(403);
    expect(JSON.parse(bad.body).error.code).toBe('origin_not_allowed');
    expect(bad.headers['access-control-allow-origin']).toBeUndefined();

    // A header list that is not one is not echoed; OPTIONS without Origin just lists the methods.
    const odd = await request(port, 'OPTIONS', '/health', { Origin: origin, 'Access-Control-Request-Headers': 'a b' });
    expect(odd.headers['access-control-allow-headers']).toBe('Authorization, Content-Type');
    const plain = await request(port, 'OPTIONS', '/v1/models', {});
    expect([plain.status, plain.headers.allow, plain.headers['access-control-allow-origin']]).toEqual([
      204,
      'GET, OPTIONS',
      undefined,
    ]);
    expect((await request(port, 'OPTIONS', '/nope', { Origin: origin })).status).toBe(404);
  });

  it('allowedOrigins lets listed origins in (normalized), with CORS headers on the streamed answer too', async () => {
    const listed = await start({ allowedOrigins: ['HTTP://App.Example:3000/', 'https://ui.example:443'] });
    const ok = await request(
      listed,
      'POST',
      '/v1/chat/completions',
      { Origin: 'http://app.example:3000', 'Content-Type': 'application/json' },
      JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, stream: true }),
    );
    expect(ok.status).toBe(200);
    expect(ok.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(ok.headers['access-control-allow-origin']).toBe('http://app.example:3000');
    expect(ok.body.endsWith('data: [DONE]\n\n')).toBe(true);
    const https = await request(listed, 'GET', '/health', { Origin: 'https://ui.example' });
    expect([https.status, https.headers['access-control-allow-origin']]).toEqual([200, 'https://ui.example']);
    expect((await request(listed, 'GET', '/health', { Origin: 'http://app.example:3001' })).status).toBe(403);
    expect((await request(listed, 'GET', '/health', { Origin: 'https://app.example:3000' })).status).toBe(403);
  });

  it("'*' allows any origin, echoed back", async () => {
    const any = await start({ allowedOrigins: ['*'] });
    const r = await request(any, 'GET', '/v1/models', { Origin: 'https://anything.example' });
    expect([r.status, r.headers['access-control-allow-origin']]).toEqual([200, 'https://anything.example']);
  });
});

describe('options and flags', () => {
  it('allowedOrigins entries are checked and normalized', () => {
    expect(
      parseAllowedOrigins(['*', 'http://LOCALHOST:80/', 'vscode-webview://abc', 'https://x.example:8443']),
    ).toEqual(['*', 'http://localhost', 'vscode-webview://abc', 'https://x.example:8443']);
    expect(normalizeOrigin('http://x.example/path')).toBeNull();
    expect(() => createServer(llm, { modelName: MODEL, allowedOrigins: ['http://x.example/app'] })).toThrow(
      `allowedOrigins[0] must be '*' or an origin such as http://localhost:3000 (scheme://host[:port], no path), got "http://x.example/app"`,
    );
    expect(() => createServer(llm, { modelName: MODEL, allowedOrigins: ['localhost:3000'] })).toThrow(
      'allowedOrigins[0]',
    );
  });

  it('an empty API key is an error, not an open server', () => {
    expect(() => createServer(llm, { modelName: MODEL, apiKey: '' })).toThrow(
      'createServer: apiKey must be a non-empty string without surrounding spaces (leave it out for no key)',
    );
    expect(() => createServer(llm, { modelName: MODEL, apiKey: ' key' })).toThrow(TypeError);
  });

  it('timeouts must be positive and headers within request', () => {
    expect(() => createServer(llm, { modelName: MODEL, headersTimeoutMs: 0 })).toThrow(
      'createServer: headersTimeoutMs must be a positive integer of milliseconds, got 0',
    );
    expect(() => createServer(llm, { modelName: MODEL, headersTimeoutMs: 2000, requestTimeoutMs: 1000 })).toThrow(
      'createServer: headersTimeoutMs (2000) must not exceed requestTimeoutMs (1000)',
    );
  });

  it('serve: --api-key "" and an empty QWEN_TS_API_KEY exit 2 naming them; bad --allowed-origins too', async () => {
    await expect(runServe(['--api-key', '', '--model', '/nonexistent/qwen-ts-model'])).rejects.toMatchObject({
      name: 'CliError',
      exitCode: 2,
      message: '--api-key is empty: give a key, or leave --api-key out to serve without one',
    });
    const saved = process.env.QWEN_TS_API_KEY;
    process.env.QWEN_TS_API_KEY = '';
    try {
      await expect(runServe(['--model', '/nonexistent/qwen-ts-model'])).rejects.toMatchObject({
        exitCode: 2,
        message: 'QWEN_TS_API_KEY is empty: give a key, or leave QWEN_TS_API_KEY out to serve without one',
      });
    } finally {
      if (saved === undefined) delete process.env.QWEN_TS_API_KEY;
      else process.env.QWEN_TS_API_KEY = saved;
    }
    await expect(
      runServe(['--allowed-origins', 'http://a.example,', '--model', '/nonexistent/qwen-ts-model']),
    ).rejects.toMatchObject({
      exitCode: 2,
      message: `--allowed-origins must be a comma list of origins such as http://localhost:3000, or '*', got "http://a.example,"`,
    });
    await expect(
      runServe(['--allowed-origins', 'http://a.example/x', '--model', '/nonexistent/qwen-ts-model']),
    ).rejects.toMatchObject({
      exitCode: 2,
      message: expect.stringContaining('--allowed-origins[0] must be'),
    });
  });
});

describe("Node's parser errors and timeouts, as OpenAI JSON", () => {
  let port: number;
  beforeAll(async () => {
    port = await start({ headersTimeoutMs: 300, requestTimeoutMs: 600 });
  });

  it('408 when the headers do not arrive within headersTimeout', async () => {
    const raw = parseRaw(await rawExchange(port, `GET /health HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n`));
    expect(raw.statusLine).toBe('HTTP/1.1 408 Request Timeout');
    expect(raw.headers).toContain('Content-Type: application/json');
    expect(raw.headers).toContain('Connection: close');
    expect(raw.body).toEqual(
      error(
        'The request did not arrive in time (its headers within headersTimeout, all of it within requestTimeout).',
        'invalid_request_error',
        'request_timeout',
      ),
    );
  });

  it('408 when the body does not arrive within requestTimeout', async () => {
    const raw = parseRaw(
      await rawExchange(
        port,
        `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"mess`,
      ),
    );
    expect(raw.statusLine).toBe('HTTP/1.1 408 Request Timeout');
    expect((raw.body as { error: { code: string } }).error.code).toBe('request_timeout');
  });

  it('400 for a malformed request, 431 for headers over the limit', async () => {
    const bad = parseRaw(await rawExchange(port, 'NOT A REQUEST\r\n\r\n'));
    expect(bad.statusLine).toBe('HTTP/1.1 400 Bad Request');
    expect(bad.body).toEqual(
      error(
        'Malformed HTTP request: Parse Error: Invalid method encountered (HPE_INVALID_METHOD).',
        'invalid_request_error',
        'bad_http_request',
      ),
    );
    const big = parseRaw(
      await rawExchange(
        port,
        `GET /health HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      ),
    );
    expect(big.statusLine).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    expect(big.body).toEqual(
      error('The request headers are larger than the server accepts.', 'invalid_request_error', 'headers_too_large'),
    );
  });

  it('an idle keep-alive connection outlives headersTimeout (the timer runs only while a request is read)', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = () =>
      new Promise<{ status: number; socket: net.Socket }>((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port, path: '/health', agent }, (res) => {
            res.resume();
            res.on('end', () => resolve({ status: res.statusCode!, socket: res.socket as net.Socket }));
          })
          .on('error', reject);
      });
    const first = await get();
    await new Promise((r) => setTimeout(r, 900)); // 3 headers timeouts, 1.5 request timeouts
    const second = await get();
    agent.destroy();
    expect([first.status, second.status]).toEqual([200, 200]);
    expect(second.socket).toBe(first.socket);
  });
});
