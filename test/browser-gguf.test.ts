// GGUF files in a browser tab (qwen-ts/browser in Debian's headless Chromium through puppeteer-core):
// the bundled stories260K converted to GGUF (F32, split in two, Q8_0, and F32 with a chat template in
// its metadata) is loaded from its URL, with config, tokenizer and template from the GGUF metadata (no
// other file is served). F32's greedy text equals run.c's exactly, isolated or not; Q8_0's (on a
// kernel Web Worker), a llama-quantize Q4_K_M fixture's tokens and log-probabilities, and the chat
// answer equal the Node engine's on the same file; a reload reads
// the file from the Cache API (the test server counts the requests); a missing URL, a refused fetch,
// a file that is not GGUF, one over the ArrayBuffer limit, a cut download and the second part of a split model are
// errors naming the URL. `qwen-ts serve --demo --model FILE.gguf` runs the file in the demo page.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import type { TokenLogprob } from '../src/sampler/index.js';
import { convertToGguf } from '../src/model/gguf/convert.js';
import { GGUF_VALUE, readGgufHeader } from '../src/model/gguf/file.js';
import { writeGguf, type TensorToWrite } from '../src/model/gguf/writer.js';
import { createDemoServer, ISOLATION_HEADERS } from '../src/server/demo.js';
import { writeStoriesChatGguf } from './helpers/chat-gguf.js';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
// CI installs Chromium (.ci/run): there a missing browser is a failure, not a skip.
const RUN = CHROMIUM !== undefined || process.env.CI === 'true';
const STORIES = fileURLToPath(new URL('../assets/stories260K/', import.meta.url));
// llama-quantize's Q4_K_M of a small synthetic qwen2 (K-quants mixed with Q5_0/Q8_0/Q6_K; Qwen-style tokenizer in its metadata).
const KQUANT = fileURLToPath(new URL('./fixtures/gguf/qwen2-k.Q4_K_M.gguf', import.meta.url));
const EXPECTED = fs.readFileSync(
  fileURLToPath(new URL('./fixtures/stories260K/once-upon-a-time.txt', import.meta.url)),
  'utf8',
);
// run.c's 256 positions from BOS: "Once upon a time" is 5 tokens with BOS (see stories260k.test.ts).
const MAX_TOKENS = 256 + 1 - 5;
const GREEDY = { temperature: 0, maxTokens: MAX_TOKENS };
// Two threads are slow on this tiny model (each step's hand-offs cost more than its work): fewer tokens.
const Q8_PARAMS = { temperature: 0, maxTokens: 64 };
const MAIN = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));

let browser: Browser;
let dir: string;
const servers: http.Server[] = [];

/** Split a GGUF in two by its tensors, as llama-gguf-split does: the metadata in the first part. */
function splitGguf(src: string, first: string, second: string): void {
  const h = readGgufHeader(src);
  const bytes = fs.readFileSync(src);
  const tensors: TensorToWrite[] = h.tensors.map((t) => ({
    name: t.name,
    dims: t.dims,
    type: t.type,
    data: () => bytes.subarray(t.dataStart, t.dataStart + t.byteLength),
  }));
  const half = Math.floor(tensors.length / 2);
  const split = (no: number) => [
    ['split.no', { type: GGUF_VALUE.UINT16, value: no }] as const,
    ['split.count', { type: GGUF_VALUE.UINT16, value: 2 }] as const,
  ];
  writeGguf(first, [...h.metadata.entries(), ...split(0)], tensors.slice(0, half));
  writeGguf(second, [...split(1)], tensors.slice(half));
}

/** A server of the bundle (/qwen-ts/), a blank page (/demo/blank.html) and the GGUF files (/gguf/), counting their requests. */
async function serve(isolated = true): Promise<{ base: string; requests: Map<string, number> }> {
  const demo = createDemoServer({ isolated });
  const isolation = isolated ? ISOLATION_HEADERS : {};
  const requests = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (!url.startsWith('/gguf/')) return void demo.emit('request', req, res);
    requests.set(url, (requests.get(url) ?? 0) + 1);
    if (url === '/gguf/huge.gguf') {
      res.writeHead(200, { 'Content-Length': String(3 * 2 ** 30), ...isolation });
      res.write(Buffer.from('GGUF'));
      setTimeout(() => res.destroy(), 1000);
      return;
    }
    if (url === '/gguf/cut.gguf') {
      res.writeHead(200, { 'Content-Length': '1000', ...isolation });
      res.write(Buffer.from('GGUF and then the connection is cut'));
      setTimeout(() => res.destroy(), 200);
      return;
    }
    const file = path.join(dir, path.basename(url));
    if (!fs.existsSync(file)) return void res.writeHead(404, isolation).end('not found\n');
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', ...isolation }).end(fs.readFileSync(file));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

beforeAll(async () => {
  if (!RUN) return;
  if (!fs.existsSync(fileURLToPath(new URL('../dist/browser/index.js', import.meta.url))))
    throw new Error('dist/browser is missing: build first (npm run build)');
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-browser-gguf-'));
  convertToGguf(STORIES, path.join(dir, 'stories.f32.gguf'), { type: 'f32' });
  convertToGguf(STORIES, path.join(dir, 'stories.q8_0.gguf'), { type: 'q8_0' });
  splitGguf(
    path.join(dir, 'stories.f32.gguf'),
    path.join(dir, 'split-00001-of-00002.gguf'),
    path.join(dir, 'split-00002-of-00002.gguf'),
  );
  writeStoriesChatGguf(path.join(dir, 'chat.gguf'), path.join(dir, 'stories.f32.gguf'));
  fs.copyFileSync(path.join(STORIES, 'config.json'), path.join(dir, 'config.gguf'));
  fs.copyFileSync(KQUANT, path.join(dir, 'qwen2-k.Q4_K_M.gguf'));
});

afterAll(async () => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  await browser?.close();
  for (const s of servers) s.close();
});

