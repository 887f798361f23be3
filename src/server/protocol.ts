// Request bodies of /v1/chat/completions and /v1/completions -> prompts and SamplingParams.
//
// Every field is checked for its type here, so that a bad request fails with a 400 naming the
// field (`param`) before anything is queued; value ranges are checked by validateSamplingParams
// (SamplingParamsError carries the API name of the parameter).
import type { LLM } from '../engine/llm.js';
import { toolChoiceConstraint, type ToolChoice } from '../engine/tool-calls.js';
import { SamplingParamsError, type SamplingParams } from '../sampler/index.js';
import { compileStructuredOutput, StructuredOutputError, type StructuredOutput } from '../sampler/structured/index.js';
import { ChatTemplateError, type ChatMessage } from '../tokenizer/index.js';
import { badRequest, modelNotFound } from './errors.js';
import type { ResponsesContext } from './responses.js';

export type Endpoint = 'chat' | 'completion';

export interface EncodedPrompt {
  text: string;
  ids: number[];
}

export interface SequenceSpec {
  /** Index of the choice in the response (prompt index * n + i, as vLLM numbers them). */
  index: number;
  prompt: number;
  params: SamplingParams;
}

export interface GenerationRequest {
  endpoint: Endpoint;
  prompts: EncodedPrompt[];
  n: number;
  sequences: SequenceSpec[];
  stream: boolean;
  includeUsage: boolean;
  /** Top log-probabilities per token to return; undefined: no logprobs. */
  logprobs: number | undefined;
  /** Completions only: return the prompt in front of the completion. */
  echo: boolean;
  /** Chat with tools (tool_choice not "none"): parse <tool_call> blocks into tool_calls. */
  parseTools: boolean;
  /** /v1/responses: answered as a Response object (responses.ts). */
  responses?: ResponsesContext;
}

/** Limits on what a single request may ask for. */
export const MAX_N = 16;
export const MAX_PROMPTS = 64;
export const MAX_TOP_LOGPROBS = 20;

type Body = Record<string, unknown>;

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** The field's value, undefined when absent or null; a 400 naming the field when of the wrong type. */
function field<T>(body: Body, name: string, ok: (v: unknown) => boolean, expected: string): T | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (!ok(v))
    throw badRequest(`${name} must be ${expected}, got ${typeName(v)}${typeof v === 'number' ? ` ${v}` : ''}.`, name);
  return v as T;
}

const isNum = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
const isInt = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v);
const isBool = (v: unknown) => typeof v === 'boolean';
const num = (b: Body, k: string) => field<number>(b, k, isNum, 'a number');
const int = (b: Body, k: string) => field<number>(b, k, isInt, 'an integer');
const bool = (b: Body, k: string) => field<boolean>(b, k, isBool, 'a boolean');

function checkModel(body: Body, served: string): void {
  const model = field<string>(body, 'model', (v) => typeof v === 'string', 'a string');
  if (model !== undefined && model !== served) throw modelNotFound(model, served);
}

/** Sampling fields common to both endpoints (OpenAI's and vLLM's extras), type-checked. */
function samplingFields(body: Body): { params: SamplingParams; maxTokens: number | undefined; maxTokensParam: string } {
  const params: SamplingParams = {
    temperature: num(body, 'temperature'),
    topP: num(body, 'top_p'),
    topK: int(body, 'top_k'),
    minP: num(body, 'min_p'),
    repetitionPenalty: num(body, 'repetition_penalty'),
    presencePenalty: num(body, 'presence_penalty'),
    frequencyPenalty: num(body, 'frequency_penalty'),
    seed: int(body, 'seed'),
    ignoreEos: bool(body, 'ignore_eos'),
    stop: field<string | string[]>(
      body,
      'stop',
      (v) => typeof v === 'string' || (Array.isArray(v) && v.every((s) => typeof s === 'string')),
      'a string or an array of strings',
    ),
    stopTokenIds: field<number[]>(
      body,
      'stop_token_ids',
      (v) => Array.isArray(v) && v.every(isInt),
      'an array of integer token ids',
    ),
  };
  // An empty stop list means no stop strings.
  if (Array.isArray(params.stop) && params.stop.length === 0) params.stop = undefined;
  const maxCompletion = int(body, 'max_completion_tokens');
  const maxTokens = maxCompletion ?? int(body, 'max_tokens');
  const maxTokensParam = maxCompletion !== undefined ? 'max_completion_tokens' : 'max_tokens';
  // 0 with echo (completions): the prompt alone, scored when logprobs is set.
  if (maxTokens !== undefined && maxTokens < 1 && !(maxTokens === 0 && body.echo === true))
    throw badRequest(`${maxTokensParam} must be at least 1, got ${maxTokens}.`, maxTokensParam);

  Object.assign(params, extraSamplingFields(body));
  return { params, maxTokens, maxTokensParam };
}

