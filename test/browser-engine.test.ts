// The engine itself in a browser tab (qwen-ts/browser, dist/browser) in a real headless Chromium
// (Debian's chromium through puppeteer-core): the bundled stories260K's greedy text equals llama2.c's
// run.c text exactly; with cross-origin isolation (COOP/COEP) the kernels run on a pool of Web Workers,
// without it on one thread with one clear warning; a reload loads the model from the Cache API.
// The demo page of `qwen-ts serve --demo` is screenshot to test-artifacts/ (look at it).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as os from 'node:os';
import * as path from 'node:path';
import { LLM } from '../src/engine/llm.js';
import { writeSyntheticModel } from '../src/model/synthetic.js';
import { createDemoServer, ISOLATION_HEADERS } from '../src/server/demo.js';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
// CI installs Chromium (.ci/run): there a missing browser is a failure, not a skip.
const RUN = CHROMIUM !== undefined || process.env.CI === 'true';
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));
const EXPECTED = fs.readFileSync(
  fileURLToPath(new URL('./fixtures/stories260K/once-upon-a-time.txt', import.meta.url)),
  'utf8',
);
// run.c's 256 positions from BOS: "Once upon a time" is 5 tokens with BOS (see stories260k.test.ts).
const MAX_TOKENS = 256 + 1 - 5;
const NOT_ISOLATED = 'not cross-origin isolated';

let browser: Browser;
const servers: http.Server[] = [];
/** Weight-file requests each server received (a reload must not fetch again). */
const weightRequests = new Map<http.Server, number>();

/** A model whose single weight file is over the ArrayBuffer limit (only its length is ever sent). */
const HUGE = '/models/huge/';
/** The synthetic tiny Qwen2.5 (Qwen's tokenizer and chat template), in two shards. */
const TINY = '/models/tiny/';
let tinyDir: string;

