// POST /v1/responses: OpenAI's Responses API, stateless. The request is translated into a chat
// completions request (input items -> messages, flat function tools -> chat tools, text.format ->
// response_format, max_output_tokens -> max_tokens) and runs through the same path (protocol.ts:
// checks, chat template, constrained decoding, tool-call parsing); its output is then written as
// a Response object, or streamed as the documented events, each with its sequence_number.
// previous_response_id and store: true need stored responses, which this server does not keep.
import { randomUUID } from 'node:crypto';
import type * as http from 'node:http';
import type { LLM } from '../engine/llm.js';
import type { CompletionOutput } from '../engine/request.js';
import { parseToolCalls, ToolCallStreamParser, type ToolCall } from '../engine/tool-calls.js';
import { ApiError, badRequest } from './errors.js';
import type { Usage } from './format.js';
import { parseChatRequest, type GenerationRequest } from './protocol.js';

type Body = Record<string, unknown>;

const isObject = (v: unknown): v is Body => v !== null && typeof v === 'object' && !Array.isArray(v);

/** What the Response object echoes of the request. */
export interface ResponsesContext {
  id: string;
  createdAt: number;
  model: string;
  /** Request fields echoed in the Response object (instructions, tools, tool_choice, ...). */
  echo: Record<string, unknown>;
  parseTools: boolean;
}

/** Fields of a Responses request this server reads; any other is a 400 (nothing silently ignored). */
const FIELDS = new Set([
  'model',
  'input',
  'instructions',
  'tools',
  'tool_choice',
  'text',
  'max_output_tokens',
  'temperature',
  'top_p',
  'stream',
  'store',
  'previous_response_id',
  'metadata',
  'parallel_tool_calls',
  'user',
  'truncation',
]);

const itemId = (prefix: string): string => `${prefix}_${randomUUID().replaceAll('-', '')}`;

/** Text of a message's content: a string, or input_text / output_text parts. */
function contentText(content: unknown, at: string): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw badRequest(`${at} must be a string or an array of content parts.`, at);
  return content
    .map((part, j) => {
      if (
        isObject(part) &&
        (part.type === 'input_text' || part.type === 'output_text') &&
        typeof part.text === 'string'
      )
        return part.text;
      const kind = isObject(part) && typeof part.type === 'string' ? ` of type ${JSON.stringify(part.type)}` : '';
      throw badRequest(
        `${at}[${j}]: content parts${kind} are not supported; only input_text and output_text.`,
        `${at}[${j}]`,
      );
    })
    .join('');
}

/** input (a string or a list of items) and instructions -> chat messages. */
function messagesOf(input: unknown, instructions: unknown): Body[] {
  const messages: Body[] = [];
  if (instructions !== undefined && instructions !== null) {
    if (typeof instructions !== 'string') throw badRequest('instructions must be a string.', 'instructions');
    messages.push({ role: 'system', content: instructions });
  }
  if (typeof input === 'string') {
    messages.push({ role: 'user', content: input });
    return messages;
  }
  if (!Array.isArray(input) || input.length === 0)
    throw badRequest('input must be a string or a non-empty array of input items.', 'input');
  input.forEach((item, i) => {
    const at = `input[${i}]`;
    if (!isObject(item)) throw badRequest(`${at} must be an object.`, at);
    const type = item.type ?? (item.role !== undefined ? 'message' : undefined);
    if (type === 'message') {
      const role = item.role === 'developer' ? 'system' : item.role;
      if (role !== 'user' && role !== 'assistant' && role !== 'system')
        throw badRequest(
          `${at}.role must be "user", "assistant", "system" or "developer", got ${JSON.stringify(item.role)}.`,
          `${at}.role`,
        );
      messages.push({ role, content: contentText(item.content, `${at}.content`) });
    } else if (type === 'function_call') {
      for (const f of ['call_id', 'name', 'arguments'])
        if (typeof item[f] !== 'string') throw badRequest(`${at}.${f} must be a string.`, `${at}.${f}`);
      const call = { id: item.call_id, type: 'function', function: { name: item.name, arguments: item.arguments } };
      const last = messages[messages.length - 1];
      // Calls made in one turn are one assistant message with several tool_calls.
      if (last?.role === 'assistant' && Array.isArray(last.tool_calls)) (last.tool_calls as unknown[]).push(call);
      else messages.push({ role: 'assistant', content: '', tool_calls: [call] });
    } else if (type === 'function_call_output') {
      if (typeof item.call_id !== 'string') throw badRequest(`${at}.call_id must be a string.`, `${at}.call_id`);
      const output = typeof item.output === 'string' ? item.output : contentText(item.output, `${at}.output`);
      messages.push({ role: 'tool', tool_call_id: item.call_id, content: output });
    } else {
      throw badRequest(
        `${at}.type ${JSON.stringify(type)} is not supported; input items are "message", "function_call" and "function_call_output".`,
        `${at}.type`,
      );
    }
  });
  return messages;
}