// --- issue 11: logit_bias, min_tokens, bad_words, response_format, guided_*, tools ---

/** logit_bias, min_tokens, bad_words (ranges are checked by validateSamplingParams). */
function extraSamplingFields(body: Body): SamplingParams {
  const out: SamplingParams = {};
  const logitBias = field<Record<string, unknown>>(body, 'logit_bias', isObject, 'an object');
  if (logitBias && Object.keys(logitBias).length > 0) {
    for (const [k, v] of Object.entries(logitBias))
      if (!isNum(v))
        throw badRequest(`logit_bias[${JSON.stringify(k)}] must be a number, got ${typeName(v)}.`, 'logit_bias');
    out.logitBias = logitBias as Record<number, number>;
  }
  out.minTokens = int(body, 'min_tokens');
  out.badWords = field<string[]>(
    body,
    'bad_words',
    (v) => Array.isArray(v) && v.every((w) => typeof w === 'string'),
    'an array of strings',
  );
  return out;
}

/** Compiles a structured-output spec now, so a bad schema or pattern is a 400 naming the API field. */
function compiled(spec: StructuredOutput, param: string, specPathToApi: (path: string) => string): StructuredOutput {
  try {
    compileStructuredOutput(spec);
  } catch (e) {
    if (e instanceof StructuredOutputError) throw badRequest(`${param}: ${e.message}.`, specPathToApi(e.path));
    throw e;
  }
  return spec;
}

/** response_format (non-text), guided_json, guided_choice, guided_regex, guided_grammar: at most one of them. */
function structuredOutputField(body: Body): { spec: StructuredOutput; param: string } | undefined {
  const found: { spec: StructuredOutput; param: string }[] = [];
  const format = field<Record<string, unknown>>(body, 'response_format', isObject, 'an object');
  if (format && format.type !== undefined && format.type !== 'text') {
    if (format.type === 'json_object') found.push({ spec: { type: 'json' }, param: 'response_format' });
    else if (format.type === 'json_schema') {
      const js = format.json_schema;
      if (!isObject(js) || !isObject(js.schema))
        throw badRequest('response_format.json_schema.schema must be an object.', 'response_format.json_schema.schema');
      const spec = compiled({ type: 'json', schema: js.schema }, 'response_format', (p) =>
        p.startsWith('schema') ? `response_format.json_schema.${p}` : 'response_format.json_schema',
      );
      found.push({ spec, param: 'response_format' });
    } else
      throw badRequest(
        `response_format.type must be "text", "json_object" or "json_schema", got ${JSON.stringify(format.type)}.`,
        'response_format.type',
      );
  }
  let guidedJson = body.guided_json;
  if (typeof guidedJson === 'string') {
    try {
      guidedJson = JSON.parse(guidedJson);
    } catch {
      throw badRequest('guided_json is a string that is not valid JSON.', 'guided_json');
    }
  }
  if (guidedJson !== undefined && guidedJson !== null) {
    if (!isObject(guidedJson))
      throw badRequest(`guided_json must be a JSON schema object, got ${typeName(guidedJson)}.`, 'guided_json');
    const spec = compiled({ type: 'json', schema: guidedJson }, 'guided_json', (p) =>
      p.replace(/^schema/, 'guided_json'),
    );
    found.push({ spec, param: 'guided_json' });
  }
  const choices = field<string[]>(
    body,
    'guided_choice',
    (v) => Array.isArray(v) && v.length > 0 && v.every((c) => typeof c === 'string'),
    'a non-empty array of strings',
  );
  if (choices)
    found.push({
      spec: compiled({ type: 'choice', choices }, 'guided_choice', () => 'guided_choice'),
      param: 'guided_choice',
    });
  const pattern = field<string>(body, 'guided_regex', (v) => typeof v === 'string', 'a string');
  if (pattern !== undefined)
    found.push({
      spec: compiled({ type: 'regex', pattern }, 'guided_regex', () => 'guided_regex'),
      param: 'guided_regex',
    });
  const gbnf = field<string>(body, 'guided_grammar', (v) => typeof v === 'string', 'a string (a GBNF grammar)');
  if (gbnf !== undefined)
    found.push({
      spec: compiled({ type: 'grammar', gbnf }, 'guided_grammar', () => 'guided_grammar'),
      param: 'guided_grammar',
    });
  if (found.length > 1)
    throw badRequest(`Only one of ${found.map((f) => f.param).join(' and ')} can be used at a time.`, found[1].param);
  return found[0];
}

