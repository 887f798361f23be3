import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { ChatTemplateError, QwenTokenizer, applyChatTemplate, type ChatMessage } from '../src/tokenizer/index.js';

const TOKENIZER_DIR = fileURLToPath(new URL('../assets/qwen2.5-tokenizer/', import.meta.url));
const TEMPLATE = (
  JSON.parse(readFileSync(TOKENIZER_DIR + 'tokenizer_config.json', 'utf8')) as { chat_template: string }
).chat_template;

const DEFAULT_SYSTEM = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.';

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

function errorOf(f: () => unknown): ChatTemplateError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ChatTemplateError);
    return e as ChatTemplateError;
  }
  throw new Error('expected an error');
}

describe('Qwen2.5 chat template', () => {
  it('system + user with a generation prompt (the Qwen2.5 model card example)', () => {
    const out = applyChatTemplate(
      TEMPLATE,
      [
        { role: 'system', content: 'You are a helpful assistant.' },
        { role: 'user', content: '跟我讲讲股市运行的逻辑' },
      ],
      { addGenerationPrompt: true },
    );
    expect(out).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n跟我讲讲股市运行的逻辑<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('without a system message the default Qwen system prompt appears', () => {
    const out = applyChatTemplate(TEMPLATE, [{ role: 'user', content: 'hi' }], { addGenerationPrompt: true });
    expect(out).toBe(
      `<|im_start|>system\n${DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n`,
    );
  });

  it('no generation prompt, multi-turn', () => {
    const out = applyChatTemplate(TEMPLATE, [
      { role: 'user', content: '1+1?' },
      { role: 'assistant', content: '2' },
      { role: 'user', content: 'and 2+2?' },
    ]);
    expect(out).toBe(
      `<|im_start|>system\n${DEFAULT_SYSTEM}<|im_end|>\n` +
        '<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n<|im_start|>user\nand 2+2?<|im_end|>\n',
    );
  });

  it('tools: the tools branch renders the signatures as JSON (Python json.dumps spacing)', () => {
    const out = applyChatTemplate(TEMPLATE, [{ role: 'user', content: 'Weather in Paris?' }], {
      addGenerationPrompt: true,
      tools: [WEATHER_TOOL],
    });
    expect(out).toBe(
      `<|im_start|>system\n${DEFAULT_SYSTEM}\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n` +
        'You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n' +
        '{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather", ' +
        '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n' +
        '</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n' +
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' +
        '<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('tools with a system message keep that system message; an empty tool list means no tools', () => {
    const msgs: ChatMessage[] = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'x' },
    ];
    expect(applyChatTemplate(TEMPLATE, msgs, { tools: [WEATHER_TOOL] })).toMatch(
      /^<\|im_start\|>system\nBe brief\.\n\n# Tools\n/,
    );
    expect(applyChatTemplate(TEMPLATE, msgs, { tools: [] })).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nx<|im_end|>\n',
    );
  });

  it('assistant tool calls (OpenAI string arguments are parsed) and grouped tool responses', () => {
    const out = applyChatTemplate(
      TEMPLATE,
      [
        { role: 'user', content: 'Weather in Paris and Rome?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            { id: 'a', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } },
            { id: 'b', type: 'function', function: { name: 'get_weather', arguments: { city: 'Rome' } } },
          ],
        },
        { role: 'tool', content: 'sunny' },
        { role: 'tool', content: 'rainy' },
      ],
      { addGenerationPrompt: true },
    );
    expect(out).toBe(
      `<|im_start|>system\n${DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nWeather in Paris and Rome?<|im_end|>\n` +
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' +
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n' +
        '<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrainy\n</tool_response><|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
  });

  it("does not mutate the caller's messages", () => {
    const msgs: ChatMessage[] = [
      { role: 'user', content: 'q' },
      { role: 'assistant', content: null, tool_calls: [{ function: { name: 'f', arguments: '{"a": 1}' } }] },
    ];
    const before = JSON.stringify(msgs);
    applyChatTemplate(TEMPLATE, msgs);
    expect(JSON.stringify(msgs)).toBe(before);
  });

  it('extra variables reach the template', () => {
    expect(
      applyChatTemplate('{{ greeting }} {{ messages[0].content }}', [{ role: 'user', content: 'x' }], {
        extra: { greeting: 'hi' },
      }),
    ).toBe('hi x');
  });
});

