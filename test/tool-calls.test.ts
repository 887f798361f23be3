// The hermes-style tool-call parser on crafted Qwen2.5 outputs, non-streamed and streamed (split at
// every token boundary of the real tokenizer, and at every character), against the OpenAI objects.
import { beforeAll, describe, expect, it } from 'vitest';
import { parseToolCalls, ToolCallStreamParser, type ToolCallDelta } from '../src/engine/tool-calls.js';
import { QwenTokenizer, StreamDecoder } from '../src/tokenizer/index.js';

let tok: QwenTokenizer;
beforeAll(async () => {
  tok = await QwenTokenizer.fromDir(new URL('../assets/qwen2.5-tokenizer', import.meta.url).pathname);
});

const block = (name: string, args: string) => `<tool_call>\n{"name": "${name}", "arguments": ${args}}\n</tool_call>`;
const strip = <T extends { id?: string }>(calls: T[]) =>
  calls.map(({ id, ...rest }) => (expect(id).toMatch(/^call_/), rest));

const CASES: { name: string; text: string; content: string | null; calls: { name: string; arguments: string }[] }[] = [
  {
    name: 'one call',
    text: block('get_weather', '{"city": "Paris"}'),
    content: null,
    calls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }],
  },
  {
    name: 'several calls',
    text: block('get_weather', '{"city": "Paris"}') + '\n' + block('get_time', '{"tz": "CET", "n": [1, 2.5]}'),
    content: null,
    calls: [
      { name: 'get_weather', arguments: '{"city":"Paris"}' },
      { name: 'get_time', arguments: '{"tz":"CET","n":[1,2.5]}' },
    ],
  },
  {
    name: 'text before',
    text: 'Let me check that for you.\n' + block('f', '{}'),
    content: 'Let me check that for you.\n',
    calls: [{ name: 'f', arguments: '{}' }],
  },
  {
    name: 'malformed JSON falls back to plain content',
    text: 'Sure. ' + block('f', '{"a": }'),
    content: 'Sure. ' + block('f', '{"a": }'),
    calls: [],
  },
  {
    name: 'no tool call',
    text: 'Just text with a < sign and <tool but no tag.',
    content: 'Just text with a < sign and <tool but no tag.',
    calls: [],
  },
  {
    name: 'cut by max_tokens inside the arguments',
    text: 'ok<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',
    content: 'ok',
    calls: [{ name: 'get_weather', arguments: '{"city": "Par' }],
  },
  {
    name: 'cut before the name is complete: no call',
    text: 'x<tool_call>\n{"name": "get_wea',
    content: 'x<tool_call>\n{"name": "get_wea',
    calls: [],
  },
  {
    name: 'cut after a complete JSON object, before </tool_call>',
    text: '<tool_call>\n{"name": "f", "arguments": {"a": "日本"}}\n',
    content: null,
    calls: [{ name: 'f', arguments: '{"a":"日本"}' }],
  },
];

describe('parseToolCalls (non-streamed)', () => {
  for (const c of CASES) {
    it(c.name, () => {
      const r = parseToolCalls(c.text);
      expect(r.content).toBe(c.content);
      expect(strip(r.toolCalls)).toEqual(c.calls.map((f) => ({ type: 'function', function: f })));
    });
  }
});

/** Feeds pieces to the stream parser; returns the concatenated content and the tool-call deltas. */
function streamed(pieces: string[]): { content: string; calls: ToolCallDelta[] } {
  const p = new ToolCallStreamParser();
  let content = '';
  const calls: ToolCallDelta[] = [];
  for (const ev of [...pieces.map((x) => p.push(x)), p.finish()]) {
    content += ev.content ?? '';
    calls.push(...(ev.toolCalls ?? []));
  }
  return { content, calls };
}

describe('ToolCallStreamParser', () => {
  // Streaming cannot take back text: a malformed block arrives as text, the rest as calls.
  const streamable = CASES.filter((c) => !c.name.startsWith('malformed'));

  for (const c of streamable) {
    it(`${c.name}: split at every token boundary (detokenized as the engine streams)`, () => {
      const ids = tok.encode(c.text);
      const dec = new StreamDecoder(tok, { skipSpecialTokens: true });
      const pieces = [...ids.map((id) => dec.push(id)), dec.flush()];
      expect(pieces.join('')).toBe(c.text);
      const r = streamed(pieces);
      expect(r.content).toBe(c.content ?? '');
      expect(r.calls.map((x) => x.index)).toEqual(c.calls.map((_, i) => i));
      expect(strip(r.calls).map(({ index, ...x }) => (void index, x))).toEqual(
        c.calls.map((f) => ({ type: 'function', function: f })),
      );
    });
    it(`${c.name}: split at every character`, () => {
      const r = streamed([...c.text]);
      expect(r.content).toBe(c.content ?? '');
      expect(r.calls.map((x) => x.function)).toEqual(c.calls);
    });
  }

  it('the tags are single tokens of the tokenizer', () => {
    expect(tok.encode('<tool_call>')).toEqual([tok.tokenToId('<tool_call>')]);
    expect(tok.encode('</tool_call>')).toEqual([tok.tokenToId('</tool_call>')]);
  });

  it('text never leaks a partial tag, and text after a block is dropped (as vLLM)', () => {
    const p = new ToolCallStreamParser();
    expect(p.push('Hi <tool')).toEqual({ content: 'Hi ' });
    expect(p.push('_call>\n{"name": "f", "arguments": {}}\n</tool_call>')).toEqual({
      toolCalls: [
        { index: 0, id: expect.stringMatching(/^call_/), type: 'function', function: { name: 'f', arguments: '{}' } },
      ],
    });
    expect(p.push('\nDone.')).toEqual({});
    expect(p.finish()).toEqual({});
    expect(p.callCount).toBe(1);
  });

  it('a malformed block in a stream arrives as text', () => {
    const text = block('f', '{oops}');
    expect(streamed([text])).toEqual({ content: text, calls: [] });
  });
});
