// The engine itself in a browser tab (qwen-ts/browser, dist/browser) in a real headless Chromium
// (Debian's chromium through puppeteer-core): the bundled stories260K's greedy text equals llama2.c's
// run.c text exactly; with cross-origin isolation (COOP/COEP) the kernels run on a pool of Web Workers,
// without it on one thread with one clear warning; a reload loads the model from the Cache API.
// The demo page of `qwen-ts serve --demo` is screenshot to test-artifacts/ (look at it).
import * as fs from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDemoServer } from '../src/server/demo.js';

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
const servers: Server[] = [];
/** Weight-file requests each server received (a reload must not fetch again). */
const weightRequests = new Map<Server, number>();

async function serve(isolated: boolean): Promise<string> {
  const server = createDemoServer({ isolated });
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
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
});

afterAll(async () => {
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
    const threads = llm.model.threads;
    await llm.close();
    return { text: r.outputs[0].text, threads };
  })()`) as Promise<{ text: string; threads: number }>;
}

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
    expect('Once upon a time' + r.text + '\n').toBe(EXPECTED);
    expect(warnings).toEqual([]);
    const server = servers[servers.length - 1];
    expect(weightRequests.get(server)).toBe(1);
    await page.reload();
    const again = await generateInPage(page, 1);
    expect('Once upon a time' + again.text + '\n').toBe(EXPECTED);
    expect(weightRequests.get(server)).toBe(1); // from the Cache API, not downloaded again
    await page.close();
  }, 60_000);

  it('not isolated: one thread, the same text, and the warning said once', async () => {
    const base = await serve(false);
    const { page, warnings } = await blankPage(base);
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(false);
    const r = await generateInPage(page, 4);
    expect(r.threads).toBe(1);
    expect('Once upon a time' + r.text + '\n').toBe(EXPECTED);
    expect(warnings.filter((w) => w.includes(NOT_ISOLATED))).toHaveLength(1);
    expect(warnings.filter((w) => !w.includes(NOT_ISOLATED))).toEqual([]);
    await page.close();
  }, 60_000);

  it('a folder that is not there: a clear error naming the file', async () => {
    const base = await serve(true);
    const { page } = await blankPage(base);
    const message = await page.evaluate(`(async () => {
      const { LLM } = await import('/qwen-ts/index.js');
      return LLM.load('/models/nothing-here/').then(() => 'loaded', (e) => e.message);
    })()`);
    expect(message).toMatch(/\/models\/nothing-here\/config\.json: HTTP 404 .*config\.json/);
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
    await page.click('#generate');
    await page.waitForFunction(() => document.body.dataset.done === '1', { timeout: 20_000 });
    expect((await page.$eval('#output', (e) => e.textContent)) + '\n').toBe(EXPECTED);
    await page.screenshot({ path: `${ARTIFACTS}/browser-demo.png` });
    await page.close();
  }, 60_000);
});
