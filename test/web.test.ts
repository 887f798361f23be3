// The chat page of `qwen-ts serve` in a real headless Chromium (Debian's chromium, driven by
// puppeteer-core): it streams the bundled stories260K's answer (equal to llama2.c's run.c text when
// greedy), Stop ends an answer, a reload keeps the conversation, and hostile model text stays text.
// Screenshots go to test-artifacts/ (look at them).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { createServer, type OpenAIServer } from '../src/server/server.js';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
// CI installs Chromium (.ci/run): there a missing browser is a failure, not a skip.
const RUN = CHROMIUM !== undefined || process.env.CI === 'true';
const MODEL = fileURLToPath(new URL('../assets/stories260K', import.meta.url));
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));
const EXPECTED = fs.readFileSync(
  fileURLToPath(new URL('./fixtures/stories260K/once-upon-a-time.txt', import.meta.url)),
  'utf8',
);
const RUN_C_POSITIONS = 256;

let llm: LLM;
let app: OpenAIServer;
let base: string;
let browser: Browser;
/** Requests whose generation the server aborted (the client went away): the Stop test reads it. */
const aborted: string[] = [];

beforeAll(async () => {
  if (!RUN) return;
  llm = await LLM.load(MODEL, { threads: 1 });
  app = createServer(llm, { modelName: 'stories260K', log: false });
  const addr = await app.listen(0, '127.0.0.1');
  base = `http://127.0.0.1:${addr.port}`;
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await app?.close();
  await llm?.close();
});

async function openPage(): Promise<Page> {
  const page = await browser.newPage();
  await page.setViewport({ width: 1100, height: 760 });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push((e as Error).message));
  (page as Page & { errors: string[] }).errors = errors;
  // Every test starts with no conversations (the pages of one browser share localStorage).
  await page.goto(base + '/web/config.json');
  await page.evaluate(() => localStorage.clear());
  await page.goto(base + '/');
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

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

async function sendAndWait(page: Page, text: string): Promise<void> {
  await page.type('#input', text);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => !(document.querySelector('#send') as HTMLButtonElement).disabled, {
    timeout: 60_000,
  });
}

function stored(page: Page): Promise<{ conversations: { messages: { role: string; content: string }[] }[] }> {
  return page.evaluate(() => JSON.parse(localStorage.getItem('qwen-ts.chat.v1')!));
}

