// Structured output through the server, with the official `openai` client on the tiny synthetic
// model (random weights: every valid output below is the constraint's doing). A tool whose
// parameters carry minimum, format and $ref is called with tool_choice "required"; guided_grammar
// (vLLM's field) takes a GBNF grammar; bad constraints are 400s naming the field and the limit.
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
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
const ajv = new Ajv2020.default({ strict: false });
addFormats.default(ajv);

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

const bookingParams = {
  type: 'object',
  $defs: { day: { type: 'string', format: 'date' } },
  properties: {
    city: { type: 'string', maxLength: 12, description: 'annotations are ignored', examples: ['Oslo'] },
    start: { $ref: '#/$defs/day' },
    days: { type: 'integer', minimum: 1, maximum: 14 },
    contact: { type: 'string', format: 'email' },
  },
  required: ['city', 'start', 'days'],
  additionalProperties: false,
};

async function post(path: string, body: unknown): Promise<{ status: number; json: any }> {
  const r = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: r.status, json: await r.json() };
}

describe('structured output through the server', () => {
  it('tool_choice "required" with minimum, format and $ref: every call validates (openai client)', async () => {
    const validate = ajv.compile(bookingParams);
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Book me a trip.' }],
      tools: [{ type: 'function', function: { name: 'book_trip', parameters: bookingParams } }],
      tool_choice: 'required',
      max_tokens: 160,
      temperature: 1,
      seed: 3,
      n: 3,
    });
    expect(r.choices).toHaveLength(3);
    for (const c of r.choices) {
      expect(c.finish_reason).toBe('tool_calls');
      const calls = c.message.tool_calls!;
      expect(calls.length).toBeGreaterThan(0);
      for (const call of calls) {
        if (call.type !== 'function') throw new Error('not a function call');
        expect(call.function.name).toBe('book_trip');
        const args: unknown = JSON.parse(call.function.arguments);
        expect(validate(args), `${call.function.arguments}: ${JSON.stringify(validate.errors)}`).toBe(true);
      }
    }
  });

  it('guided_grammar: the output is in the grammar', async () => {
    const gbnf = 'root ::= "(" item ("," item)* ")"\nitem ::= [0-9] | root\n';
    const { status, json } = await post('/v1/completions', {
      model: MODEL,
      prompt: 'List:',
      guided_grammar: gbnf,
      max_tokens: 40,
      temperature: 1,
      seed: 5,
      n: 4,
    });
    expect(status).toBe(200);
    // An independent check: strip innermost groups until nothing is left.
    for (const c of json.choices as { text: string; finish_reason: string }[]) {
      if (c.finish_reason !== 'stop') continue;
      let t = c.text;
      for (let k = 0; k < 50 && /\([0-9x](,[0-9x])*\)/.test(t); k++) t = t.replace(/\([0-9x](,[0-9x])*\)/g, 'x');
      expect(t, c.text).toBe('x');
    }
  });

  it('bad constraints are 400s naming the field and the limit; the server keeps serving', async () => {
    const bad = async (body: Record<string, unknown>, param: RegExp, message: RegExp) => {
      const { status, json } = await post('/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 2, ...body });
      expect(status, JSON.stringify(json)).toBe(400);
      expect(json.error.param).toMatch(param);
      expect(json.error.message).toMatch(message);
    };
    await bad(
      { guided_regex: '((.{256}){256}){256}' },
      /guided_regex/,
      /(automaton states|took more than \d+ ms) \(the limit per request\)/,
    );
    await bad({ guided_json: { type: [] } }, /guided_json\.type/, /at least one type/);
    let deep: Record<string, unknown> = { type: 'string' };
    for (let i = 0; i < 300; i++) deep = { type: 'array', items: deep };
    await bad({ guided_json: deep }, /guided_json/, /nests more than 128 levels/);
    await bad({ guided_grammar: 'root ::= root "x" | "y"' }, /guided_grammar/, /left recursion/);
    await bad({ guided_json: { type: 'array', uniqueItems: true } }, /guided_json\.uniqueItems/, /uniqueItems/);
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);
  });
});