/** tools and tool_choice of a chat request, checked. */
function toolFields(body: Body): { tools: object[]; choice: ToolChoice } {
  const tools = field<unknown[]>(body, 'tools', Array.isArray, 'an array') ?? [];
  tools.forEach((t, i) => {
    if (!isObject(t) || (t.type !== undefined && t.type !== 'function'))
      throw badRequest(`tools[${i}] must be {"type": "function", "function": {...}}.`, `tools[${i}]`);
    const fn = t.function;
    if (!isObject(fn)) throw badRequest(`tools[${i}].function must be an object.`, `tools[${i}].function`);
    if (typeof fn.name !== 'string' || fn.name === '')
      throw badRequest(`tools[${i}].function.name must be a non-empty string.`, `tools[${i}].function.name`);
    if (fn.parameters !== undefined && fn.parameters !== null && !isObject(fn.parameters))
      throw badRequest(
        `tools[${i}].function.parameters must be a JSON schema object.`,
        `tools[${i}].function.parameters`,
      );
  });
  const raw = body.tool_choice ?? undefined;
  let choice: ToolChoice;
  if (raw === undefined || raw === null) choice = tools.length > 0 ? 'auto' : 'none';
  else if (raw === 'none' || raw === 'auto' || raw === 'required') choice = raw;
  else if (isObject(raw) && isObject(raw.function) && typeof raw.function.name === 'string')
    choice = { type: 'function', function: { name: raw.function.name } };
  else
    throw badRequest(
      'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}.',
      'tool_choice',
    );
  if ((choice === 'required' || typeof choice === 'object') && tools.length === 0)
    throw badRequest(
      `tool_choice ${typeof choice === 'object' ? 'naming a function' : '"required"'} needs tools.`,
      'tool_choice',
    );
  return { tools: tools as object[], choice };
}

/** The constraint a chat request asks for: a forced tool call, or response_format / guided_*. */
function chatConstraint(body: Body, tools: object[], choice: ToolChoice): StructuredOutput | undefined {
  const other = structuredOutputField(body);
  let forced: StructuredOutput | undefined;
  try {
    forced = toolChoiceConstraint(tools, choice);
  } catch (e) {
    throw badRequest(`${(e as Error).message}.`, 'tool_choice');
  }
  if (!forced) return other?.spec;
  if (other)
    throw badRequest(`tool_choice ${JSON.stringify(choice)} cannot be combined with ${other.param}.`, other.param);
  return compiled(forced, 'tools', (p) => {
    const m = /^functions\[(\d+)\]\.parameters(.*)$/.exec(p);
    if (!m) return 'tools';
    const index =
      typeof choice === 'object'
        ? tools.findIndex((t) => (t as { function: { name: string } }).function.name === choice.function.name)
        : Number(m[1]);
    return `tools[${index}].function.parameters${m[2]}`;
  });
}