async function blankPage(base: string): Promise<{ page: Page; warnings: string[] }> {
  const page = await browser.newPage();
  const warnings: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'warn' || m.type() === 'warning') warnings.push(m.text());
  });
  page.on('pageerror', (e) => warnings.push(`page error: ${(e as Error).message}`));
  await page.goto(`${base}/demo/blank.html`);
  return { page, warnings };
}

interface InTab {
  text: string;
  tokenIds: number[];
  threads: number;
  progress: { stage: string; doneBytes: number; totalBytes: number }[];
}

/** Load `url` in the page's own engine and run the prompt greedily. */
// (Source text, not a function: vitest would rewrite a function's import() into its own loader.)
function generateInPage(page: Page, url: string, threads: number, params = GREEDY): Promise<InTab> {
  return page.evaluate(`(async () => {
    const { LLM } = await import('/qwen-ts/index.js');
    const progress = [];
    const llm = await LLM.load('${url}', { threads: ${threads}, onProgress: (p) => progress.push(p) });
    const [r] = await llm.generate('Once upon a time', ${JSON.stringify(params)});
    const threads = llm.model.threads;
    await llm.close();
    return { text: r.outputs[0].text, tokenIds: r.outputs[0].tokenIds, threads, progress };
  })()`) as Promise<InTab>;
}

const errorInPage = (page: Page, url: string): Promise<string> =>
  page.evaluate(`(async () => {
    const { LLM } = await import('/qwen-ts/index.js');
    return LLM.load('${url}').then((llm) => llm.close().then(() => 'loaded'), (e) => e.name + ': ' + e.message);
  })()`) as Promise<string>;