/** Responses function tools ({type, name, description, parameters, strict}) -> chat tools. */
function chatTools(tools: unknown): Body[] | undefined {
  if (tools === undefined || tools === null) return undefined;
  if (!Array.isArray(tools)) throw badRequest('tools must be an array.', 'tools');
  return tools.map((t, i) => {
    if (!isObject(t) || t.type !== 'function')
      throw badRequest(
        `tools[${i}].type must be "function" (function tools only), got ${JSON.stringify(isObject(t) ? t.type : t)}.`,
        `tools[${i}].type`,
      );
    if (typeof t.name !== 'string' || t.name === '')
      throw badRequest(`tools[${i}].name must be a non-empty string.`, `tools[${i}].name`);
    const fn: Body = { name: t.name };
    if (t.description !== undefined && t.description !== null) fn.description = t.description;
    if (t.parameters !== undefined && t.parameters !== null) fn.parameters = t.parameters;
    return { type: 'function', function: fn };
  });
}

function chatToolChoice(choice: unknown): unknown {
  if (choice === undefined || choice === null || typeof choice === 'string') return choice;
  if (isObject(choice) && choice.type === 'function' && typeof choice.name === 'string')
    return { type: 'function', function: { name: choice.name } };
  throw badRequest(
    'tool_choice must be "none", "auto", "required" or {"type": "function", "name": ...}.',
    'tool_choice',
  );
}

/** text.format -> response_format. */
function responseFormat(text: unknown): Body | undefined {
  if (text === undefined || text === null) return undefined;
  if (!isObject(text)) throw badRequest('text must be an object.', 'text');
  const format = text.format;
  if (format === undefined || format === null) return undefined;
  if (!isObject(format)) throw badRequest('text.format must be an object.', 'text.format');
  if (format.type === 'text' || format.type === 'json_object') return { type: format.type };
  if (format.type === 'json_schema') {
    if (!isObject(format.schema)) throw badRequest('text.format.schema must be an object.', 'text.format.schema');
    return { type: 'json_schema', json_schema: { name: format.name, schema: format.schema } };
  }
  throw badRequest(
    `text.format.type must be "text", "json_object" or "json_schema", got ${JSON.stringify(format.type)}.`,
    'text.format.type',
  );
}

/** A chat-completions parameter name in an error -> the Responses one. */
function responsesParam(param: string | null): string | null {
  if (param === null) return null;
  if (param === 'max_tokens') return 'max_output_tokens';
  if (param === 'messages' || param.startsWith('messages[')) return 'input';
  if (param.startsWith('response_format.json_schema.')) return `text.format.${param.slice(28)}`;
  if (param.startsWith('response_format')) return 'text.format';
  return param.replace(/^tools\[(\d+)\]\.function/, 'tools[$1]');
}