function commonFields(body: Body): { n: number; stream: boolean; includeUsage: boolean } {
  const n = int(body, 'n') ?? 1;
  if (n < 1 || n > MAX_N) throw badRequest(`n must be from 1 to ${MAX_N}, got ${n}.`, 'n');
  const bestOf = int(body, 'best_of');
  if (bestOf !== undefined && bestOf !== n) throw badRequest('best_of other than n is not supported.', 'best_of');
  const stream = bool(body, 'stream') ?? false;
  const streamOptions = field<Record<string, unknown>>(body, 'stream_options', isObject, 'an object');
  let includeUsage = false;
  if (streamOptions) {
    const v = streamOptions.include_usage;
    if (v !== undefined && v !== null && typeof v !== 'boolean')
      throw badRequest(
        `stream_options.include_usage must be a boolean, got ${typeName(v)}.`,
        'stream_options.include_usage',
      );
    includeUsage = v === true;
  }
  return { n, stream, includeUsage };
}

/** OpenAI content parts ([{type: 'text', text}]) -> one string, as vLLM joins them. */
function normalizeMessages(messages: unknown): unknown {
  if (!Array.isArray(messages)) return messages;
  return messages.map((m, i) => {
    if (!isObject(m) || !Array.isArray(m.content)) return m;
    const texts = m.content.map((part, j) => {
      if (typeof part === 'string') return part;
      if (isObject(part) && part.type === 'text' && typeof part.text === 'string') return part.text;
      const kind = isObject(part) && typeof part.type === 'string' ? ` of type ${JSON.stringify(part.type)}` : '';
      throw badRequest(
        `messages[${i}].content[${j}]: content parts${kind} are not supported; only text parts.`,
        `messages[${i}].content[${j}]`,
      );
    });
    return { ...m, content: texts.join('\n') };
  });
}

/** Token budget of one sequence: the KV cache and context length both bound it. */
function contextLimit(llm: LLM): number {
  const cache = llm.model.kvCache;
  return Math.min(cache.contextLength, cache.capacityTokens);
}

function checkPromptLength(llm: LLM, prompt: EncodedPrompt, param: string, room = 1): void {
  const limit = contextLimit(llm);
  if (prompt.ids.length === 0) throw badRequest('The prompt is empty: at least one token is needed.', param);
  if (prompt.ids.length + room > limit) {
    throw badRequest(
      `This model's maximum context length is ${limit} tokens. However, your prompt has ${prompt.ids.length} tokens, which leaves no room for the completion.`,
      param,
      'context_length_exceeded',
    );
  }
}

/** The sequences of a request: n per prompt, seeds seed + i, max_tokens resolved as vLLM does. */
function sequencesFor(
  llm: LLM,
  prompts: EncodedPrompt[],
  n: number,
  sampling: ReturnType<typeof samplingFields>,
  logprobs: number | undefined,
  promptParam: string,
  promptLogprobs?: number,
): SequenceSpec[] {
  const limit = contextLimit(llm);
  const fromConfig = llm.model.generationConfig.maxNewTokens;
  const vocab = llm.model.config.vocabSize;
  for (const id of Object.keys(sampling.params.logitBias ?? {}))
    if (Number(id) >= vocab)
      throw badRequest(
        `logit_bias has token id ${id}; this model's token ids go from 0 to ${vocab - 1}.`,
        'logit_bias',
      );
  const sequences: SequenceSpec[] = [];
  prompts.forEach((p, pi) => {
    checkPromptLength(llm, p, promptParam, promptLogprobs !== undefined && sampling.maxTokens === 0 ? 0 : 1);
    const room = limit - p.ids.length;
    if (promptLogprobs !== undefined && sampling.maxTokens === 0) {
      // echo with max_tokens 0: the prompt alone (a prompt may then fill the whole context).
      for (let i = 0; i < n; i++)
        sequences.push({
          index: pi * n + i,
          prompt: pi,
          params: { ...sampling.params, maxTokens: 0, logprobs, promptLogprobs },
        });
      return;
    }
    if (sampling.maxTokens !== undefined && sampling.maxTokens > room) {
      throw badRequest(
        `This model's maximum context length is ${limit} tokens. However, you requested ${p.ids.length + sampling.maxTokens} tokens ` +
          `(${p.ids.length} in the prompt, ${sampling.maxTokens} for the completion). Reduce the prompt or ${sampling.maxTokensParam}.`,
        sampling.maxTokensParam,
        'context_length_exceeded',
      );
    }
    const maxTokens = Math.min(
      sampling.maxTokens ?? room,
      room,
      sampling.maxTokens === undefined && fromConfig !== undefined ? fromConfig : Infinity,
    );
    for (let i = 0; i < n; i++) {
      const params: SamplingParams = { ...sampling.params, maxTokens, logprobs, promptLogprobs };
      if (params.seed !== undefined) params.seed += i;
      sequences.push({ index: pi * n + i, prompt: pi, params });
    }
  });
  // Ranges and the rest: validateSamplingParams via resolveParams, reported with the API name.
  try {
    llm.resolveParams(sequences[0].params);
  } catch (e) {
    if (e instanceof SamplingParamsError) {
      const param = e.apiParam === 'max_tokens' ? sampling.maxTokensParam : e.apiParam;
      throw badRequest(e.message, param);
    }
    throw e;
  }
  return sequences;
}

