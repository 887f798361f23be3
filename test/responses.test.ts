// /v1/responses through the official `openai` client (client.responses.create and .stream), on the
// tiny synthetic model (random weights: tool calls and JSON come from tool_choice and
// text.format's constrained decoding), and its 400s for what a stateless server cannot do.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { createServer, type OpenAIServer } from '../src/server/server.js';
import { makeTempModel, removeDir } from './helpers/models.js';

const MODEL = 'tiny-test';
let dir: string;
let llm: LLM;
let app: OpenAIServer;
let base: string;
let client: OpenAI;
beforeAll(async () => {
  dir = makeTempModel({ preset: 'tiny', seed: 0 });
  llm = await LLM.load(dir, { threads: 1, contextLength: 1024 });
  app = createServer(llm, { modelName: MODEL, log: false });
  const addr = await app.listen(0, '127.0.0.1');
  base = `http://127.0.0.1:${addr.port}`;
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await app?.close();
  await llm?.close();
  removeDir(dir);
});

const weather: OpenAI.Responses.FunctionTool = {
  type: 'function',
  name: 'get_weather',
  description: 'Get current temperature for a location.',
  parameters: {
    type: 'object',
    properties: { location: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
    required: ['location', 'unit'],
    additionalProperties: false,
  },
  strict: true,
};

describe('client.responses.create', () => {
  it('text: the same tokens as chat completions, as a Response with usage', async () => {
    const input = 'Tell me a story.';
    const r = await client.responses.create({
      model: MODEL,
      input,
      instructions: 'You are terse.',
      max_output_tokens: 8,
      temperature: 0,
    });
    const chat = await client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: input },
      ],
      max_tokens: 8,
      temperature: 0,
    });
    expect(r.object).toBe('response');
    expect(r.id).toMatch(/^resp_/);
    expect(r.output_text).toBe(chat.choices[0].message.content);
    expect(r.output[0].type).toBe('message');
    expect(r.status).toBe(chat.choices[0].finish_reason === 'length' ? 'incomplete' : 'completed');
    expect(r.usage!.input_tokens).toBe(chat.usage!.prompt_tokens);
    expect(r.usage!.output_tokens).toBe(chat.usage!.completion_tokens);
    expect(r.instructions).toBe('You are terse.');
  });

  it('function call round trip: a forced call, then its output fed back as input items', async () => {
    const first = await client.responses.create({
      model: MODEL,
      input: 'What is the weather in Paris?',
      tools: [weather],
      tool_choice: { type: 'function', name: 'get_weather' },
      max_output_tokens: 64,
      temperature: 0,
    });
    const call = first.output.find((o) => o.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall;
    expect(call).toBeDefined();
    expect(call.name).toBe('get_weather');
    expect(call.call_id).toMatch(/^call_/);
    const args = JSON.parse(call.arguments) as { location: string; unit: string };
    expect(typeof args.location).toBe('string');
    expect(['celsius', 'fahrenheit']).toContain(args.unit);
    const second = await client.responses.create({
      model: MODEL,
      input: [
        { role: 'user', content: 'What is the weather in Paris?' },
        { type: 'function_call', call_id: call.call_id, name: call.name, arguments: call.arguments },
        { type: 'function_call_output', call_id: call.call_id, output: '{"temperature": 21}' },
      ],
      tools: [weather],
      tool_choice: 'none',
      max_output_tokens: 8,
      temperature: 0,
    });
    expect(second.output[0].type).toBe('message');
    // The items became the chat messages they stand for: the same prompt and answer as chat completions.
    const chat = await client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: 'user', content: 'What is the weather in Paris?' },
        {
          role: 'assistant',
          content: '',
          tool_calls: [
            { id: call.call_id, type: 'function', function: { name: call.name, arguments: call.arguments } },
          ],
        },
        { role: 'tool', tool_call_id: call.call_id, content: '{"temperature": 21}' },
      ],
      tools: [
        {
          type: 'function',
          function: { name: weather.name, description: weather.description!, parameters: weather.parameters! },
        },
      ],
      tool_choice: 'none',
      max_tokens: 8,
      temperature: 0,
    });
    expect(second.usage!.input_tokens).toBe(chat.usage!.prompt_tokens);
    expect(second.output_text).toBe(chat.choices[0].message.content);
  });

  it('text.format json_schema: output_text parses and matches the schema', async () => {
    const r = await client.responses.create({
      model: MODEL,
      input: 'Name a city.',
      text: {
        format: {
          type: 'json_schema',
          name: 'city',
          schema: {
            type: 'object',
            properties: { name: { type: 'string', maxLength: 12 }, big: { type: 'boolean' } },
            required: ['name', 'big'],
            additionalProperties: false,
          },
          strict: true,
        },
      },
      max_output_tokens: 64,
      temperature: 0,
    });
    const v = JSON.parse(r.output_text) as { name: string; big: boolean };
    expect(Object.keys(v).sort()).toEqual(['big', 'name']);
    expect(typeof v.big).toBe('boolean');
  });
});

