// Tool calls in Qwen2.5's output, parsed as vLLM's `hermes` parser does: each
// `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` block becomes an OpenAI tool call
// (`function.arguments` a JSON string), `content` is the text before the first block (null if
// empty). A block whose JSON is malformed turns the whole output back into plain content. A block
// cut off at the end (max_tokens) is parsed as far as it goes: once its name is complete it is a
// call, with the arguments text written so far.
//
// ToolCallStreamParser does the same on text deltas: text streams until a block starts (a tail
// that could be the start of "<tool_call>" is held back), then each block is sent whole as one
// tool-call delta with its index when it closes, so the streamed calls equal the non-streamed
// ones. (Streaming cannot take back text already sent: a malformed block there is sent as text.)
import type { StructuredOutput, ToolFunctionSpec } from '../sampler/structured/index.js';

export const TOOL_CALL_START = '<tool_call>';
export const TOOL_CALL_END = '</tool_call>';

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export interface ParsedOutput {
  /** Text before the first tool call (all of it when there is none); null when empty and there are calls. */
  content: string | null;
  toolCalls: ToolCall[];
}

export const newToolCallId = (): string => `call_${globalThis.crypto.randomUUID().replaceAll('-', '').slice(0, 24)}`;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** One block's inner text -> a call; null if malformed. `closed`: false for a block cut at the end. */
export function parseBlock(inner: string, closed: boolean): ToolCall | null {
  let value: unknown;
  try {
    value = JSON.parse(inner);
  } catch {
    if (closed) return null;
    // Cut off: the name must be complete; the arguments are what was written of them.
    const m = /^\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*(?:,\s*"arguments"\s*:\s*)?/.exec(inner);
    if (!m) return null;
    const args = m[0].includes('"arguments"') ? inner.slice(m[0].length).trimEnd() : '';
    return { id: newToolCallId(), type: 'function', function: { name: JSON.parse(m[1]) as string, arguments: args } };
  }
  if (!isObject(value) || typeof value.name !== 'string') return null;
  const args = value.arguments ?? value.parameters ?? {};
  return {
    id: newToolCallId(),
    type: 'function',
    function: { name: value.name, arguments: typeof args === 'string' ? args : JSON.stringify(args) },
  };
}

/** Splits a finished output into content and tool calls (see the top of the file). */
export function parseToolCalls(text: string): ParsedOutput {
  const first = text.indexOf(TOOL_CALL_START);
  if (first < 0) return { content: text, toolCalls: [] };
  const calls: ToolCall[] = [];
  let at = first;
  while (at >= 0) {
    const from = at + TOOL_CALL_START.length;
    const end = text.indexOf(TOOL_CALL_END, from);
    const inner = end < 0 ? text.slice(from) : text.slice(from, end);
    const call = parseBlock(inner, end >= 0);
    if (call) calls.push(call);
    else if (end >= 0) return { content: text, toolCalls: [] }; // malformed: plain content, as vLLM
    if (end < 0) break;
    at = text.indexOf(TOOL_CALL_START, end + TOOL_CALL_END.length);
  }
  if (calls.length === 0) return { content: text, toolCalls: [] };
  const content = text.slice(0, first);
  return { content: content === '' ? null : content, toolCalls: calls };
}

export interface ToolCallDelta {
  index: number;
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export interface StreamEvent {
  content?: string;
  toolCalls?: ToolCallDelta[];
}

/** Longest suffix of `s` that is a proper prefix of `tag`. */
function partialTagLength(s: string, tag: string): number {
  for (let k = Math.min(tag.length - 1, s.length); k > 0; k--) if (s.endsWith(tag.slice(0, k))) return k;
  return 0;
}

export class ToolCallStreamParser {
  private buf = '';
  /** text: before any block; call: inside a block; between: after a block. */
  private mode: 'text' | 'call' | 'between' = 'text';
  private calls = 0;

  /** Number of tool calls sent so far. */
  get callCount(): number {
    return this.calls;
  }

  push(delta: string): StreamEvent {
    this.buf += delta;
    const ev: StreamEvent = {};
    for (;;) {
      if (this.mode === 'call') {
        const end = this.buf.indexOf(TOOL_CALL_END);
        if (end < 0) break;
        const inner = this.buf.slice(0, end);
        this.buf = this.buf.slice(end + TOOL_CALL_END.length);
        const call = parseBlock(inner, true);
        if (call) this.addCall(ev, call);
        else addContent(ev, TOOL_CALL_START + inner + TOOL_CALL_END);
        this.mode = 'between';
        continue;
      }
      const start = this.buf.indexOf(TOOL_CALL_START);
      if (start >= 0) {
        if (this.mode === 'text') addContent(ev, this.buf.slice(0, start));
        this.buf = this.buf.slice(start + TOOL_CALL_START.length);
        this.mode = 'call';
        continue;
      }
      // No block starts here: stream text (as vLLM, text between and after blocks is dropped).
      const hold = partialTagLength(this.buf, TOOL_CALL_START);
      if (this.mode === 'text') addContent(ev, this.buf.slice(0, this.buf.length - hold));
      this.buf = this.buf.slice(this.buf.length - hold);
      break;
    }
    return ev;
  }

  /** End of output: held-back text, or the call of a block cut off at the end. */
  finish(): StreamEvent {
    const ev: StreamEvent = {};
    if (this.mode === 'text') addContent(ev, this.buf);
    else if (this.mode === 'call') {
      const call = parseBlock(this.buf, false);
      if (call) this.addCall(ev, call);
      else if (this.calls === 0) addContent(ev, TOOL_CALL_START + this.buf); // as non-streamed: plain text
    }
    this.buf = '';
    return ev;
  }

  private addCall(ev: StreamEvent, call: ToolCall): void {
    (ev.toolCalls ??= []).push({ index: this.calls++, ...call });
  }
}

function addContent(ev: StreamEvent, text: string): void {
  if (text !== '') ev.content = (ev.content ?? '') + text;
}

/** OpenAI's tool_choice. */
export type ToolChoice = 'none' | 'auto' | 'required' | { type?: 'function'; function: { name: string } };

/** The functions of OpenAI `tools` ([{type: "function", function: {name, parameters}}]). */
export function toolFunctions(tools: readonly object[]): ToolFunctionSpec[] {
  return tools.map((t) => {
    const fn = (t as { function?: { name?: unknown; parameters?: unknown } }).function;
    return { name: String(fn?.name), ...(isObject(fn?.parameters) ? { parameters: fn.parameters } : {}) };
  });
}

/**
 * The constraint that enforces tool_choice "required" (one or more calls of any tool) or a named
 * function (exactly one call of it); undefined for "auto" and "none". Throws a RangeError when
 * the named function is not among the tools.
 */
export function toolChoiceConstraint(
  tools: readonly object[],
  choice: ToolChoice | undefined,
): StructuredOutput | undefined {
  if (choice === undefined || choice === 'auto' || choice === 'none') return undefined;
  const fns = toolFunctions(tools);
  if (choice === 'required') return { type: 'toolCall', functions: fns, multiple: true };
  const name = choice.function.name;
  const fn = fns.find((f) => f.name === name);
  if (!fn) throw new RangeError(`tool_choice names the function "${name}", which is not in tools`);
  return { type: 'toolCall', functions: [fn] };
}
