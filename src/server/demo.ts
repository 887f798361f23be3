// `qwen-ts serve --demo`: a page that runs the engine itself in the browser tab (qwen-ts/browser,
// dist/browser) on the bundled stories260K, or on the model `?model=URL` names (a folder or a .gguf
// file; `--model` serves a local one under /models/local/). Nothing runs here but a static file
// server: the page, the bundle and the model's files, with the cross-origin isolation headers
// (COOP/COEP) that give the page SharedArrayBuffer and so a kernel pool of Web Workers.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEMO_MODEL_DIR, packageRoot } from '../package-root.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.safetensors': 'application/octet-stream',
  '.gguf': 'application/octet-stream',
};

export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

export interface DemoServerOptions {
  /** Send the COOP/COEP headers (default true); without them the page runs the model on one thread. */
  isolated?: boolean;
  /** A local model folder or .gguf file to serve under /models/local/; the page at / then loads it. */
  model?: string;
}

const SPLIT = /-\d{5}-of-(\d{5})\.gguf$/i;

/** Where `--model` is served: a folder as /models/local/NAME/, a GGUF file (and its split parts) as /models/local/NAME.gguf. */
function localModel(model: string): { url: string; prefix: string; dir: string; allowed: (rel: string) => boolean } {
  const resolved = path.resolve(model);
  const name = path.basename(resolved);
  if (fs.statSync(resolved).isDirectory())
    return {
      url: `/models/local/${encodeURIComponent(name)}/`,
      prefix: `/models/local/${name}/`,
      dir: resolved,
      allowed: () => true,
    };
  const split = SPLIT.exec(name);
  const parts = new Set([name]);
  if (split !== null)
    for (let i = 1; i <= Number(split[1]); i++)
      parts.add(name.replace(SPLIT, `-${String(i).padStart(5, '0')}-of-${split[1]}.gguf`));
  return {
    url: `/models/local/${encodeURIComponent(name)}`,
    prefix: '/models/local/',
    dir: path.dirname(resolved),
    allowed: (rel) => parts.has(rel),
  };
}

/** The folder a URL path maps to, and the path inside it; null for anything else. */
function route(urlPath: string, local: ReturnType<typeof localModel> | null): { dir: string; rel: string } | null {
  const demoDir = fileURLToPath(new URL('../demo/', import.meta.url));
  if (urlPath === '/' || urlPath === '/index.html') return { dir: demoDir, rel: 'index.html' };
  const prefixes: [string, string][] = [
    ['/demo/', demoDir],
    ['/qwen-ts/', path.join(packageRoot(), 'dist', 'browser')],
    ['/models/stories260K/', DEMO_MODEL_DIR],
  ];
  for (const [prefix, dir] of prefixes)
    if (urlPath.startsWith(prefix)) return { dir, rel: urlPath.slice(prefix.length) };
  if (local !== null && urlPath.startsWith(local.prefix)) {
    const rel = urlPath.slice(local.prefix.length);
    if (local.allowed(rel)) return { dir: local.dir, rel };
  }
  return null;
}

export function createDemoServer(options: DemoServerOptions = {}): http.Server {
  const isolated = options.isolated ?? true;
  const local = options.model === undefined ? null : localModel(options.model);
  return http.createServer((req, res) => {
    const headers: Record<string, string> = {
      'Cache-Control': 'no-cache',
      'X-Content-Type-Options': 'nosniff',
      ...(isolated ? ISOLATION_HEADERS : {}),
    };
    const url = new URL(req.url ?? '/', 'http://x');
    const urlPath = decodeURIComponent(url.pathname);
    // With --model, the page opens on it.
    if (local !== null && urlPath === '/' && !url.searchParams.has('model')) {
      res.writeHead(302, { ...headers, Location: `/?model=${encodeURIComponent(local.url)}` }).end();
      return;
    }
    const found = req.method === 'GET' || req.method === 'HEAD' ? route(urlPath, local) : null;
    // Plain names only (no "..", no hidden files): the served folders and nothing else.
    const file =
      found && found.rel.split('/').every((part) => part !== '' && !part.startsWith('.'))
        ? path.join(found.dir, found.rel)
        : null;
    let size = -1;
    try {
      if (file !== null && fs.statSync(file).isFile()) size = fs.statSync(file).size;
    } catch {
      size = -1;
    }
    if (size < 0) {
      const missingBundle =
        urlPath.startsWith('/qwen-ts/') && !fs.existsSync(path.join(packageRoot(), 'dist', 'browser'));
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(missingBundle ? 'dist/browser is missing: run `npm run build` first\n' : 'not found\n');
      return;
    }
    res.writeHead(200, {
      ...headers,
      'Content-Type': TYPES[path.extname(file!)] ?? 'application/octet-stream',
      'Content-Length': String(size),
    });
    if (req.method === 'HEAD') res.end();
    // Streamed: a model file may be gigabytes.
    else
      fs.createReadStream(file!)
        .on('error', () => res.destroy())
        .pipe(res);
  });
}
