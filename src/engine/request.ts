// One generation request as the engine tracks it: tokens, sampler, incremental text, stops.
import type { PoolingRequest } from '../model/pooling.js';
import type { Sampler, TokenLogprob } from '../sampler/index.js';
import type { StreamDecoder } from '../tokenizer/index.js';
import type { Proposer } from './speculation/gate.js';
import type { ToolCall } from './tool-calls.js';
import type { PromptLogprob } from './prompt-logprobs.js';

export type FinishReason = 'stop' | 'length' | 'abort';

export type { TokenLogprob };

export interface RequestMetrics {
  /** Seconds from arrival to the first generated token. */
  timeToFirstToken: number;
  /** Seconds spent waiting for a free slot before the prefill started. */
  queueSeconds: number;
  prefillTokensPerSec: number;
  /** Generated tokens after the first, per second of decoding. */
  decodeTokensPerSec: number;
  totalSeconds: number;
  /** Prompt tokens whose KV came from the prefix cache (vLLM's num_cached_tokens). */
  cachedTokens: number;
  /** Speculative decoding: tokens proposed and verified, and how many the model accepted (0 without). */
  specDraftTokens: number;
  specAcceptedTokens: number;
}

export interface CompletionOutput {
  index: number;
  text: string;
  tokenIds: number[];
  finishReason: FinishReason;
  /** The stop string or stop token id that ended generation, if any. */
  stopReason?: string | number;
  logprobs?: TokenLogprob[];
  /** promptLogprobs: each prompt token's log-probability (null for the first). */
  promptLogprobs?: (PromptLogprob | null)[];
  /** LLM.chat with tools: the tool calls parsed from `text` (see tool-calls.ts); absent when there are none. */
  toolCalls?: ToolCall[];
}

/** What a new sequence is made from; every other field of a Sequence starts empty. */
export interface SequenceInit {
  id: number;
  promptIds: number[];
  sampler: Sampler;
  decoder: StreamDecoder;
  maxTokens: number;
  stop: string[];
  stopTokenIds: Set<number>;
  eosIds: Set<number>;
  wantLogprobs: boolean;
  /** Propose tokens for speculative decoding, first one with a proposal wins; none: one token per step. */
  proposers: Proposer[];
  /** Top log-probabilities per prompt position (promptLogprobs), -1: prompt log-probabilities off. */
  promptLogprobs?: number;
  onDelta?: (delta: string, seq: Sequence) => void;
  resolve: (seq: Sequence) => void;
  reject: (err: unknown) => void;
  /** performance.now() when the request arrived. */
  arrival: number;
  /** An embedding or scoring request: the prompt is read, pooled, and the sequence ends (no token sampled). */
  pooling?: PoolingRequest;
}

/** Internal state of one sequence being generated (in the engine thread). */
export class Sequence {
  readonly id: number;
  readonly promptIds: number[];
  outputIds: number[] = [];
  readonly sampler: Sampler;
  readonly decoder: StreamDecoder;
  readonly maxTokens: number;
  readonly stop: string[];
  readonly stopTokenIds: Set<number>;
  readonly eosIds: Set<number>;
  readonly wantLogprobs: boolean;
  logprobs: TokenLogprob[] = [];
  readonly promptLogprobs: number;
  /** promptLogprobs: one entry per prompt token, null for the first (nothing precedes it). */
  promptLogprobsOut: (PromptLogprob | null)[] = [];
  /** Full text so far, and how much of it was handed to onDelta (text that might begin a stop string is held back). */
  text = '';
  emitted = 0;
  slot = -1; // KV cache slot, -1 while waiting
  /** Positions whose keys and values are in the cache (prompt chunks read so far, then decoded tokens). */
  computed = 0;
  /** Prompt positions taken from the prefix cache. */
  cachedTokens = 0;
  readonly proposers: Proposer[];
  /** Tokens proposed this step (verified by the rows after the sequence's next-token row), and by whom. */
  draft: number[] = [];
  draftBy: Proposer | null = null;
  /** Proposed tokens verified, and how many of them the target model accepted. */
  specDraftTokens = 0;
  specAcceptedTokens = 0;
  /** Set when the sequence failed: it is rejected with this instead of resolved. */
  error?: unknown;
  finishReason?: FinishReason;
  stopReason?: string | number;
  readonly onDelta?: (delta: string, seq: Sequence) => void;
  readonly resolve: (seq: Sequence) => void;
  readonly reject: (err: unknown) => void;
  readonly arrival: number;
  prefillStart = 0;
  firstToken = 0;
  finished = 0;
  readonly pooling: PoolingRequest | null;
  /** A pooling request's result: the pooled hidden state (summed so far for a mean), or the requested logits. */
  pooled: Float64Array | null = null;

  constructor(init: SequenceInit) {
    this.id = init.id;
    this.promptIds = init.promptIds;
    this.sampler = init.sampler;
    this.decoder = init.decoder;
    this.maxTokens = init.maxTokens;
    this.stop = init.stop;
    this.stopTokenIds = init.stopTokenIds;
    this.eosIds = init.eosIds;
    this.wantLogprobs = init.wantLogprobs;
    this.proposers = init.proposers;
    this.promptLogprobs = init.promptLogprobs ?? -1;
    if (this.promptLogprobs >= 0) this.promptLogprobsOut.push(null);
    this.onDelta = init.onDelta;
    this.resolve = init.resolve;
    this.reject = init.reject;
    this.arrival = init.arrival;
    this.pooling = init.pooling ?? null;
  }
}

/** Append a token's text; returns true when a stop string was found (text is cut before it). */
export function appendText(seq: Sequence, delta: string): boolean {
  if (delta === '') return false;
  const from = Math.max(0, seq.text.length - maxStopLength(seq) + 1);
  seq.text += delta;
  for (const s of seq.stop) {
    const at = seq.text.indexOf(s, from);
    if (at >= 0) {
      seq.text = seq.text.slice(0, at);
      seq.stopReason = s;
      return true;
    }
  }
  return false;
}

function maxStopLength(seq: Sequence): number {
  let n = 0;
  for (const s of seq.stop) n = Math.max(n, s.length);
  return n;
}

/**
 * Text that can be streamed now: everything once finished; before that, all but a tail that could
 * still grow into a stop string (that tail is held back, so a stop string never leaks to a stream).
 */
export function takeStreamable(seq: Sequence): string {
  let hold = 0;
  if (!seq.finishReason) {
    const text = seq.text;
    for (const s of seq.stop) {
      for (let k = Math.min(s.length - 1, text.length - seq.emitted); k > hold; k--) {
        if (text.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
  }
  const end = Math.max(seq.emitted, seq.text.length - hold);
  const out = seq.text.slice(seq.emitted, end);
  seq.emitted = end;
  return out;
}

export function metricsOf(seq: Sequence): RequestMetrics {
  const s = (ms: number) => ms / 1000;
  const prefill = s(seq.firstToken - seq.prefillStart);
  const decode = s(seq.finished - seq.firstToken);
  return {
    timeToFirstToken: s(seq.firstToken - seq.arrival),
    queueSeconds: s(seq.prefillStart - seq.arrival),
    prefillTokensPerSec: prefill > 0 ? (seq.promptIds.length - seq.cachedTokens) / prefill : 0,
    decodeTokensPerSec: decode > 0 && seq.outputIds.length > 1 ? (seq.outputIds.length - 1) / decode : 0,
    totalSeconds: s(seq.finished - seq.arrival),
    cachedTokens: seq.cachedTokens,
    specDraftTokens: seq.specDraftTokens,
    specAcceptedTokens: seq.specAcceptedTokens,
  };
}