export async function parseResponsesRequest(
  llm: LLM,
  servedName: string,
  body: Body,
): Promise<GenerationRequest & { responses: ResponsesContext }> {
  for (const key of Object.keys(body))
    if (!FIELDS.has(key)) throw badRequest(`${key} is not supported by this server's /v1/responses.`, key);
  if (body.previous_response_id !== undefined && body.previous_response_id !== null)
    throw badRequest(
      'previous_response_id is not supported: this server keeps no responses; send the whole conversation in input.',
      'previous_response_id',
    );
  if (body.store === true)
    throw badRequest('store: true is not supported: this server keeps no responses; set store to false.', 'store');
  if (body.input === undefined || body.input === null) throw badRequest('input is required.', 'input');
  const chat: Body = {
    model: body.model,
    messages: messagesOf(body.input, body.instructions),
    tools: chatTools(body.tools),
    tool_choice: chatToolChoice(body.tool_choice),
    response_format: responseFormat(body.text),
    max_tokens: body.max_output_tokens,
    temperature: body.temperature,
    top_p: body.top_p,
    stream: body.stream,
  };
  let request: GenerationRequest;
  try {
    request = await parseChatRequest(llm, servedName, chat);
  } catch (e) {
    if (e instanceof ApiError)
      throw new ApiError(
        e.status,
        e.message.replace(/\bmax_tokens\b/g, 'max_output_tokens'),
        e.type,
        responsesParam(e.param),
        e.code,
      );
    throw e;
  }
  const format = isObject(body.text) && isObject(body.text.format) ? body.text.format : { type: 'text' };
  const responses: ResponsesContext = {
    id: itemId('resp'),
    createdAt: Math.floor(Date.now() / 1000),
    model: servedName,
    parseTools: request.parseTools,
    echo: {
      instructions: body.instructions ?? null,
      max_output_tokens: body.max_output_tokens ?? null,
      temperature: body.temperature ?? null,
      top_p: body.top_p ?? null,
      tools: body.tools ?? [],
      tool_choice: body.tool_choice ?? 'auto',
      text: { format },
      parallel_tool_calls: body.parallel_tool_calls ?? true,
      metadata: body.metadata ?? {},
      previous_response_id: null,
      store: false,
      truncation: body.truncation ?? 'disabled',
      user: body.user ?? null,
    },
  };
  return { ...request, responses };
}

function responsesUsage(u: Usage): Body {
  return {
    input_tokens: u.prompt_tokens,
    input_tokens_details: { cached_tokens: u.prompt_tokens_details?.cached_tokens ?? 0 },
    output_tokens: u.completion_tokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: u.total_tokens,
  };
}

function messageItem(id: string, text: string, status: string): Body {
  return {
    type: 'message',
    id,
    status,
    role: 'assistant',
    content: status === 'in_progress' ? [] : [{ type: 'output_text', text, annotations: [] }],
  };
}

function functionCallItem(id: string, call: ToolCall, args: string, status: string): Body {
  return { type: 'function_call', id, call_id: call.id, name: call.function.name, arguments: args, status };
}

/** The Response object (usage once finished). */
function responseObject(c: ResponsesContext, status: string, output: Body[], u?: Usage): Body {
  return {
    id: c.id,
    object: 'response',
    created_at: c.createdAt,
    status,
    error: null,
    incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    model: c.model,
    output,
    ...c.echo,
    usage: u ? responsesUsage(u) : null,
  };
}

const statusOf = (o: CompletionOutput): string => (o.finishReason === 'length' ? 'incomplete' : 'completed');

/** The body of a finished, non-streamed request. */
export function responseBody(c: ResponsesContext, o: CompletionOutput, u: Usage): Body {
  const output: Body[] = [];
  const parsed = c.parseTools ? parseToolCalls(o.text) : { content: o.text, toolCalls: [] };
  if (parsed.content !== null && (parsed.content !== '' || parsed.toolCalls.length === 0))
    output.push(messageItem(itemId('msg'), parsed.content, 'completed'));
  for (const call of parsed.toolCalls)
    output.push(functionCallItem(itemId('fc'), call, call.function.arguments, 'completed'));
  return responseObject(c, statusOf(o), output, u);
}

/**
 * The events of a streamed response, in the documented order: response.created and
 * response.in_progress; for the text, output_item.added, content_part.added, output_text.delta
 * per piece, output_text.done, content_part.done, output_item.done; for each tool call,
 * output_item.added, function_call_arguments.delta and .done, output_item.done; then
 * response.completed with the whole response and its usage.
 */
export class ResponsesEvents {
  private sequence = 0;
  private readonly output: Body[] = [];
  private readonly parser: ToolCallStreamParser | null;
  /** The message item being streamed, if any. */
  private message: { id: string; index: number; text: string } | null = null;

  constructor(private readonly c: ResponsesContext) {
    this.parser = c.parseTools ? new ToolCallStreamParser() : null;
  }

  private event(type: string, fields: Body): Body {
    return { type, sequence_number: this.sequence++, ...fields };
  }

