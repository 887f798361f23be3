// The chat page of `qwen-ts serve` with a model that has a chat template (stories260K as a GGUF with
// one in its metadata, test/helpers/chat-gguf.ts), in headless Chromium: the settings' system prompt
// and sampling values reach /v1/chat/completions, and the streamed answer equals the library's
// llm.chat on the same messages. Screenshot: test-artifacts/chat-model.png.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { createServer, type OpenAIServer } from '../src/server/server.js';
import { writeStoriesChatGguf } from './helpers/chat-gguf.js';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
// CI installs Chromium (.ci/run): there a missing browser is a failure, not a skip.
const RUN = CHROMIUM !== undefined || process.env.CI === 'true';
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));

let dir: string;
let llm: LLM;
let app: OpenAIServer;
let base: string;
let browser: Browser;

beforeAll(async () => {
  if (!RUN) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-ts-web-chat-'));
  writeStoriesChatGguf(path.join(dir, 'stories-chat.gguf'));
  llm = await LLM.load(path.join(dir, 'stories-chat.gguf'), { threads: 1 });
  app = createServer(llm, { modelName: 'stories-chat', log: false });
  base = `http://127.0.0.1:${(await app.listen(0, '127.0.0.1')).port}`;
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await app?.close();
  await llm?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function setField(page: Page, id: string, value: string): Promise<void> {
  await page.$eval(
    `#${id}`,
    (el, v) => {
      (el as HTMLInputElement).value = v;
      el.dispatchEvent(new Event('change'));
    },
    value,
  );
}

describe.runIf(RUN)('chat page with a chat model', () => {
  it('sends the system prompt and sampling settings; the answer is llm.chat’s', async () => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1100, height: 760 });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push((e as Error).message));
    const bodies: Record<string, unknown>[] = [];
    page.on('request', (r) => {
      if (r.url().endsWith('/v1/chat/completions')) bodies.push(JSON.parse(r.postData() ?? '{}'));
    });
    await page.goto(base + '/');
    await page.waitForSelector('body[data-ready="true"]');
    expect(await page.$eval('#banner', (e) => (e as HTMLElement).hidden || e.textContent === '')).toBe(true);
    await page.click('#settings-toggle');
    await setField(page, 'system', 'You tell stories about dogs.');
    await setField(page, 'temperature', '0');
    await setField(page, 'top-p', '0.9');
    await setField(page, 'max-tokens', '40');
    await page.click('#settings-close');
    await page.type('#input', 'A story, please.');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => !(document.querySelector('#send') as HTMLButtonElement).disabled, {
      timeout: 30_000,
    });
    expect(bodies).toHaveLength(1);
    const messages = [
      { role: 'system', content: 'You tell stories about dogs.' },
      { role: 'user', content: 'A story, please.' },
    ];
    expect(bodies[0]).toMatchObject({ messages, temperature: 0, top_p: 0.9, max_tokens: 40, stream: true });
    const [expected] = await llm.chat(messages, { temperature: 0, topP: 0.9, maxTokens: 40 });
    const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('qwen-ts.chat.v1')!));
    expect(stored.conversations[0].messages[1]).toMatchObject({
      role: 'assistant',
      content: expected.outputs[0].text,
    });
    expect(expected.outputs[0].text.length).toBeGreaterThan(60);
    expect(await page.$eval('.message.assistant .meta', (e) => e.textContent)).toMatch(/^40 tokens · /);
    await page.screenshot({ path: path.join(ARTIFACTS, 'chat-model.png') });
    expect(errors).toEqual([]);
    await page.close();
  }, 60_000);
});