describe.skipIf(!RUN)('GGUF files in headless Chromium', () => {
  it('an F32 GGUF by its URL: run.c’s text, download progress, and a reload reads it from the cache', async () => {
    const { base, requests } = await serve();
    const { page, warnings } = await blankPage(base);
    const size = fs.statSync(path.join(dir, 'stories.f32.gguf')).size;
    // One thread here (two are slower on this tiny model); the Q8_0 test below runs on two.
    const r = await generateInPage(page, '/gguf/stories.f32.gguf', 1);
    expect('Once upon a time' + r.text + '\n').toBe(EXPECTED);
    const download = r.progress.filter((p) => p.stage === 'download');
    expect(download.length).toBeGreaterThan(0);
    expect(download[download.length - 1]).toMatchObject({ doneBytes: size, totalBytes: size });
    // Then the engine worker's "weights" stage, over the tensors' bytes.
    const weights = r.progress.filter((p) => p.stage === 'weights');
    const last = weights[weights.length - 1];
    expect(last.doneBytes).toBe(last.totalBytes);
    expect(last.totalBytes).toBeGreaterThan(0.9 * size);
    expect(requests.get('/gguf/stories.f32.gguf')).toBe(1);
    // Only the GGUF file was asked for: the tokenizer and config come from its metadata.
    expect([...requests.keys()]).toEqual(['/gguf/stories.f32.gguf']);
    await page.reload();
    const again = await generateInPage(page, `${base}/gguf/stories.f32.gguf?download=true`, 1);
    expect('Once upon a time' + again.text + '\n').toBe(EXPECTED);
    expect(requests.get('/gguf/stories.f32.gguf')).toBe(1); // from the Cache API, not downloaded again
    expect(warnings).toEqual([]);
    await page.close();
  }, 60_000);

  it('a split GGUF by its first part; Q8_0, a llama-quantize Q4_K_M and a chat template from the metadata as in Node', async () => {
    const { base, requests } = await serve();
    const { page, warnings } = await blankPage(base);
    const split = await generateInPage(page, '/gguf/split-00001-of-00002.gguf', 1);
    expect('Once upon a time' + split.text + '\n').toBe(EXPECTED);
    expect(requests.get('/gguf/split-00001-of-00002.gguf')).toBe(1);
    expect(requests.get('/gguf/split-00002-of-00002.gguf')).toBe(1);
    const sizes = ['split-00001-of-00002.gguf', 'split-00002-of-00002.gguf'].map(
      (f) => fs.statSync(path.join(dir, f)).size,
    );
    expect(split.progress.filter((p) => p.stage === 'download').pop()).toMatchObject({
      doneBytes: sizes[0] + sizes[1],
      totalBytes: sizes[0] + sizes[1],
    });

    const inNode = (async () => {
      const llm = await LLM.load(path.join(dir, 'stories.q8_0.gguf'), { threads: 1 });
      const [out] = await llm.generate('Once upon a time', Q8_PARAMS);
      await llm.close();
      return out.outputs[0];
    })();
    const [expected, q8] = await Promise.all([inNode, generateInPage(page, '/gguf/stories.q8_0.gguf', 2, Q8_PARAMS)]);
    expect(q8.threads).toBe(2); // the engine worker and a kernel Web Worker share the GGUF's weights
    expect(q8.tokenIds).toEqual(expected.tokenIds);
    expect(q8.text).toBe(expected.text);
    expect(q8.text.length).toBeGreaterThan(150);

    // A llama-quantize Q4_K_M file: the same tokens and top log-probabilities in the tab as in Node.
    const kParams = { temperature: 0, maxTokens: 8, ignoreEos: true, logprobs: 3 };
    const kInNode = (async () => {
      const llm = await LLM.load(KQUANT, { threads: 1 });
      const [out] = await llm.generate('Hello world', kParams);
      await llm.close();
      return out.outputs[0];
    })();
    const kInTab = page.evaluate(`(async () => {
      const { LLM } = await import('/qwen-ts/index.js');
      const llm = await LLM.load('/gguf/qwen2-k.Q4_K_M.gguf', { threads: 1 });
      const [r] = await llm.generate('Hello world', ${JSON.stringify(kParams)});
      await llm.close();
      return { ids: r.outputs[0].tokenIds, logprobs: r.outputs[0].logprobs };
    })()`) as Promise<{ ids: number[]; logprobs: TokenLogprob[] }>;
    const [kExpected, k] = await Promise.all([kInNode, kInTab]);
    expect(k.ids).toEqual(kExpected.tokenIds);
    expect(k.logprobs).toHaveLength(8);
    k.logprobs.forEach((lp, i) => {
      const want = kExpected.logprobs![i];
      expect(lp.logprob).toBeCloseTo(want.logprob, 5);
      expect(lp.topLogprobs!.map((t) => t.token)).toEqual(want.topLogprobs!.map((t) => t.token));
      lp.topLogprobs!.forEach((t, j) => expect(t.logprob).toBeCloseTo(want.topLogprobs![j].logprob, 5));
    });

    // The chat template comes from the metadata too: the same prompt ids and answer as in Node.
    const messages = [{ role: 'user', content: 'Tell me a story about a dog.' }];
    const params = { temperature: 0, maxTokens: 40 };
    const chatInNode = (async () => {
      const llm = await LLM.load(path.join(dir, 'chat.gguf'), { threads: 1 });
      const [out] = await llm.chat(messages, params);
      await llm.close();
      return out;
    })();
    const chatInTab = page.evaluate(`(async () => {
      const { LLM } = await import('/qwen-ts/index.js');
      const llm = await LLM.load('/gguf/chat.gguf', { threads: 1 });
      const [r] = await llm.chat(${JSON.stringify(messages)}, ${JSON.stringify(params)});
      await llm.close();
      return { prompt: r.promptTokenIds, ids: r.outputs[0].tokenIds, text: r.outputs[0].text };
    })()`) as Promise<{ prompt: number[]; ids: number[]; text: string }>;
    const [chatExpected, chat] = await Promise.all([chatInNode, chatInTab]);
    expect(chat.prompt).toEqual(chatExpected.promptTokenIds);
    expect(chat.prompt.length).toBeGreaterThan(12);
    expect(chat.ids).toEqual(chatExpected.outputs[0].tokenIds);
    expect(chat.text).toBe(chatExpected.outputs[0].text);
    expect(warnings).toEqual([]);
    await page.close();
  }, 60_000);

  it('not isolated (one thread, no SharedArrayBuffer) it runs too; a missing URL, a file that is not GGUF, one over the ArrayBuffer limit, a cut download, a second part: errors naming the URL', async () => {
    const { base, requests } = await serve(false);
    const { page, warnings } = await blankPage(base);
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(false);
    const one = await generateInPage(page, '/gguf/stories.f32.gguf', 2);
    expect(one.threads).toBe(1);
    expect('Once upon a time' + one.text + '\n').toBe(EXPECTED);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('not cross-origin isolated');
    expect(await errorInPage(page, '/gguf/nothing-here.gguf')).toBe(
      `Error: ${base}/gguf/nothing-here.gguf: HTTP 404 Not Found (expected a GGUF file)`,
    );
    expect(await errorInPage(page, 'http://127.0.0.1:1/model.gguf')).toBe(
      'Error: http://127.0.0.1:1/model.gguf: cannot fetch (Failed to fetch): is it served at this URL (from another origin, with CORS headers)?',
    );
    expect(await errorInPage(page, '/gguf/config.gguf')).toBe(
      `Error: ${base}/gguf/config.gguf: not a GGUF file (it starts with "{?  ", expected "GGUF"): is this the URL of a .gguf file?`,
    );
    // Not kept in the cache: asked for again, it is fetched again.
    await errorInPage(page, '/gguf/config.gguf');
    expect(requests.get('/gguf/config.gguf')).toBe(2);
    expect(await errorInPage(page, '/gguf/huge.gguf')).toMatch(
      /^RangeError: http:\/\/127\.0\.0\.1:\d+\/gguf\/huge\.gguf is 3\.0 GiB: more than the 2147483647 bytes a browser holds in one ArrayBuffer\. Use a smaller quantization, or split the file/,
    );
    expect(await errorInPage(page, '/gguf/cut.gguf')).toMatch(
      /^Error: http:\/\/127\.0\.0\.1:\d+\/gguf\/cut\.gguf: the download stopped after 35 of 1000 bytes \(.+\); load again to retry$/,
    );
    await errorInPage(page, '/gguf/cut.gguf');
    expect(requests.get('/gguf/cut.gguf')).toBe(2); // nothing of it was cached
    expect(await errorInPage(page, '/gguf/split-00002-of-00002.gguf')).toMatch(
      /^Error: .*\/gguf\/split-00002-of-00002\.gguf: is part of a split model; give the URL of its first file \(\.\.\.-00001-of-00002\.gguf\)/,
    );
    expect(requests.get('/gguf/split-00002-of-00002.gguf')).toBeUndefined();
    await page.close();
  }, 30_000);

  it('qwen-ts serve --demo --model FILE.gguf: the demo page runs that file, a chat model as chat (screenshot in test-artifacts/)', async () => {
    const child = spawn(
      process.execPath,
      [MAIN, 'serve', '--demo', '--port', '0', '--model', path.join(dir, 'chat.gguf')],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    try {
      const base = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /listening on (http:\/\/\S+)/.exec(out);
          if (m) resolve(m[1]);
        });
        child.once('exit', (code) => reject(new Error(`serve --demo exited (${code})`)));
      });
      // Only the file itself is served from its folder.
      expect((await fetch(`${base}/models/local/chat.gguf`)).status).toBe(200);
      expect((await fetch(`${base}/models/local/stories.q8_0.gguf`)).status).toBe(404);
      const page = await browser.newPage();
      await page.setViewport({ width: 900, height: 760 });
      await page.goto(`${base}/`); // redirected to /?model=/models/local/chat.gguf
      await page.waitForFunction(() => !(document.getElementById('generate') as HTMLButtonElement).disabled, {
        timeout: 20_000,
      });
      expect(await page.$eval('#status', (e) => e.textContent)).toMatch(
        /^chat\.gguf loaded in .* \(cross-origin isolated\)/,
      );
      // The model has a chat template: the prompt is sent as a user message.
      const prompt = await page.$eval('#prompt', (e) => (e as HTMLInputElement).value);
      const llm = await LLM.load(path.join(dir, 'chat.gguf'), { threads: 1 });
      const [expected] = await llm.chat([{ role: 'user', content: prompt }], { temperature: 0, maxTokens: 60 });
      await llm.close();
      await page.$eval('#max-tokens', (e) => ((e as HTMLInputElement).value = '60'));
      await page.click('#generate');
      await page.waitForFunction(() => document.body.dataset.done === '1', { timeout: 20_000 });
      expect(await page.$eval('#output', (e) => e.textContent!)).toBe(expected.outputs[0].text);
      expect(expected.outputs[0].text.length).toBeGreaterThan(100);
      await page.screenshot({ path: `${ARTIFACTS}/browser-demo-gguf.png` });
      await page.close();
    } finally {
      child.kill('SIGTERM');
    }
  }, 60_000);
});

describe('qwen-ts serve --demo flags', () => {
  it('a flag that does not apply to the demo is an error, not ignored', () => {
    const r = spawnSync(process.execPath, [MAIN, 'serve', '--demo', '--weights', 'q8_0'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--weights does not apply to --demo');
  });
});