export async function parseChatRequest(llm: LLM, servedName: string, body: Body): Promise<GenerationRequest> {
  checkModel(body, servedName);
  if (body.messages === undefined || body.messages === null) throw badRequest('messages is required.', 'messages');
  const common = commonFields(body);
  const sampling = samplingFields(body);
  const wantLogprobs = bool(body, 'logprobs') ?? false;
  const top = int(body, 'top_logprobs');
  if (top !== undefined && (top < 0 || top > MAX_TOP_LOGPROBS))
    throw badRequest(`top_logprobs must be from 0 to ${MAX_TOP_LOGPROBS}, got ${top}.`, 'top_logprobs');
  if (top !== undefined && top > 0 && !wantLogprobs)
    throw badRequest('top_logprobs needs logprobs set to true.', 'top_logprobs');
  const { tools, choice } = toolFields(body);
  const constraint = chatConstraint(body, tools, choice);
  if (constraint) sampling.params.structuredOutput = constraint;
  const addGenerationPrompt = bool(body, 'add_generation_prompt') ?? true;
  const kwargs = field<Record<string, unknown>>(body, 'chat_template_kwargs', isObject, 'an object');

  let text: string;
  try {
    text = llm.applyChatTemplate(normalizeMessages(body.messages) as ChatMessage[], {
      addGenerationPrompt,
      ...(tools.length > 0 && choice !== 'none' ? { tools } : {}),
      ...(kwargs ? { extra: kwargs } : {}),
    });
  } catch (e) {
    if (e instanceof ChatTemplateError) throw badRequest(e.message, e.field);
    throw badRequest(`The chat template failed on these messages: ${(e as Error).message}`, 'messages');
  }
  const prompt = { text, ids: await llm.tokenize(text, { addSpecialTokens: false }) };
  const logprobs = wantLogprobs ? (top ?? 0) : undefined;
  return {
    endpoint: 'chat',
    prompts: [prompt],
    n: common.n,
    sequences: sequencesFor(llm, [prompt], common.n, sampling, logprobs, 'messages'),
    stream: common.stream,
    includeUsage: common.includeUsage,
    logprobs,
    echo: false,
    parseTools: tools.length > 0 && choice !== 'none',
  };
}

function tokenIdArray(llm: LLM, v: unknown[], param: string): number[] {
  const vocab = llm.model.config.vocabSize;
  v.forEach((id, i) => {
    if (!isInt(id) || (id as number) < 0 || (id as number) >= vocab) {
      throw badRequest(
        `${param}[${i}] must be a token id from 0 to ${vocab - 1}, got ${typeName(id)} ${String(id)}.`,
        param,
      );
    }
  });
  return v as number[];
}

