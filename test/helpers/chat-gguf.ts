// stories260K as a GGUF with a chat template in its metadata (tokenizer.chat_template), as chat
// models have: a tiny trained model that goes through the chat paths. The template ends the prompt
// with "Once upon a time", so the answer is a readable story.
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { convertToGguf } from '../../src/model/gguf/convert.js';
import { GGUF_VALUE, readGgufHeader } from '../../src/model/gguf/file.js';
import { writeGguf } from '../../src/model/gguf/writer.js';

const STORIES = fileURLToPath(new URL('../../assets/stories260K/', import.meta.url));

export const STORY_CHAT_TEMPLATE =
  "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}Once upon a time{% endif %}";

/** Write `src` (a GGUF; default: stories260K converted to F32 beside `out`) again with the chat template. */
export function writeStoriesChatGguf(out: string, src?: string): void {
  if (src === undefined) {
    src = `${out}.f32.tmp`;
    convertToGguf(STORIES, src, { type: 'f32' });
  }
  const h = readGgufHeader(src);
  const bytes = fs.readFileSync(src);
  writeGguf(
    out,
    [...h.metadata.entries(), ['tokenizer.chat_template', { type: GGUF_VALUE.STRING, value: STORY_CHAT_TEMPLATE }]],
    h.tensors.map((t) => ({
      name: t.name,
      dims: t.dims,
      type: t.type,
      data: () => bytes.subarray(t.dataStart, t.dataStart + t.byteLength),
    })),
  );
  if (src === `${out}.f32.tmp`) fs.rmSync(src);
}
