// Tool calls and tool results through the real Qwen2.5 chat template, against the reference
// renderings of Python jinja2 (test/fixtures/tool-call-template.json, made by
// tools/tool_call_template_fixture.py), and the round trip output text -> tool_calls -> template.
import * as fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseToolCalls } from '../src/engine/tool-calls.js';
import { QwenTokenizer, type ChatMessage } from '../src/tokenizer/index.js';

interface Case {
  name: string;
  tools: object[];
  messages: ChatMessage[];
  rendered: string;
}
const CASES = JSON.parse(
  fs.readFileSync(new URL('./fixtures/tool-call-template.json', import.meta.url), 'utf8'),
) as Case[];

let tok: QwenTokenizer;
beforeAll(async () => {
  tok = await QwenTokenizer.fromDir(new URL('../assets/qwen2.5-tokenizer', import.meta.url).pathname);
});

describe('tool calls through the Qwen2.5 chat template', () => {
  for (const c of CASES) {
    it(`${c.name}: equals the reference rendering`, () => {
      expect(tok.applyChatTemplate(c.messages, { tools: c.tools, addGenerationPrompt: true })).toBe(c.rendered);
    });
  }

  it('round trip: the rendered assistant turn parses into the same calls, which render back identically', () => {
    for (const c of CASES) {
      const at = c.messages.findIndex((m) => m.tool_calls);
      const original = c.messages[at]!;
      // The assistant turn as the model writes it: between its header and <|im_end|>.
      const turns = c.rendered.split('<|im_start|>assistant\n');
      const text = turns[1]!.slice(0, turns[1]!.indexOf('<|im_end|>'));
      const parsed = parseToolCalls(text);
      expect(parsed.toolCalls.map((t) => t.function.name)).toEqual(original.tool_calls!.map((t) => t.function.name));
      parsed.toolCalls.forEach((t, i) =>
        expect(JSON.parse(t.function.arguments)).toEqual(
          JSON.parse(original.tool_calls![i]!.function.arguments as string),
        ),
      );
      // Sent back as the OpenAI client would (content before the calls, arguments as JSON strings).
      const back: ChatMessage = {
        role: 'assistant',
        content: parsed.content?.trimEnd() ?? null,
        tool_calls: parsed.toolCalls,
      };
      expect(back.content).toBe(original.content === null ? null : original.content);
      const messages = c.messages.map((m, i) => (i === at ? back : m));
      expect(tok.applyChatTemplate(messages, { tools: c.tools, addGenerationPrompt: true })).toBe(c.rendered);
    }
  });
});
