// Chat templates: render a list of messages into the prompt string the model was trained on.
//
// The template is the Jinja source stored in tokenizer_config.json ("chat_template");
// @huggingface/jinja renders it the way transformers' apply_chat_template does. We only add
// input validation (a bad message should fail with the field's name, not deep inside Jinja)
// and vLLM's one bit of pre-processing: tool-call arguments given as a JSON string (the OpenAI
// wire format) are parsed into an object, because templates do `arguments | tojson`.

import { Template } from '@huggingface/jinja';

export interface ToolCall {
  id?: string;
  type?: string;
  function: { name: string; arguments: string | Record<string, unknown> };
  [key: string]: unknown;
}

/** The roles chat templates render (OpenAI's and vLLM's, as Qwen2.5's template knows them). */
export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';

export interface ChatMessage {
  role: ChatRole;
  /** May be null/absent only for an assistant message that carries tool_calls. */
  content: string | null;
  tool_calls?: ToolCall[];
  [key: string]: unknown;
}

export interface ChatTemplateOptions {
  /** Append the header of an assistant turn ("<|im_start|>assistant\n") so the model answers. */
  addGenerationPrompt?: boolean;
  /** Tool (function) definitions, OpenAI format; rendered by the template's tools branch. */
  tools?: object[];
  /** Extra template variables (e.g. bos_token, or template-specific switches). */
  extra?: Record<string, unknown>;
}

export class ChatTemplateError extends Error {
  /** Path of the offending field, e.g. "messages[1].content". */
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = 'ChatTemplateError';
    this.field = field;
  }
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function normalizeToolCall(tc: unknown, path: string): ToolCall {
  if (!isPlainObject(tc)) throw new ChatTemplateError(path, `${path} must be an object, got ${typeName(tc)}`);
  // Templates accept both {function: {name, arguments}} (OpenAI) and a bare {name, arguments}.
  const fnPath = isPlainObject(tc.function) ? `${path}.function` : path;
  const fn = isPlainObject(tc.function) ? tc.function : tc;
  if (typeof fn.name !== 'string' || fn.name === '') {
    throw new ChatTemplateError(
      `${fnPath}.name`,
      `${fnPath}.name must be a non-empty string, got ${typeName(fn.name)}`,
    );
  }
  let args = fn.arguments ?? {};
  if (typeof args === 'string') {
    try {
      args = JSON.parse(args === '' ? '{}' : args);
    } catch {
      throw new ChatTemplateError(`${fnPath}.arguments`, `${fnPath}.arguments is not valid JSON`);
    }
  }
  if (!isPlainObject(args)) {
    throw new ChatTemplateError(`${fnPath}.arguments`, `${fnPath}.arguments must be an object or a JSON object string`);
  }
  const newFn = { ...fn, arguments: args };
  return (fn === tc ? newFn : { ...tc, function: newFn }) as ToolCall;
}

export const CHAT_ROLES: readonly ChatRole[] = ['system', 'user', 'assistant', 'tool'];

/** Checks the messages and returns shallow copies ready for the template (inputs are not mutated). */
export function validateMessages(messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages)) {
    throw new ChatTemplateError('messages', `messages must be an array, got ${typeName(messages)}`);
  }
  if (messages.length === 0) throw new ChatTemplateError('messages', 'messages must not be empty');
  return messages.map((m: unknown, i): ChatMessage => {
    const path = `messages[${i}]`;
    if (!isPlainObject(m)) throw new ChatTemplateError(path, `${path} must be an object, got ${typeName(m)}`);
    if (typeof m.role !== 'string' || m.role === '') {
      throw new ChatTemplateError(`${path}.role`, `${path}.role must be a non-empty string, got ${typeName(m.role)}`);
    }
    if (!(CHAT_ROLES as readonly string[]).includes(m.role)) {
      // Templates render only the roles they know and skip the others without a word.
      throw new ChatTemplateError(
        `${path}.role`,
        `${path}.role ${JSON.stringify(m.role)} is not a chat role: expected one of ${CHAT_ROLES.join(', ')}`,
      );
    }
    const out: ChatMessage = { ...m, role: m.role as ChatRole, content: m.content as string | null };
    if (m.tool_calls !== undefined && m.tool_calls !== null) {
      if (!Array.isArray(m.tool_calls)) {
        throw new ChatTemplateError(
          `${path}.tool_calls`,
          `${path}.tool_calls must be an array, got ${typeName(m.tool_calls)}`,
        );
      }
      out.tool_calls = m.tool_calls.map((tc: unknown, j) => normalizeToolCall(tc, `${path}.tool_calls[${j}]`));
    } else {
      delete out.tool_calls; // a null here would be truthy-tested by templates as "no tool calls" anyway
    }
    const hasToolCalls = out.tool_calls !== undefined && out.tool_calls.length > 0;
    if (typeof m.content !== 'string') {
      if (m.role === 'assistant' && hasToolCalls && (m.content === null || m.content === undefined)) {
        out.content = '';
      } else {
        throw new ChatTemplateError(`${path}.content`, `${path}.content must be a string, got ${typeName(m.content)}`);
      }
    }
    return out;
  });
}

// Parsing a template costs far more than rendering it, and a server renders the same one
// for every request: keep the few most recent ones.
const templateCache = new Map<string, Template>();
const TEMPLATE_CACHE_SIZE = 8;

function compile(source: string): Template {
  let t = templateCache.get(source);
  if (t === undefined) {
    t = new Template(source);
    if (templateCache.size >= TEMPLATE_CACHE_SIZE) templateCache.delete(templateCache.keys().next().value!);
    templateCache.set(source, t);
  }
  return t;
}

export function applyChatTemplate(template: string, messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
  if (typeof template !== 'string' || template === '') {
    throw new ChatTemplateError('template', 'chat template must be a non-empty string');
  }
  const msgs = validateMessages(messages);
  if (opts.tools !== undefined && opts.tools !== null) {
    if (!Array.isArray(opts.tools))
      throw new ChatTemplateError('tools', `tools must be an array, got ${typeName(opts.tools)}`);
    opts.tools.forEach((t, i) => {
      if (!isPlainObject(t))
        throw new ChatTemplateError(`tools[${i}]`, `tools[${i}] must be an object, got ${typeName(t)}`);
    });
  }
  const context: Record<string, unknown> = {
    ...opts.extra,
    messages: msgs,
    add_generation_prompt: opts.addGenerationPrompt ?? false,
  };
  // An empty tool list means "no tools" (transformers passes None), so the plain branch renders.
  if (opts.tools !== undefined && opts.tools !== null && opts.tools.length > 0) context.tools = opts.tools;
  return compile(template).render(context);
}