describe('client.responses.stream', () => {
  it('text: the documented events in order, each numbered, deltas adding up to the final response', async () => {
    const stream = client.responses.stream({ model: MODEL, input: 'Hello', max_output_tokens: 6, temperature: 0 });
    const types: string[] = [];
    const numbers: number[] = [];
    let text = '';
    for await (const e of stream) {
      types.push(e.type);
      numbers.push(e.sequence_number);
      if (e.type === 'response.output_text.delta') text += e.delta;
    }
    const final = await stream.finalResponse();
    expect(numbers).toEqual(numbers.map((_, i) => i));
    const distinct = types.filter((t, i) => t !== types[i - 1]);
    expect(distinct).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(final.output_text).toBe(text);
    expect(final.usage!.output_tokens).toBe(6);
    const plain = await client.responses.create({ model: MODEL, input: 'Hello', max_output_tokens: 6, temperature: 0 });
    expect(plain.output_text).toBe(text);
  });

  it('function call: output_item.added, arguments delta and done, output_item.done, completed', async () => {
    const stream = client.responses.stream({
      model: MODEL,
      input: 'Weather in Oslo?',
      tools: [weather],
      tool_choice: 'required',
      max_output_tokens: 64,
      temperature: 0,
    });
    const types: string[] = [];
    let args = '';
    for await (const e of stream) {
      types.push(e.type);
      if (e.type === 'response.function_call_arguments.done') args = e.arguments;
    }
    const final = await stream.finalResponse();
    const calls = final.output.filter((o) => o.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall[];
    expect(calls.length).toBeGreaterThanOrEqual(1);
    expect(calls[0].arguments).toBe(args);
    const i = types.indexOf('response.function_call_arguments.delta');
    expect(types.slice(i - 1, i + 3)).toEqual([
      'response.output_item.added',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.done',
      'response.output_item.done',
    ]);
    expect(types[types.length - 1]).toBe('response.completed');
  });
});

describe('bad requests', () => {
  const post = (body: unknown) =>
    fetch(`${base}/v1/responses`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  it('are 400s naming the parameter', async () => {
    const cases: [unknown, string, RegExp][] = [
      [{ model: MODEL, input: 'hi', previous_response_id: 'resp_1' }, 'previous_response_id', /keeps no responses/],
      [{ model: MODEL, input: 'hi', store: true }, 'store', /keeps no responses/],
      [{ model: MODEL, input: [{ type: 'reasoning', summary: [] }] }, 'input[0].type', /"reasoning" is not supported/],
      [{ model: MODEL }, 'input', /input is required/],
      [{ model: MODEL, input: 'hi', tools: [{ type: 'web_search' }] }, 'tools[0].type', /function tools only/],
      [{ model: MODEL, input: 'hi', max_output_tokens: 0 }, 'max_output_tokens', /max_output_tokens/],
      [
        { model: MODEL, input: 'hi', text: { format: { type: 'json_schema', name: 'x' } } },
        'text.format.schema',
        /schema/,
      ],
      [{ model: MODEL, input: 'hi', reasoning: { effort: 'high' } }, 'reasoning', /not supported/],
    ];
    for (const [body, param, message] of cases) {
      const res = await post(body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      const e = ((await res.json()) as { error: { param: string; message: string } }).error;
      expect(e.param).toBe(param);
      expect(e.message).toMatch(message);
    }
  });
});
