// Engine outputs -> OpenAI response objects: the bodies of finished chat and text completions, the
// Server-Sent Events chunks of streamed ones, ids, usage and logprobs. server.ts only writes them.
import { randomUUID } from 'node:crypto';
import type { CompletionOutput, TokenLogprob } from '../engine/request.js';
import { concatLogprobs, echoedPromptLogprobs } from './echo.js';
import { parseToolCalls, ToolCallStreamParser, type StreamEvent, type ToolCall } from '../engine/tool-calls.js';
import type { QwenTokenizer } from '../tokenizer/index.js';
import type { GenerationRequest } from './protocol.js';

export function requestId(prefix: 'chatcmpl' | 'cmpl'): string {
  return `${prefix}-${randomUUID().replaceAll('-', '')}`;
}

export const unixSeconds = (): number => Math.floor(Date.now() / 1000);

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Prompt tokens served from the prefix cache (as vLLM and OpenAI report them). */
  prompt_tokens_details?: { cached_tokens: number };
}

export const usage = (prompt: number, completion: number, cached?: number): Usage => ({
  prompt_tokens: prompt,
  completion_tokens: completion,
  total_tokens: prompt + completion,
  ...(cached !== undefined ? { prompt_tokens_details: { cached_tokens: cached } } : {}),
});

// JSON has no -Infinity; vLLM reports impossible tokens as -9999.
const finite = (x: number): number => (Number.isFinite(x) ? x : -9999);

// GPT-2 byte-level BPE: each byte is written as one printable character in the vocabulary.
let byteOfChar: Map<number, number> | null = null;
function byteDecoder(): Map<number, number> {
  if (byteOfChar) return byteOfChar;
  const m = new Map<number, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    m.set(printable ? b : 256 + extra++, b);
  }
  return (byteOfChar = m);
}

/** Token text and raw bytes, as OpenAI logprobs report them; cached per tokenizer. */
export class TokenText {
  private cache = new Map<number, { text: string; bytes: number[] }>();
  private decoder = new TextDecoder('utf-8');
  constructor(private tokenizer: QwenTokenizer) {}

  of(id: number): { text: string; bytes: number[] } {
    let r = this.cache.get(id);
    if (r) return r;
    const piece = this.tokenizer.idToToken(id);
    let bytes: number[] | null = null;
    if (piece !== undefined && !this.tokenizer.addedTokens.has(piece)) {
      const map = byteDecoder();
      bytes = [];
      for (const ch of piece) {
        const b = map.get(ch.codePointAt(0)!);
        if (b === undefined) {
          bytes = null;
          break;
        }
        bytes.push(b);
      }
    }
    if (bytes === null) bytes = [...Buffer.from(piece ?? this.tokenizer.decode([id]), 'utf8')];
    r = { text: this.decoder.decode(new Uint8Array(bytes)), bytes };
    if (this.cache.size > 50_000) this.cache.clear();
    this.cache.set(id, r);
    return r;
  }
}

export interface ChatLogprobs {
  content: {
    token: string;
    logprob: number;
    bytes: number[];
    top_logprobs: { token: string; logprob: number; bytes: number[] }[];
  }[];
  refusal: null;
}

export function chatLogprobs(lp: TokenLogprob[], tt: TokenText): ChatLogprobs {
  return {
    content: lp.map((l) => {
      const t = tt.of(l.token);
      return {
        token: t.text,
        logprob: finite(l.logprob),
        bytes: t.bytes,
        top_logprobs: (l.topLogprobs ?? []).map((x) => {
          const u = tt.of(x.token);
          return { token: u.text, logprob: finite(x.logprob), bytes: u.bytes };
        }),
      };
    }),
    refusal: null,
  };
}

