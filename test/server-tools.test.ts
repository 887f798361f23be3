// Tool calls and structured output through the official `openai` client, unchanged, on the tiny
// synthetic model (random weights: it never calls a tool by itself, so every call below is forced
// by tool_choice and constrained decoding).
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../src/engine/llm.js';
import { createServer, type OpenAIServer } from '../src/server/server.js';
import { validate } from './helpers/json-validator.js';
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

const weatherParams = {
  type: 'object',
  properties: {
    location: { type: 'string', description: 'City and country e.g. Bogotá, Colombia' },
    unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
  },
  required: ['location', 'unit'],
  additionalProperties: false,
};
const tools: OpenAI.Chat.Completions.ChatCompletionTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Get current temperature for a location.',
      parameters: weatherParams,
    },
  },
  {
    type: 'function',
    function: {
      name: 'send_email',
      parameters: {
        type: 'object',
        properties: { to: { type: 'string' }, urgent: { type: 'boolean' } },
        required: ['to'],
      },
    },
  },
];
const paramsOf = (name: string) => tools.find((t) => t.function.name === name)!.function.parameters!;
const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [
  { role: 'user', content: 'What is the weather like in Paris today?' },
];

function expectValidCall(call: { id?: string; type?: string; function?: { name?: string; arguments?: string } }) {
  expect(call.id).toMatch(/^call_[0-9a-f]{24}$/);
  expect(call.type).toBe('function');
  const name = call.function!.name!;
  expect(tools.map((t) => t.function.name)).toContain(name);
  const args: unknown = JSON.parse(call.function!.arguments!);
  expect(validate(args, paramsOf(name) as Record<string, unknown>), call.function!.arguments).toEqual([]);
}

async function post(body: unknown): Promise<{ status: number; json: { error?: { message: string; param: string } } }> {
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL, messages, max_tokens: 8, ...(body as object) }),
  });
  return { status: r.status, json: (await r.json()) as { error?: { message: string; param: string } } };
}

describe('tool calls', () => {
  it('tool_choice "required": valid calls, finish_reason tool_calls (4 seeds)', async () => {
    for (let seed = 0; seed < 4; seed++) {
      const r = await client.chat.completions.create({
        model: MODEL,
        messages,
        tools,
        tool_choice: 'required',
        max_tokens: 120,
        seed,
      });
      const choice = r.choices[0]!;
      expect(choice.finish_reason).toBe('tool_calls');
      expect(choice.message.content).toBeNull();
      expect(choice.message.tool_calls!.length).toBeGreaterThanOrEqual(1);
      for (const call of choice.message.tool_calls!) expectValidCall(call as never);
    }
  });

  it('a named function, streamed: one call in delta.tool_calls with index 0, equal to the non-streamed one', async () => {
    const request = {
      model: MODEL,
      messages,
      tools,
      tool_choice: { type: 'function' as const, function: { name: 'get_weather' } },
      max_tokens: 80,
      seed: 3,
    };
    const stream = await client.chat.completions.create({ ...request, stream: true });
    const calls: { index: number; id?: string; type?: string; function?: { name?: string; arguments?: string } }[] = [];
    let finish: string | null = null;
    let content = '';
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      content += c.delta.content ?? '';
      for (const tc of c.delta.tool_calls ?? []) calls.push(tc as never);
      if (c.finish_reason) finish = c.finish_reason;
    }
    expect(finish).toBe('tool_calls');
    expect(content).toBe('');
    expect(calls).toHaveLength(1);
    expect(calls[0]!.index).toBe(0);
    expect(calls[0]!.function!.name).toBe('get_weather');
    expectValidCall(calls[0]!);
    const whole = await client.chat.completions.create(request);
    expect(whole.choices[0]!.message.tool_calls!.map((c) => c.function)).toEqual([calls[0]!.function]);
  });

  it('tool_choice "auto" with a model that does not call: plain content, finish_reason stop/length', async () => {
    const r = await client.chat.completions.create({ model: MODEL, messages, tools, max_tokens: 5, seed: 1 });
    expect(typeof r.choices[0]!.message.content).toBe('string');
    expect(r.choices[0]!.message.tool_calls ?? []).toEqual([]);
    expect(['stop', 'length']).toContain(r.choices[0]!.finish_reason);
  });

  it('tool_choice "none" leaves the tools out of the prompt', async () => {
    const plain = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 1 });
    const none = await client.chat.completions.create({
      model: MODEL,
      messages,
      tools,
      tool_choice: 'none',
      max_tokens: 1,
    });
    const auto = await client.chat.completions.create({ model: MODEL, messages, tools, max_tokens: 1 });
    expect(none.usage!.prompt_tokens).toBe(plain.usage!.prompt_tokens);
    expect(auto.usage!.prompt_tokens).toBeGreaterThan(plain.usage!.prompt_tokens + 50);
  });

  it('bad tool requests are 400s naming the field', async () => {
    let r = await post({ tools, tool_choice: { type: 'function', function: { name: 'nope' } } });
    expect(r.status).toBe(400);
    expect(r.json.error!.param).toBe('tool_choice');
    expect(r.json.error!.message).toMatch(/"nope", which is not in tools/);
    r = await post({ tool_choice: 'required' });
    expect(r.status).toBe(400);
    expect(r.json.error!.message).toMatch(/needs tools/);
    const badTools = [
      {
        type: 'function',
        function: {
          name: 'f',
          parameters: { type: 'object', properties: { a: { type: 'array', uniqueItems: true } } },
        },
      },
    ];
    r = await post({ tools: badTools, tool_choice: 'required' });
    expect(r.status).toBe(400);
    expect(r.json.error!.param).toBe('tools[0].function.parameters.properties.a.uniqueItems');
    expect(r.json.error!.message).toMatch(/unsupported JSON-schema keyword "uniqueItems"/);
  });
});

