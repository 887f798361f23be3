// /v1/completions with echo and logprobs: the prompt's tokens, with their log-probabilities
// (promptLogprobs), in front of the completion's, as OpenAI's legacy completions return them:
// the first token has no log-probability (null), as in OpenAI's and vLLM's answers.
import type { PromptLogprob } from '../engine/prompt-logprobs.js';
import type { CompletionLogprobs, TokenText } from './format.js';

/** Prompt entries for completionLogprobs' lists; offsets count from 0 in the echoed prompt. */
export function echoedPromptLogprobs(
  promptIds: number[],
  lp: (PromptLogprob | null)[],
  tt: TokenText,
): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = 0;
  promptIds.forEach((id, i) => {
    const t = tt.of(id).text;
    const l = lp[i] ?? null;
    out.tokens.push(t);
    out.text_offset.push(at);
    at += t.length;
    if (l === null) {
      out.token_logprobs.push(null);
      out.top_logprobs.push(null);
      return;
    }
    out.token_logprobs.push(Math.max(l.logprob, -9999));
    const top: Record<string, number> = {};
    for (const x of l.topLogprobs) top[tt.of(x.token).text] = Math.max(x.logprob, -9999);
    if (!(t in top)) top[t] = Math.max(l.logprob, -9999); // the prompt's token is always listed
    out.top_logprobs.push(top);
  });
  return out;
}

/** The prompt's entries, then the completion's. */
export function concatLogprobs(a: CompletionLogprobs, b: CompletionLogprobs): CompletionLogprobs {
  return {
    tokens: [...a.tokens, ...b.tokens],
    token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
    top_logprobs: [...a.top_logprobs, ...b.top_logprobs],
    text_offset: [...a.text_offset, ...b.text_offset],
  };
}