/**
 * echo: the prompt's log-probabilities (prompt_logprobs) when logprobs is set, and always when
 * max_tokens is 0 (the engine then scores the prompt instead of generating). One completion, not
 * streamed: the prompt's logprobs are computed per sequence and sent with the last chunk otherwise.
 */
function echoPromptLogprobs(
  echo: boolean,
  logprobs: number | undefined,
  common: { n: number; stream: boolean },
  maxTokens: number | undefined,
): number | undefined {
  if (!echo || (logprobs === undefined && maxTokens !== 0)) return undefined;
  if (common.n > 1) throw badRequest('echo with logprobs or max_tokens 0 supports n = 1 only.', 'n');
  if (common.stream)
    throw badRequest('echo with logprobs or max_tokens 0 cannot be streamed; set stream to false.', 'stream');
  return logprobs ?? 0;
}

export async function parseCompletionRequest(llm: LLM, servedName: string, body: Body): Promise<GenerationRequest> {
  checkModel(body, servedName);
  const raw = body.prompt;
  if (raw === undefined || raw === null) throw badRequest('prompt is required.', 'prompt');
  const common = commonFields(body);
  const sampling = samplingFields(body);
  const constraint = structuredOutputField(body);
  if (constraint) sampling.params.structuredOutput = constraint.spec;
  const logprobs = int(body, 'logprobs');
  if (logprobs !== undefined && (logprobs < 0 || logprobs > MAX_TOP_LOGPROBS))
    throw badRequest(`logprobs must be from 0 to ${MAX_TOP_LOGPROBS}, got ${logprobs}.`, 'logprobs');
  const echo = bool(body, 'echo') ?? false;
  const promptLogprobs = echoPromptLogprobs(echo, logprobs, common, sampling.maxTokens);
  const suffix = field<string>(body, 'suffix', (v) => typeof v === 'string', 'a string');
  if (suffix) throw badRequest('suffix is not supported.', 'suffix');

  let prompts: EncodedPrompt[];
  const fromText = async (s: string): Promise<EncodedPrompt> => ({ text: s, ids: await llm.tokenize(s) });
  const fromIds = (ids: unknown[], param: string): EncodedPrompt => {
    const checked = tokenIdArray(llm, ids, param);
    return { text: llm.tokenizer.decode(checked), ids: checked };
  };
  if (typeof raw === 'string') {
    prompts = [await fromText(raw)];
  } else if (Array.isArray(raw) && raw.length > 0 && raw.every((p) => typeof p === 'string')) {
    if (raw.length > MAX_PROMPTS)
      throw badRequest(`At most ${MAX_PROMPTS} prompts per request, got ${raw.length}.`, 'prompt');
    const ids = await llm.tokenizeAll(raw as string[]); // together: many mid-sized prompts are one large text
    prompts = (raw as string[]).map((text, i) => ({ text, ids: ids[i] }));
  } else if (Array.isArray(raw) && raw.length > 0 && raw.every((p) => typeof p === 'number')) {
    prompts = [fromIds(raw, 'prompt')];
  } else if (Array.isArray(raw) && raw.length > 0 && raw.every(Array.isArray)) {
    prompts = (raw as unknown[][]).map((ids, i) => fromIds(ids, `prompt[${i}]`));
  } else {
    throw badRequest(
      'prompt must be a string, an array of strings, an array of token ids or an array of token id arrays.',
      'prompt',
    );
  }
  if (prompts.length > MAX_PROMPTS)
    throw badRequest(`At most ${MAX_PROMPTS} prompts per request, got ${prompts.length}.`, 'prompt');
  if (prompts.length * common.n > MAX_PROMPTS)
    throw badRequest(`At most ${MAX_PROMPTS} completions (prompts × n) per request.`, 'n');
  return {
    endpoint: 'completion',
    prompts,
    n: common.n,
    sequences: sequencesFor(llm, prompts, common.n, sampling, logprobs, 'prompt', promptLogprobs),
    stream: common.stream,
    includeUsage: common.includeUsage,
    logprobs,
    echo,
    parseTools: false,
  };
}