  opening(): Body[] {
    const r = responseObject(this.c, 'in_progress', []);
    return [this.event('response.created', { response: r }), this.event('response.in_progress', { response: r })];
  }

  delta(text: string): Body[] {
    if (!this.parser) return this.text(text);
    const ev = this.parser.push(text);
    return [...this.text(ev.content ?? ''), ...(ev.toolCalls ?? []).flatMap((call) => this.call(call))];
  }

  private text(text: string): Body[] {
    if (text === '') return [];
    const out = this.openMessage();
    this.message!.text += text;
    out.push(
      this.event('response.output_text.delta', {
        item_id: this.message!.id,
        output_index: this.message!.index,
        content_index: 0,
        delta: text,
        logprobs: [],
      }),
    );
    return out;
  }

  /** The message item's opening events, unless it is open already. */
  private openMessage(): Body[] {
    const out: Body[] = [];
    if (!this.message) {
      this.message = { id: itemId('msg'), index: this.output.length, text: '' };
      this.output.push(messageItem(this.message.id, '', 'in_progress'));
      const at = { output_index: this.message.index };
      out.push(
        this.event('response.output_item.added', { ...at, item: messageItem(this.message.id, '', 'in_progress') }),
      );
      out.push(
        this.event('response.content_part.added', {
          item_id: this.message.id,
          ...at,
          content_index: 0,
          part: { type: 'output_text', text: '', annotations: [] },
        }),
      );
    }
    return out;
  }

  /** The message item's closing events. */
  private closeMessage(): Body[] {
    const m = this.message;
    if (!m) return [];
    this.message = null;
    const item = messageItem(m.id, m.text, 'completed');
    this.output[m.index] = item;
    const at = { item_id: m.id, output_index: m.index, content_index: 0 };
    return [
      this.event('response.output_text.done', { ...at, text: m.text, logprobs: [] }),
      this.event('response.content_part.done', { ...at, part: { type: 'output_text', text: m.text, annotations: [] } }),
      this.event('response.output_item.done', { output_index: m.index, item }),
    ];
  }

  private call(call: ToolCall): Body[] {
    const out = this.closeMessage();
    const id = itemId('fc');
    const index = this.output.length;
    const args = call.function.arguments;
    this.output.push(functionCallItem(id, call, args, 'completed'));
    out.push(
      this.event('response.output_item.added', {
        output_index: index,
        item: functionCallItem(id, call, '', 'in_progress'),
      }),
    );
    out.push(this.event('response.function_call_arguments.delta', { item_id: id, output_index: index, delta: args }));
    out.push(
      this.event('response.function_call_arguments.done', { item_id: id, output_index: index, arguments: args }),
    );
    out.push(this.event('response.output_item.done', { output_index: index, item: this.output[index] }));
    return out;
  }

  finish(o: CompletionOutput, u: Usage): Body[] {
    const out: Body[] = [];
    if (this.parser) {
      const ev = this.parser.finish();
      out.push(...this.text(ev.content ?? ''), ...(ev.toolCalls ?? []).flatMap((call) => this.call(call)));
    }
    if (this.output.length === 0) out.push(...this.openMessage()); // an empty answer is still one message
    out.push(...this.closeMessage());
    out.push(this.event('response.completed', { response: responseObject(this.c, statusOf(o), this.output, u) }));
    return out;
  }
}

/** Server-Sent Events of one streamed response; `fail` mid-stream writes an error event. */
export function openResponsesStream(res: http.ServerResponse, c: ResponsesContext) {
  const events = new ResponsesEvents(c);
  res.writeHead(200, {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no',
  });
  res.flushHeaders();
  const send = (list: Body[]) => {
    for (const e of list)
      if (!res.writableEnded && !res.destroyed) res.write(`event: ${String(e.type)}\ndata: ${JSON.stringify(e)}\n\n`);
  };
  send(events.opening());
  let last: CompletionOutput | null = null;
  return {
    delta: (_index: number, text: string) => send(events.delta(text)),
    finish: (o: CompletionOutput) => {
      last = o;
    },
    end(u: Usage) {
      if (last && last.finishReason !== 'abort') send(events.finish(last, u));
      if (!res.writableEnded && !res.destroyed) res.end();
    },
  };
}
