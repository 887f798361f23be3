// `qwen-ts serve --demo`: a page that runs the engine itself in the browser tab (qwen-ts/browser,
// dist/browser) on the bundled stories260K. Nothing runs here but a static file server: the page,
// the bundle and the model's files, with the cross-origin isolation headers (COOP/COEP) that give
// the page SharedArrayBuffer and so a kernel pool of Web Workers.
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
};

export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

export interface DemoServerOptions {
  /** Send the COOP/COEP headers (default true); without them the page runs the model on one thread. */
  isolated?: boolean;
}

/** The folder a URL path maps to, and the path inside it; null for anything else. */
function route(urlPath: string): { dir: string; rel: string } | null {
  const demoDir = fileURLToPath(new URL('../demo/', import.meta.url));
  if (urlPath === '/' || urlPath === '/index.html') return { dir: demoDir, rel: 'index.html' };
  const prefixes: [string, string][] = [
    ['/demo/', demoDir],
    ['/qwen-ts/', path.join(packageRoot(), 'dist', 'browser')],
    ['/models/stories260K/', DEMO_MODEL_DIR],
  ];
  for (const [prefix, dir] of prefixes)
    if (urlPath.startsWith(prefix)) return { dir, rel: urlPath.slice(prefix.length) };
  return null;
}

export function createDemoServer(options: DemoServerOptions = {}): http.Server {
  const isolated = options.isolated ?? true;
  return http.createServer((req, res) => {
    const headers: Record<string, string> = {
      'Cache-Control': 'no-cache',
      'X-Content-Type-Options': 'nosniff',
      ...(isolated ? ISOLATION_HEADERS : {}),
    };
    const urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const found = req.method === 'GET' || req.method === 'HEAD' ? route(urlPath) : null;
    // Plain names only (no "..", no hidden files): the three folders and nothing else are served.
    const file =
      found && found.rel.split('/').every((part) => part !== '' && !part.startsWith('.'))
        ? path.join(found.dir, found.rel)
        : null;
    let body: Buffer | null = null;
    try {
      if (file !== null && fs.statSync(file).isFile()) body = fs.readFileSync(file);
    } catch {
      body = null;
    }
    if (body === null) {
      const missingBundle =
        urlPath.startsWith('/qwen-ts/') && !fs.existsSync(path.join(packageRoot(), 'dist', 'browser'));
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(missingBundle ? 'dist/browser is missing: run `npm run build` first\n' : 'not found\n');
      return;
    }
    res.writeHead(200, {
      ...headers,
      'Content-Type': TYPES[path.extname(file!)] ?? 'application/octet-stream',
      'Content-Length': String(body.length),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
}
