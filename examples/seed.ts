// The example this project started from, in TypeScript:
//   node dist/examples/seed.js [MODEL_DIR]
// Without MODEL_DIR it makes (once) a synthetic Qwen2.5-0.5B with random weights in .cache/, so the
// text is meaningless but the speed is real.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LLM } from 'qwen-ts';
import { writeSyntheticModel } from 'qwen-ts/synthetic';

let modelDir = process.argv[2];
if (!modelDir) {
  modelDir = path.resolve('.cache/models/qwen2.5-0.5b-seed0');
  if (!fs.existsSync(path.join(modelDir, 'model.safetensors'))) {
    console.error(`making a synthetic Qwen2.5-0.5B (random weights) in ${modelDir} ...`);
    writeSyntheticModel(modelDir, { preset: 'qwen2.5-0.5b', seed: 0 });
  }
}

const llm = await LLM.load(modelDir);
const messages = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: '跟我讲讲股市运行的逻辑' },
];
const outputs = await llm.chat(messages, { temperature: 0.7, topP: 0.8, repetitionPenalty: 1.05, maxTokens: 512 });
for (const output of outputs) {
  console.log(`Prompt: ${JSON.stringify(output.prompt)}, Generated text: ${JSON.stringify(output.outputs[0].text)}`);
  const m = output.metrics;
  console.log(
    `${output.outputs[0].tokenIds.length} tokens (${output.outputs[0].finishReason}), prefill ${m.prefillTokensPerSec.toFixed(1)} tok/s, decode ${m.decodeTokensPerSec.toFixed(1)} tok/s`,
  );
}
await llm.close();
