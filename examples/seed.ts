// The example this project started from (vLLM's LLM.chat with SamplingParams), in TypeScript:
//   node dist/examples/seed.js [MODEL_DIR]
// Without MODEL_DIR it uses the synthetic Qwen2.5-0.5B (random weights) that `qwen-ts generate
// --preset qwen2.5-0.5b` uses, made once in the same cache, so the text is meaningless but the
// speed is real. The load shows a progress line on a terminal; the answer is streamed as it comes.
import { LLM, ProgressLine, type ChatMessage } from 'qwen-ts';
import { ensureSyntheticModel } from 'qwen-ts/synthetic';

let modelDir = process.argv[2];
if (!modelDir) {
  const line = new ProgressLine('making the model');
  modelDir = ensureSyntheticModel('qwen2.5-0.5b', {
    onMaking: (dir) => console.error(`making a synthetic Qwen2.5-0.5B (random weights) in ${dir}, once ...`),
    onProgress: (done, total) => (done < total ? line.update(done, total) : line.end()),
  }).dir;
}

const llm = await LLM.load(modelDir);
const messages: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: '跟我讲讲股市运行的逻辑' },
];
const params = { temperature: 0.7, topP: 0.8, repetitionPenalty: 1.05, maxTokens: 512 };
// llm.chat(messages, params) returns the finished outputs, as vLLM's; stream() shows the text as it comes.
let text = '';
for await (const delta of llm.stream(messages, params, {
  onFinish: (output, m) =>
    console.error(
      `\n${output.tokenIds.length} tokens (${output.finishReason}), prefill ${m.prefillTokensPerSec.toFixed(1)} tok/s, decode ${m.decodeTokensPerSec.toFixed(1)} tok/s`,
    ),
})) {
  process.stdout.write(delta);
  text += delta;
}
console.log(`\nPrompt: ${JSON.stringify(messages.at(-1)!.content)}, Generated text: ${JSON.stringify(text)}`);
await llm.close();