describe('message validation names the bad field', () => {
  const cases: [unknown, string, RegExp][] = [
    ['not an array', 'messages', /messages must be an array, got string/],
    [[], 'messages', /messages must not be empty/],
    [[null], 'messages[0]', /messages\[0\] must be an object, got null/],
    [[{ content: 'x' }], 'messages[0].role', /messages\[0\]\.role must be a non-empty string, got undefined/],
    [[{ role: 3, content: 'x' }], 'messages[0].role', /got number/],
    [
      [
        { role: 'user', content: 'ok' },
        { role: 'user', content: 5 },
      ],
      'messages[1].content',
      /messages\[1\]\.content must be a string, got number/,
    ],
    [[{ role: 'user' }], 'messages[0].content', /messages\[0\]\.content must be a string, got undefined/],
    [[{ role: 'user', content: null }], 'messages[0].content', /got null/],
    [[{ role: 'user', content: [{ type: 'text', text: 'x' }] }], 'messages[0].content', /got array/],
    [[{ role: 'assistant', content: null, tool_calls: 'x' }], 'messages[0].tool_calls', /must be an array/],
    [
      [{ role: 'assistant', content: '', tool_calls: [{ function: { arguments: '{}' } }] }],
      'messages[0].tool_calls[0].function.name',
      /name must be a non-empty string/,
    ],
    [
      [{ role: 'assistant', content: '', tool_calls: [{ function: { name: 'f', arguments: '{oops' } }] }],
      'messages[0].tool_calls[0].function.arguments',
      /not valid JSON/,
    ],
  ];
  for (const [messages, field, message] of cases) {
    it(`${JSON.stringify(messages)} -> ${field}`, () => {
      const err = errorOf(() => applyChatTemplate(TEMPLATE, messages as ChatMessage[]));
      expect(err.field).toBe(field);
      expect(err.message).toMatch(message);
    });
  }

  it('tools must be an array of objects', () => {
    const msgs = [{ role: 'user', content: 'x' }];
    expect(errorOf(() => applyChatTemplate(TEMPLATE, msgs, { tools: {} as unknown as object[] })).field).toBe('tools');
    expect(
      errorOf(() => applyChatTemplate(TEMPLATE, msgs, { tools: [WEATHER_TOOL, 'x' as unknown as object] })).field,
    ).toBe('tools[1]');
  });
});

describe('QwenTokenizer.applyChatTemplate', () => {
  let tok: QwenTokenizer;
  beforeAll(async () => {
    tok = await QwenTokenizer.fromDir(TOKENIZER_DIR);
  });

  it('uses the template from tokenizer_config.json and encodes to the chat special tokens', () => {
    const msgs = [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: 'hi' },
    ];
    const prompt = tok.applyChatTemplate(msgs, { addGenerationPrompt: true });
    expect(prompt).toBe(applyChatTemplate(TEMPLATE, msgs, { addGenerationPrompt: true }));
    // Same ids as the independent reference produced for this exact string (golden "chat_specials").
    expect(tok.encode(prompt)).toEqual([
      151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 6023, 151645, 198, 151644,
      77091, 198,
    ]);
  });

  it('passes the special-token strings to the template', () => {
    // Templates of other models use eos_token; Qwen's does not, but the variable must exist.
    const t = Object.create(tok) as QwenTokenizer;
    Object.defineProperty(t, 'chatTemplate', { value: '{{ eos_token }}|{{ pad_token }}' });
    expect(t.applyChatTemplate([{ role: 'user', content: 'x' }])).toBe('<|im_end|>|<|endoftext|>');
  });
});