async function serve(isolated: boolean): Promise<string> {
  const demo = createDemoServer({ isolated });
  const server = http.createServer((req, res) => {
    if (req.url === `${HUGE}model.safetensors`) {
      res.writeHead(200, { 'Content-Length': String(3 * 2 ** 30), ...ISOLATION_HEADERS });
      res.write(Buffer.alloc(16));
      setTimeout(() => res.destroy(), 1000);
      return;
    }
    if (req.url?.startsWith(HUGE)) req.url = req.url.replace(HUGE, '/models/stories260K/');
    if (req.url?.startsWith(TINY)) {
      const file = path.join(tinyDir, path.basename(req.url));
      if (!fs.existsSync(file)) res.writeHead(404, ISOLATION_HEADERS).end();
      else res.writeHead(200, ISOLATION_HEADERS).end(fs.readFileSync(file));
      return;
    }
    demo.emit('request', req, res);
  });
  weightRequests.set(server, 0);
  server.on('request', (req) => {
    if (req.url?.endsWith('.safetensors')) weightRequests.set(server, weightRequests.get(server)! + 1);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
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
  tinyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-browser-'));
  writeSyntheticModel(tinyDir, { preset: 'tiny', shards: 2 });
});

afterAll(async () => {
  if (tinyDir) fs.rmSync(tinyDir, { recursive: true, force: true });
  await browser?.close();
  for (const s of servers) s.close();
});

/** Run the prompt greedily in the page's own engine (the module the demo page imports). */
// (Source text, not a function: vitest would rewrite a function's import() into its own loader.)
async function generateInPage(page: Page, threads: number): Promise<{ text: string; threads: number }> {
  return page.evaluate(`(async () => {
    const { LLM } = await import('/qwen-ts/index.js');
    const llm = await LLM.load('/models/stories260K/', { threads: ${threads} });
    const [r] = await llm.generate('Once upon a time', { temperature: 0, maxTokens: ${MAX_TOKENS} });
    window.llm = llm; // closed by closeInPage, once the test has counted the page's workers
    return { text: r.outputs[0].text, threads: llm.model.threads };
  })()`) as Promise<{ text: string; threads: number }>;
}

const closeInPage = (page: Page) => page.evaluate('window.llm.close()');

/** The page's kernel pool Web Workers (started by the engine worker). */
const kernelWorkers = (page: Page) => page.workers().filter((w) => w.url().endsWith('/qwen-ts/task-thread.js')).length;

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

describe.skipIf(!RUN)('qwen-ts/browser in headless Chromium', () => {
  it('isolated (COOP/COEP): greedy stories260K equals run.c on a pool of Web Workers; a reload uses the cache', async () => {
    const base = await serve(true);
    const { page, warnings } = await blankPage(base);
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
    const r = await generateInPage(page, 2);
    // The engine worker and a kernel Web Worker: every operation waits for each thread's share.
    expect(r.threads).toBe(2);
    expect(kernelWorkers(page)).toBe(1);
    await closeInPage(page);
    expect('Once upon a time' + r.text + '\n').toBe(EXPECTED);
    expect(warnings).toEqual([]);
    const server = servers[servers.length - 1];
    expect(weightRequests.get(server)).toBe(1);
    await page.reload();
    const again = await generateInPage(page, 1);
    expect('Once upon a time' + again.text + '\n').toBe(EXPECTED);
    await closeInPage(page);
    expect(weightRequests.get(server)).toBe(1); // from the Cache API, not downloaded again
    await page.close();
  }, 60_000);

  it('not isolated: one thread, the same text, and the warning said once', async () => {
    const base = await serve(false);
    const { page, warnings } = await blankPage(base);
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(false);
    const r = await generateInPage(page, 4);
    expect(r.threads).toBe(1);
    expect(kernelWorkers(page)).toBe(0);
    await closeInPage(page);
    expect('Once upon a time' + r.text + '\n').toBe(EXPECTED);
    expect(warnings.filter((w) => w.includes(NOT_ISOLATED))).toHaveLength(1);
    expect(warnings.filter((w) => !w.includes(NOT_ISOLATED))).toEqual([]);
    await page.close();
  }, 60_000);

  it('chat on a sharded Qwen2.5-style model gives the same tokens in the tab as in Node', async () => {
    const messages = [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: '跟我讲讲股市运行的逻辑' },
    ];
    const params = { temperature: 0, maxTokens: 24, ignoreEos: true };
    // Node and the tab at once (each load parses Qwen's 7 MB tokenizer.json).
    const inNode = (async () => {
      const node = await LLM.load(tinyDir, { threads: 1 });
      const [out] = await node.chat(messages, params);
      await node.close();
      return out;
    })();
    const base = await serve(true);
    const { page, warnings } = await blankPage(base);
    const inTab = page.evaluate(`(async () => {
      const { LLM } = await import('/qwen-ts/index.js');
      const llm = await LLM.load('${TINY}', { threads: 2 });
      const [r] = await llm.chat(${JSON.stringify(messages)}, ${JSON.stringify(params)});
      let streamed = '';
      for await (const d of llm.stream(${JSON.stringify(messages)}, ${JSON.stringify(params)})) streamed += d;
      await llm.close();
      return { prompt: r.promptTokenIds, ids: r.outputs[0].tokenIds, text: r.outputs[0].text, streamed };
    })()`) as Promise<{ prompt: number[]; ids: number[]; text: string; streamed: string }>;
    const [expected, r] = await Promise.all([inNode, inTab]);
    expect(r.prompt).toEqual(expected.promptTokenIds);
    expect(r.ids).toEqual(expected.outputs[0].tokenIds);
    expect(r.text).toBe(expected.outputs[0].text);
    expect(r.streamed).toBe(expected.outputs[0].text);
    expect(warnings).toEqual([]);
    await page.close();
  }, 60_000);

  it('a folder that is not there, a weight file over the ArrayBuffer limit: clear errors naming the file', async () => {
    const base = await serve(true);
    const { page } = await blankPage(base);
    const message = await page.evaluate(`(async () => {
      const { LLM } = await import('/qwen-ts/index.js');
      return LLM.load('/models/nothing-here/').then(() => 'loaded', (e) => e.message);
    })()`);
    expect(message).toMatch(/\/models\/nothing-here\/config\.json: HTTP 404 .*config\.json/);
    const huge = await page.evaluate(`(async () => {
      const { LLM } = await import('/qwen-ts/index.js');
      return LLM.load('${HUGE}').then(() => 'loaded', (e) => e.name + ': ' + e.message);
    })()`);
    expect(huge).toMatch(
      /^RangeError: .*\/models\/huge\/model\.safetensors is 3\.0 GiB: more than the 2147483647 bytes a browser holds in one ArrayBuffer/,
    );
    await page.close();
  }, 30_000);

  it('the demo page streams a story in the tab (screenshot in test-artifacts/)', async () => {
    const base = await serve(true);
    const page = await browser.newPage();
    await page.setViewport({ width: 900, height: 760 });
    await page.goto(`${base}/`);
    await page.waitForFunction(() => !(document.getElementById('generate') as HTMLButtonElement).disabled, {
      timeout: 20_000,
    });
    expect(await page.$eval('#status', (e) => e.textContent)).toMatch(/threads? \(cross-origin isolated\)/);
    // A shorter story than run.c's (the tests above check all of it): the page, not the speed, is tested here.
    await page.$eval('#max-tokens', (e) => ((e as HTMLInputElement).value = '60'));
    await page.click('#generate');
    await page.waitForFunction(() => document.body.dataset.done === '1', { timeout: 20_000 });
    const story = await page.$eval('#output', (e) => e.textContent!);
    expect(story.length).toBeGreaterThan(100);
    expect(EXPECTED.startsWith(story)).toBe(true);
    expect(await page.$eval('#metrics', (e) => e.textContent)).toMatch(/^60 tokens, \d+ tokens\/s/);
    await page.screenshot({ path: `${ARTIFACTS}/browser-demo.png` });
    await page.close();
  }, 60_000);
});

describe('qwen-ts serve --demo', () => {
  it('serves the demo page, the bundle and the model with the isolation headers, and nothing else', async () => {
    const main = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
    const child = spawn(process.execPath, [main, 'serve', '--demo', '--port', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
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
      const page = await fetch(`${base}/`);
      expect(page.status).toBe(200);
      expect(page.headers.get('cross-origin-opener-policy')).toBe('same-origin');
      expect(page.headers.get('cross-origin-embedder-policy')).toBe('require-corp');
      expect(await page.text()).toContain('/demo/demo.js');
      expect((await fetch(`${base}/qwen-ts/index.js`)).status).toBe(200);
      expect((await fetch(`${base}/models/stories260K/config.json`)).status).toBe(200);
      expect((await fetch(`${base}/models/stories260K/%2e%2e/%2e%2e/package.json`)).status).toBe(404);
      expect((await fetch(`${base}/v1/models`)).status).toBe(404);
    } finally {
      child.kill('SIGTERM');
    }
  }, 30_000);
});
