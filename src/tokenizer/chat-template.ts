// Chat templates: render a list of messages into the prompt string the model was trained on.
//
// The template is the Jinja source stored in tokenizer_config.json ("chat_template");
// @huggingface/jinja renders it the way transformers' apply_chat_template does. We only add
// input validation (a bad message should fail with the field's name, not deep inside Jinja)
// and vLLM's one bit of pre-processing: tool-call arguments given as a JSON string (the OpenAI
// wire format) are parsed into an object, because templates do `arguments | tojson`.

import { Environment, Interpreter, Template } from '@huggingface/jinja';

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
  /** Where the template comes from (e.g. "tokenizer_config.json"), named in errors. */
  source?: string;
  /** Limits of one rendering; default: templateBudget() of the input's size. */
  budget?: TemplateBudget;
}

/**
 * What one rendering may do. Jinja renders synchronously in this thread, and a template can loop
 * (`range(1000000000)` builds a billion-element array before the first step), recurse through
 * macros or double a string or list in a loop: without a bound one chat template kills or stalls
 * the process. Steps are the interpreter's node evaluations (a loop iteration costs at least one);
 * size bounds every string and list a step produces; the deadline catches the rest.
 */
export interface TemplateBudget {
  maxSteps: number;
  /** Characters of any string, items of any list (range() included). */
  maxSize: number;
  timeoutMs: number;
}

/**
 * The default budget for an input of `inputChars` characters (messages, tools, variables): far
 * above what a real template needs (Qwen2.5's takes about 30 steps per message and writes the
 * input once), proportional to the input so that a long conversation is never refused.
 */
export function templateBudget(inputChars: number): TemplateBudget {
  return { maxSteps: 10_000_000 + 16 * inputChars, maxSize: 4 * 2 ** 20 + 4 * inputChars, timeoutMs: 5_000 };
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
  const budget = opts.budget ?? templateBudget(inputSize(context));
  return render(compile(template), context, budget, opts.source);
}

/** Characters in the strings of a template's input (its output is about as long). */
function inputSize(value: unknown, depth = 0): number {
  if (typeof value === 'string') return value.length;
  if (value === null || typeof value !== 'object' || depth > 64) return 0;
  let n = 0;
  for (const v of Array.isArray(value) ? value : Object.values(value)) n += inputSize(v, depth + 1);
  return n;
}

// The library's .d.ts files use extension-less relative imports that NodeNext cannot resolve, so
// its Interpreter and Environment type as `any`; these name the little we rely on.
type Statement = unknown;
interface RuntimeValue {
  type: string;
  value: unknown;
}
interface JinjaEnvironment {
  set(name: string, value: unknown): void;
}
interface JinjaInterpreter {
  evaluate(statement: Statement, environment: JinjaEnvironment): RuntimeValue;
  evaluateBlock(statements: Statement[], environment: JinjaEnvironment): RuntimeValue;
  run(program: unknown): RuntimeValue;
}
const JinjaInterpreterClass = Interpreter as new (env: JinjaEnvironment) => JinjaInterpreter;

/** Jinja's interpreter, counting its steps and measuring what each produces. */
class BudgetedInterpreter extends JinjaInterpreterClass {
  private steps = 0;
  private readonly deadline: number;

  constructor(
    env: JinjaEnvironment,
    private readonly budget: TemplateBudget,
    private readonly overBudget: (what: string) => never,
  ) {
    super(env);
    this.deadline = performance.now() + budget.timeoutMs;
  }

  override evaluate(statement: Statement, environment: JinjaEnvironment): RuntimeValue {
    this.step();
    const value = super.evaluate(statement, environment);
    if (value.type === 'StringValue' || value.type === 'ArrayValue') {
      const size = (value.value as string | unknown[]).length;
      if (size > this.budget.maxSize)
        this.overBudget(
          `made a ${value.type === 'StringValue' ? 'string' : 'list'} of ${size} ${value.type === 'StringValue' ? 'characters' : 'items'}, more than the ${this.budget.maxSize} allowed`,
        );
    }
    return value;
  }

  // A loop runs its body through here once per iteration, even when the body is empty.
  override evaluateBlock(statements: Statement[], environment: JinjaEnvironment): RuntimeValue {
    this.step();
    return super.evaluateBlock(statements, environment);
  }

  private step(): void {
    if (++this.steps > this.budget.maxSteps)
      this.overBudget(`took more than ${this.budget.maxSteps} steps (a loop or a recursion without end?)`);
    if ((this.steps & 1023) === 0 && performance.now() > this.deadline)
      this.overBudget(`ran longer than ${this.budget.timeoutMs / 1000} s`);
  }
}

/** strftime_now(format), as transformers gives templates (Llama 3 writes today's date). */
function strftimeNow(format: string): string {
  const now = new Date();
  const two = (n: number) => String(n).padStart(2, '0');
  const month = (style: 'short' | 'long') => now.toLocaleString('en-US', { month: style });
  const fields: Record<string, string> = {
    '%Y': String(now.getFullYear()),
    '%m': two(now.getMonth() + 1),
    '%d': two(now.getDate()),
    '%b': month('short'),
    '%B': month('long'),
    '%H': two(now.getHours()),
    '%M': two(now.getMinutes()),
    '%%': '%',
  };
  return String(format).replace(/%[YmdbBHM%]/g, (f) => fields[f] ?? f);
}

/** Template.render of @huggingface/jinja (the same globals), within `budget`. */
function render(template: Template, context: Record<string, unknown>, budget: TemplateBudget, source?: string): string {
  const overBudget = (what: string): never => {
    throw new ChatTemplateError(
      'chat_template',
      `the chat template${source ? ` of ${source}` : ''} ${what}; it was stopped`,
    );
  };
  const env = new Environment() as JinjaEnvironment;
  env.set('false', false);
  env.set('true', true);
  env.set('none', null);
  env.set('False', false);
  env.set('True', true);
  env.set('None', null);
  env.set('raise_exception', (message: unknown) => {
    throw new Error(String(message));
  });
  env.set('strftime_now', strftimeNow);
  // range() builds its list at once: a count over the budget must fail before the allocation.
  env.set('range', (start: number, stop?: number, step = 1) => {
    if (stop === undefined) [start, stop] = [0, start];
    if (step === 0) throw new Error('range() step must not be zero');
    const count = Math.max(0, Math.ceil((stop - start) / step));
    if (!(count <= budget.maxSize))
      overBudget(`asked range() for ${count} numbers, more than the ${budget.maxSize} allowed`);
    return Array.from({ length: count }, (_, i) => start + i * step);
  });
  for (const [key, value] of Object.entries(context)) env.set(key, value);
  return new BudgetedInterpreter(env, budget, overBudget).run((template as { parsed: unknown }).parsed).value as string;
}
