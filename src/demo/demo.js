// The demo page of `qwen-ts serve --demo`: loads stories260K into this tab with qwen-ts/browser and
// streams a story. The output is inserted as text, never as HTML.
import { LLM } from '/qwen-ts/index.js';

const $ = (id) => document.getElementById(id);
const status = (text, warn = false) => {
  $('status').textContent = text;
  $('status').className = warn ? 'status warn' : 'status';
};

const t0 = performance.now();
let llm;
try {
  llm = await LLM.load(new URL('/models/stories260K/', location.href).href, {
    onProgress: (p) => {
      if (p.totalBytes > 0) $('progress').style.width = `${(100 * p.doneBytes) / p.totalBytes}%`;
      status(`loading: ${p.stage}`);
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
  `stories260K loaded in ${((performance.now() - t0) / 1000).toFixed(2)} s; ${threads} thread${threads === 1 ? '' : 's'} (${isolation})`,
  !crossOriginIsolated,
);
window.qwenTs = { llm, threads };
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
  $('output').textContent = prompt;
  try {
    for await (const delta of llm.stream(prompt, params, {
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