describe.runIf(RUN)('chat page in headless Chromium', () => {
  it('serves the page with a strict Content Security Policy; --no-webui turns it off', async () => {
    const r = await fetch(base + '/');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(r.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await r.text()).toContain('<script type="module" src="/web/chat.js">');
    const config = await (await fetch(base + '/web/config.json')).json();
    expect(config).toMatchObject({ model: 'stories260K', chatTemplate: false, contextLength: 512, auth: false });
    const off = createServer(llm, { modelName: 'm', log: false, webui: false });
    const addr = await off.listen(0, '127.0.0.1');
    try {
      expect((await fetch(`http://127.0.0.1:${addr.port}/`)).status).toBe(404);
    } finally {
      await off.close();
    }
  });

  it("sends a message and shows the streamed answer: greedy, it is run.c's text", async () => {
    const page = await openPage();
    const prompt = 'Once upon a time';
    const maxTokens = RUN_C_POSITIONS + 1 - llm.tokenizer.encode(prompt).length;
    await setField(page, 'temperature', '0');
    await setField(page, 'max-tokens', String(maxTokens));
    await sendAndWait(page, prompt);
    const { conversations } = await stored(page);
    const answer = conversations[0].messages[1];
    expect(answer.role).toBe('assistant');
    expect(prompt + answer.content + '\n').toBe(EXPECTED);
    // Rendered: paragraphs and line breaks, the same characters.
    const shown = await page.$eval('.message.assistant .body', (e) => e.textContent);
    expect(shown).toBe(answer.content.replace(/\n/g, ''));
    const meta = await page.$eval('.message.assistant .meta', (e) => e.textContent);
    expect(meta).toMatch(new RegExp(`^${maxTokens} tokens · [\\d.]+ tok/s · first token \\d+ ms · 0 of 5 prompt`));
    await page.screenshot({ path: path.join(ARTIFACTS, 'chat-answer.png') });
    // A reload keeps the conversation.
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]');
    expect(await page.$$eval('.message', (els) => els.map((e) => e.className))).toEqual([
      'message user',
      'message assistant',
    ]);
    expect(await page.$eval('.message.assistant .body', (e) => e.textContent)).toBe(shown);
    expect(await page.$eval('#conversations li.active', (e) => e.textContent)).toContain(prompt);
    expect((page as Page & { errors: string[] }).errors).toEqual([]);
    await page.close();
  });

  it('shows token probabilities and top alternatives on hover', async () => {
    const page = await openPage();
    await setField(page, 'temperature', '0');
    await setField(page, 'max-tokens', '8');
    await page.$eval('#probs', (el) => {
      (el as HTMLInputElement).checked = true;
      el.dispatchEvent(new Event('change'));
    });
    await sendAndWait(page, 'Tom and his dog');
    await page.click('.meta button.link');
    const tokens = await page.$$('.token');
    expect(tokens).toHaveLength(8);
    await tokens[0].hover();
    const tip = await page.$eval('#tooltip', (e) => ({ hidden: (e as HTMLElement).hidden, rows: e.children.length }));
    expect(tip.hidden).toBe(false);
    expect(tip.rows).toBe(6); // the token, then its 5 alternatives
    const head = await page.$eval('#tooltip .head', (e) => e.textContent);
    expect(head).toMatch(/p = \d+\.\d%$/);
    await page.screenshot({ path: path.join(ARTIFACTS, 'chat-probabilities.png') });
    await page.close();
  });

  it('Stop ends the answer being written and frees the server-side generation', async () => {
    // A slow model: the real engine's deltas, released one every 40 ms.
    const realSubmit = llm.submit.bind(llm);
    llm.submit = (ids, params, hooks = {}) =>
      new Promise((resolve, reject) => {
        const queue: string[] = [];
        let result: Awaited<ReturnType<LLM['submit']>> | undefined;
        const timer = setInterval(() => {
          if (hooks.signal?.aborted) {
            clearInterval(timer);
            aborted.push('aborted');
            reject(hooks.signal.reason);
          } else if (queue.length) hooks.onDelta?.(queue.shift()!);
          else if (result) {
            clearInterval(timer);
            resolve(result);
          }
        }, 40);
        realSubmit(ids, params, { ...hooks, signal: undefined, onDelta: (d) => queue.push(d) }).then(
          (r) => (result = r),
          (e) => {
            clearInterval(timer);
            reject(e);
          },
        );
      });
    try {
      const page = await openPage();
      await setField(page, 'temperature', '0');
      await setField(page, 'max-tokens', '200');
      await page.type('#input', 'Once upon a time');
      await page.keyboard.press('Enter');
      await page.waitForFunction(
        () => (document.querySelector('.message.assistant .body')?.textContent ?? '').length > 20,
      );
      expect(await page.$eval('#stop', (e) => (e as HTMLElement).hidden)).toBe(false);
      await page.click('#stop');
      await page.waitForFunction(() => !(document.querySelector('#send') as HTMLButtonElement).disabled);
      const meta = await page.$eval('.message.assistant .meta', (e) => e.textContent);
      expect(meta).toContain('stopped');
      const { conversations } = await stored(page);
      const answer = conversations[0].messages[1].content;
      expect(answer.length).toBeGreaterThan(20);
      expect(EXPECTED.startsWith('Once upon a time' + answer)).toBe(true);
      expect(EXPECTED.length - 'Once upon a time'.length - answer.length).toBeGreaterThan(100);
      await expect.poll(() => aborted.length, { timeout: 5000 }).toBe(1);
      await page.close();
    } finally {
      llm.submit = realSubmit;
    }
  });

  it('a hostile answer is shown as text: no element is made, no script runs', async () => {
    const page = await openPage();
    const hostile =
      'Look: <img src=x onerror="window.pwned=1"> <script>window.pwned=2</script>\n' +
      '```html\n<img src=y onerror="window.pwned=3">\n```\n' +
      '[click](javascript:window.pwned=4) **bold** `<b>code</b>`';
    await page.evaluate((content) => {
      const conversation = {
        id: 'c1',
        title: 'hostile',
        created: 0,
        messages: [
          { role: 'user', content: '<img src=z onerror="window.pwned=5">' },
          { role: 'assistant', content },
        ],
      };
      localStorage.setItem(
        'qwen-ts.chat.v1',
        JSON.stringify({ conversations: [conversation], current: 'c1', settings: {}, apiKey: '' }),
      );
    }, hostile);
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]');
    await new Promise((r) => setTimeout(r, 300)); // time for an image error handler to fire, if one existed
    expect(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned)).toBeUndefined();
    expect(await page.$$eval('#messages img, #messages script', (els) => els.length)).toBe(0);
    expect(await page.$$eval('#messages a', (els) => els.length)).toBe(0); // only http(s) links become links
    const text = await page.$eval('.message.assistant .body', (e) => e.textContent);
    expect(text).toContain('<img src=x onerror="window.pwned=1">');
    expect(await page.$eval('.message.assistant pre code', (e) => e.textContent)).toBe(
      '<img src=y onerror="window.pwned=3">',
    );
    expect(await page.$eval('.message.assistant strong', (e) => e.textContent)).toBe('bold');
    expect(await page.$eval('.message.user .body', (e) => e.textContent)).toBe('<img src=z onerror="window.pwned=5">');
    await page.screenshot({ path: path.join(ARTIFACTS, 'chat-hostile.png') });
    await page.close();
  });

  it('asks for the API key when the server needs one, then works with it', async () => {
    const keyed = createServer(llm, { modelName: 'stories260K', log: false, apiKey: 'sekret' });
    const addr = await keyed.listen(0, '127.0.0.1');
    try {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${addr.port}/`);
      await page.waitForSelector('body[data-ready="true"]');
      expect(await page.$eval('#banner', (e) => e.textContent)).toContain('API key');
      await setField(page, 'api-key', 'sekret');
      await setField(page, 'temperature', '0');
      await setField(page, 'max-tokens', '5');
      await sendAndWait(page, 'Tom and his dog');
      const { conversations } = await stored(page);
      expect(conversations[0].messages[1].content.length).toBeGreaterThan(0);
      expect(await page.$$eval('.body.error', (els) => els.length)).toBe(0);
      await page.close();
    } finally {
      await keyed.close();
    }
  });
});