export interface CompletionLogprobs {
  tokens: string[];
  /** null: the first token of an echoed prompt (nothing before it). */
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

/** Legacy completions logprobs; offsets count from `offset` (the length of an echoed prompt). */
export function completionLogprobs(lp: TokenLogprob[], tt: TokenText, offset = 0): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = offset;
  for (const l of lp) {
    const t = tt.of(l.token).text;
    out.tokens.push(t);
    out.token_logprobs.push(finite(l.logprob));
    const top: Record<string, number> = {};
    for (const x of l.topLogprobs ?? []) top[tt.of(x.token).text] = finite(x.logprob);
    if (!(t in top)) top[t] = finite(l.logprob); // as vLLM: the chosen token is always listed
    out.top_logprobs.push(top);
    out.text_offset.push(at);
    at += t.length;
  }
  return out;
}

// --- Tool calls in chat responses (issue 11) ---

export type ChatFinishReason = 'stop' | 'length' | 'tool_calls';

/** The assistant message and finish_reason of a finished chat choice. */
export function chatChoiceMessage(
  o: CompletionOutput,
  parseTools: boolean,
): {
  message: { role: 'assistant'; content: string | null; tool_calls?: ToolCall[] };
  finish_reason: ChatFinishReason;
} {
  const base: ChatFinishReason = o.finishReason === 'length' ? 'length' : 'stop';
  if (!parseTools) return { message: { role: 'assistant', content: o.text }, finish_reason: base };
  const parsed = parseToolCalls(o.text);
  if (parsed.toolCalls.length === 0) return { message: { role: 'assistant', content: o.text }, finish_reason: base };
  return {
    message: { role: 'assistant', content: parsed.content, tool_calls: parsed.toolCalls },
    finish_reason: base === 'stop' ? 'tool_calls' : base,
  };
}

/**
 * Streamed chat deltas of one choice: plain text deltas, or with tools, text until a tool-call
 * block starts and then one `tool_calls` delta per call (see ToolCallStreamParser).
 */
export class ChatDeltaStream {
  private readonly parser: ToolCallStreamParser | null;
  constructor(parseTools: boolean) {
    this.parser = parseTools ? new ToolCallStreamParser() : null;
  }

  /** The delta objects for a piece of text (none, one or two). */
  push(text: string): Record<string, unknown>[] {
    if (!this.parser) return text === '' ? [] : [{ content: text }];
    return deltasOf(this.parser.push(text));
  }

  /** Whatever was held back, at the end of the output. */
  finish(): Record<string, unknown>[] {
    return this.parser ? deltasOf(this.parser.finish()) : [];
  }

  finishReason(o: CompletionOutput): ChatFinishReason {
    if (o.finishReason === 'length') return 'length';
    return this.parser && this.parser.callCount > 0 ? 'tool_calls' : 'stop';
  }
}

function deltasOf(ev: StreamEvent): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  if (ev.content !== undefined) out.push({ content: ev.content });
  if (ev.toolCalls) out.push({ tool_calls: ev.toolCalls });
  return out;
}

// --- Response bodies and SSE chunks ---

export const completionFinishReason = (o: CompletionOutput): 'stop' | 'length' =>
  o.finishReason === 'length' ? 'length' : 'stop';

/** One Server-Sent Event carrying a JSON object, and the stream's last event. */
export const sseData = (obj: unknown): string => `data: ${JSON.stringify(obj)}\n\n`;
export const SSE_DONE = 'data: [DONE]\n\n';

/** The body of a finished, non-streamed request; `outputs` sorted by index. */
export function completionBody(
  request: GenerationRequest,
  model: string,
  outputs: CompletionOutput[],
  tokenText: TokenText,
  u: Usage,
): Record<string, unknown> {
  if (request.endpoint === 'chat')
    return {
      id: requestId('chatcmpl'),
      object: 'chat.completion',
      created: unixSeconds(),
      model,
      choices: outputs.map((o) => ({
        index: o.index,
        ...chatChoiceMessage(o, request.parseTools), // message, finish_reason (tool_calls)
        logprobs: request.logprobs !== undefined ? chatLogprobs(o.logprobs ?? [], tokenText) : null,
        stop_reason: o.stopReason ?? null,
      })),
      usage: u,
    };
  const promptOf = (index: number) => request.prompts[Math.floor(index / request.n)];
  return {
    id: requestId('cmpl'),
    object: 'text_completion',
    created: unixSeconds(),
    model,
    choices: outputs.map((o) => {
      const prefix = request.echo ? promptOf(o.index).text : '';
      return {
        index: o.index,
        text: prefix + o.text,
        logprobs:
          request.logprobs === undefined
            ? null
            : o.promptLogprobs // echo: the prompt's tokens first
              ? concatLogprobs(
                  echoedPromptLogprobs(promptOf(o.index).ids, o.promptLogprobs, tokenText),
                  completionLogprobs(o.logprobs ?? [], tokenText, prefix.length),
                )
              : completionLogprobs(o.logprobs ?? [], tokenText, prefix.length),
        finish_reason: completionFinishReason(o),
        stop_reason: o.stopReason ?? null,
      };
    }),
    usage: u,
  };
}