describe('structured output', () => {
  const person = {
    type: 'object',
    properties: {
      name: { type: 'string' },
      age: { type: 'integer' },
      email: { anyOf: [{ type: 'string' }, { type: 'null' }] },
    },
    required: ['name', 'age', 'email'],
    additionalProperties: false,
  };

  it('response_format json_schema (strict), as in the openai docs: content parses and validates', async () => {
    for (let seed = 0; seed < 4; seed++) {
      const r = await client.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'Extract the person.' }],
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema: person, strict: true } },
        max_tokens: 40,
        seed,
      });
      const text = r.choices[0]!.message.content!;
      expect(validate(JSON.parse(text), person), text).toEqual([]);
    }
  });

  it('response_format json_object, streamed: the concatenated deltas are a JSON object', async () => {
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Reply in JSON.' }],
      response_format: { type: 'json_object' },
      max_tokens: 24,
      seed: 5,
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    const v: unknown = JSON.parse(text);
    expect(v !== null && typeof v === 'object' && !Array.isArray(v)).toBe(true);
  });

  it('guided_choice and guided_regex (vLLM extras) on both endpoints', async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 10,
      guided_choice: ['sunny', 'rainy', 'cloudy'],
    } as never);
    expect(['sunny', 'rainy', 'cloudy']).toContain(
      (r as OpenAI.Chat.Completions.ChatCompletion).choices[0]!.message.content,
    );
    const c = await client.completions.create({
      model: MODEL,
      prompt: 'Phone:',
      max_tokens: 20,
      n: 3,
      seed: 2,
      guided_regex: '\\+33 [1-9]( \\d\\d){4}',
    } as never);
    for (const ch of (c as OpenAI.Completions.Completion).choices) expect(ch.text).toMatch(/^\+33 [1-9]( \d\d){4}$/);
  });

  it('unsupported schema keywords and regex syntax are 400s naming them', async () => {
    let r = await post({
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'x', schema: { type: 'object', properties: { d: { type: 'string', format: 'color' } } } },
      },
    });
    expect(r.status).toBe(400);
    expect(r.json.error!.param).toBe('response_format.json_schema.schema.properties.d.format');
    expect(r.json.error!.message).toMatch(/unsupported JSON-schema keyword "format"/);
    r = await post({ guided_regex: '(?<=a)b' });
    expect(r.status).toBe(400);
    expect(r.json.error!.param).toBe('guided_regex');
    expect(r.json.error!.message).toMatch(/group syntax "\(\?<=/);
    r = await post({ guided_choice: ['a'], guided_regex: 'a' });
    expect(r.status).toBe(400);
    expect(r.json.error!.message).toMatch(/Only one of guided_choice and guided_regex/);
    r = await post({ response_format: { type: 'xml' } });
    expect(r.status).toBe(400);
    expect(r.json.error!.param).toBe('response_format.type');
  });
});

describe('sampling extras', () => {
  it('logit_bias +100 on one token makes greedy decoding repeat it; an id beyond the vocabulary is a 400', async () => {
    const id = llm.tokenizer.encode(' yes')[0]!;
    const r = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 4,
      temperature: 0,
      logit_bias: { [id]: 100 },
    });
    expect(r.choices[0]!.message.content).toBe(' yes yes yes yes');
    const bad = await post({ logit_bias: { 999999: 1 } });
    expect(bad.status).toBe(400);
    expect(bad.json.error!.param).toBe('logit_bias');
  });

  it('min_tokens keeps EOS away; bad_words bans a word', async () => {
    const eos = llm.model.generationConfig.eosTokenIds[0]!;
    const r = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 3,
      temperature: 0,
      logit_bias: { [eos]: 100 },
      min_tokens: 2,
    } as never);
    expect((r as OpenAI.Chat.Completions.ChatCompletion).usage!.completion_tokens).toBe(3);
    const yes = llm.tokenizer.encode(' yes')[0]!;
    const banned = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 2,
      temperature: 0,
      logit_bias: { [yes]: 100 },
      bad_words: ['yes'],
    } as never);
    expect((banned as OpenAI.Chat.Completions.ChatCompletion).choices[0]!.message.content).not.toContain('yes');
  });
});
