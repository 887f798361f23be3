// The chat page of `qwen-ts serve` (src/web): static files read once, served with a Content Security
// Policy that allows only this origin's own scripts and styles, so even text that slipped into the
// page as HTML could not run (the page itself only ever inserts model output as text).
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface WebAsset {
  contentType: string;
  body: Buffer;
}

const FILES: Record<string, [file: string, contentType: string]> = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/web/chat.js': ['chat.js', 'text/javascript; charset=utf-8'],
  '/web/markdown.js': ['markdown.js', 'text/javascript; charset=utf-8'],
  '/web/chat.css': ['chat.css', 'text/css; charset=utf-8'],
};

export const WEB_HEADERS = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-cache',
};

/** Whether `path` is one of the page's files (or its config). */
export function isWebPath(path: string): boolean {
  return path in FILES || path === '/web/config.json';
}

let assets: Map<string, WebAsset> | null = null;

/** The page's files: src/web beside src/server (a clone), or dist/src/web (copied there by the build). */
export function webAsset(path: string): WebAsset | null {
  if (!assets) {
    assets = new Map();
    const dir = new URL('../web/', import.meta.url);
    for (const [route, [file, contentType]] of Object.entries(FILES))
      assets.set(route, { contentType, body: fs.readFileSync(fileURLToPath(new URL(file, dir))) });
  }
  return assets.get(path) ?? null;
}

/** What the page needs to know of the server: the model id, whether it can chat, whether a key is needed. */
export interface WebConfig {
  model: string;
  chatTemplate: boolean;
  contextLength: number;
  auth: boolean;
  defaults: { temperature?: number; topP?: number };
}