/**
 * The chunks of one streamed request, in order: `opening()` (chat: each choice's role; completions
 * with echo: the prompt), `delta()` per piece of text, `finish()` per choice, `closing()` (the usage
 * chunk when asked for). Every chunk shares one id and timestamp, as OpenAI's do.
 */
export class StreamChunks {
  private readonly chat: boolean;
  private readonly base: Record<string, unknown>;
  private readonly withUsage: { usage?: null };
  // Chat deltas per choice: with tools, <tool_call> blocks become tool_calls deltas.
  private readonly deltas: Map<number, ChatDeltaStream>;

  constructor(
    private readonly request: GenerationRequest,
    model: string,
    private readonly tokenText: TokenText,
  ) {
    this.chat = request.endpoint === 'chat';
    this.base = {
      id: requestId(this.chat ? 'chatcmpl' : 'cmpl'),
      object: this.chat ? 'chat.completion.chunk' : 'text_completion',
      created: unixSeconds(),
      model,
    };
    this.withUsage = request.includeUsage ? { usage: null } : {};
    this.deltas = new Map(request.sequences.map((s) => [s.index, new ChatDeltaStream(request.parseTools)]));
  }

  private chunk(choice: Record<string, unknown>): Record<string, unknown> {
    return { ...this.base, choices: [choice], ...this.withUsage };
  }

  private choice(index: number, content: string | null, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return this.chat
      ? { index, delta: content === null ? {} : { content }, logprobs: null, finish_reason: null, ...extra }
      : { index, text: content ?? '', logprobs: null, finish_reason: null, ...extra };
  }

  private chatDeltas(index: number, list: Record<string, unknown>[]): Record<string, unknown>[] {
    return list.map((delta) => this.chunk({ index, delta, logprobs: null, finish_reason: null }));
  }

  opening(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const s of this.request.sequences) {
      if (this.chat)
        out.push(
          this.chunk({
            index: s.index,
            delta: { role: 'assistant', content: '' },
            logprobs: null,
            finish_reason: null,
          }),
        );
      else if (this.request.echo) out.push(this.chunk(this.choice(s.index, this.request.prompts[s.prompt].text)));
    }
    return out;
  }

  delta(index: number, text: string): Record<string, unknown>[] {
    if (this.chat) return this.chatDeltas(index, this.deltas.get(index)!.push(text));
    return [this.chunk(this.choice(index, text))];
  }

  finish(o: CompletionOutput): Record<string, unknown>[] {
    if (o.finishReason === 'abort') return [];
    let logprobs: unknown = null;
    if (this.request.logprobs !== undefined) {
      // The engine reports text deltas, not tokens: every token's logprobs come with the last chunk.
      logprobs = this.chat
        ? chatLogprobs(o.logprobs ?? [], this.tokenText)
        : completionLogprobs(o.logprobs ?? [], this.tokenText);
    }
    const out = this.chat ? this.chatDeltas(o.index, this.deltas.get(o.index)!.finish()) : [];
    const reason = this.chat ? this.deltas.get(o.index)!.finishReason(o) : completionFinishReason(o);
    out.push(
      this.chunk(this.choice(o.index, null, { logprobs, finish_reason: reason, stop_reason: o.stopReason ?? null })),
    );
    return out;
  }

  closing(u: Usage): Record<string, unknown>[] {
    return this.request.includeUsage ? [{ ...this.base, choices: [], usage: u }] : [];
  }
}
