// Prompt log-probabilities on the tiny synthetic Qwen3 model (the real 151,936-token
// vocabulary) against the float64 numpy goldens of tools/make_goldens.py: at every position, the
// top token is the golden argmax with log-probability max - logsumexp, and a prompt token among the
// golden's 512 columns has log-probability logit - logsumexp, within 1e-4.
import { afterAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { makeTempModel, readGolden, removeDir } from './helpers/models.js';

const TOLERANCE = 1e-4;
const dirs: string[] = [];
afterAll(() => dirs.forEach(removeDir));

for (const preset of ['tiny-qwen3']) {
  describe(`promptLogprobs on ${preset}`, () => {
    it(`every position against numpy float64 log_softmax within ${TOLERANCE}`, async () => {
      const g = readGolden(preset);
      const dir = makeTempModel({ preset, seed: g.model.seed, overrides: g.model.overrides ?? undefined });
      dirs.push(dir);
      const llm = await LLM.load(dir, { threads: 1, maxBatchTokens: 32, progressBar: false });
      try {
        let worst = 0,
          checkedTokens = 0;
        for (const p of g.prompts) {
          const [r] = await llm.generate({ promptTokenIds: p.tokenIds }, { promptLogprobs: 1, maxTokens: 0 });
          const lp = r.promptLogprobs!;
          expect(lp.length).toBe(p.tokenIds.length);
          expect(lp[0]).toBeNull();
          for (let i = 1; i < lp.length; i++) {
            const row = i - 1; // logits at position i - 1 score token i
            const top = lp[i]!.topLogprobs[0];
            expect(top.token).toBe(p.argmax[row]);
            worst = Math.max(worst, Math.abs(top.logprob - (p.max[row] - p.logsumexp[row])));
            const col = g.columns.indexOf(p.tokenIds[i]);
            if (col >= 0) {
              worst = Math.max(worst, Math.abs(lp[i]!.logprob - (p.logits[row][col] - p.logsumexp[row])));
              checkedTokens++;
            }
          }
        }
        expect(checkedTokens).toBeGreaterThan(0);
        expect(worst).toBeLessThanOrEqual(TOLERANCE);
      } finally {
        await llm.close();
      }
    });
  });
}
