// The demo page of `qwen-ts serve --demo`: loads a model into this tab with qwen-ts/browser (the
// bundled stories260K, or the folder or .gguf file `?model=URL` names) and streams its text: a
// chat answer when the model has a chat template, else a continuation. Output is inserted as
// text, never as HTML.
import { LLM } from '/qwen-ts/index.js';

const $ = (id) => document.getElementById(id);
const status = (text, warn = false) => {
  $('status').textContent = text;
  $('status').className = warn ? 'status warn' : 'status';
};

const asked = new URLSearchParams(location.search).get('model') || '/models/stories260K/';
let modelUrl;
try {
  modelUrl = new URL(asked, location.href);
} catch {
  status(`could not load the model: ${JSON.stringify(asked)} is not a URL`, true);
  throw new Error(`not a URL: ${asked}`);
}
const lastPart = modelUrl.pathname.replace(/\/+$/, '').split('/').pop();
let modelName = lastPart;
try {
  modelName = decodeURIComponent(lastPart);
} catch {
  // keep it as written
}
$('model-url').value = modelUrl.pathname === '/models/stories260K/' ? '' : modelUrl.href;
$('model-name').textContent = modelName;

const t0 = performance.now();
let llm;
try {
  llm = await LLM.load(modelUrl.href, {
    onProgress: (p) => {
      if (p.totalBytes > 0) $('progress').style.width = `${(100 * p.doneBytes) / p.totalBytes}%`;
      const mb = (n) => (n / 1e6).toFixed(1);
      status(
        `loading ${modelName}: ${p.stage}${p.totalBytes > 0 ? ` ${mb(p.doneBytes)} of ${mb(p.totalBytes)} MB` : ''}`,
      );
    },
  });
} catch (e) {
  status(`could not load the model: ${e.message}`, true);
  throw e;
}
$('progress').style.width = '100%';
const threads = llm.model.threads;
const isolation = crossOriginIsolated ? 'cross-origin isolated' : 'not cross-origin isolated: one thread';
status(
  `${modelName} loaded in ${((performance.now() - t0) / 1000).toFixed(2)} s; ${threads} thread${threads === 1 ? '' : 's'} (${isolation})`,
  !crossOriginIsolated,
);
window.qwenTs = { llm, threads };
// A chat model answers the prompt as a user message; stories260K (no template) continues it.
const chat = llm.tokenizer.chatTemplate !== null;
if (chat) $('prompt').value = 'Tell me a short story.';
$('generate').disabled = false;

let controller = null;
$('form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('output').textContent = '';
  $('metrics').textContent = '';
  $('generate').disabled = true;
  $('stop').disabled = false;
  controller = new AbortController();
  const prompt = $('prompt').value;
  const params = { temperature: Number($('temperature').value), maxTokens: Number($('max-tokens').value) };
  $('output').textContent = chat ? '' : prompt;
  try {
    for await (const delta of llm.stream(chat ? [{ role: 'user', content: prompt }] : prompt, params, {
      signal: controller.signal,
      onFinish: (output, m) => {
        $('metrics').textContent =
          `${output.tokenIds.length} tokens, ${m.decodeTokensPerSec.toFixed(0)} tokens/s, first token after ${(1000 * m.timeToFirstToken).toFixed(0)} ms (${output.finishReason})`;
      },
    }))
      $('output').textContent += delta;
  } catch (e) {
    if (e.name !== 'AbortError') $('metrics').textContent = `error: ${e.message}`;
  } finally {
    $('generate').disabled = false;
    $('stop').disabled = true;
    document.body.dataset.done = String(Number(document.body.dataset.done ?? 0) + 1);
  }
});
$('stop').addEventListener('click', () => controller?.abort());
