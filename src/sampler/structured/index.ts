// Structured output: what a request asks for (plain data, so it survives structured clone to a
// worker thread) -> a compiled automaton (cached by the request's JSON) -> a TokenGuide per
// vocabulary (cached too: the memoised masks are reused by every request with the same spec).
import { ConstraintState, TokenGuide } from './guide.js';
import { SchemaError, schemaFrag } from './json-schema.js';
import { alt, buildNfa, literal, literalBytes, loop1, seq, LazyDfa, type Frag } from './nfa.js';
import { RegexSyntaxError, regexFrag } from './regex.js';
import { TOOL_CALL_END_BYTE, TOOL_CALL_START_BYTE, type TokenVocabulary } from './vocabulary.js';

export { ConstraintState, TokenGuide } from './guide.js';
export { FREE_DEPTH } from './json-schema.js';
export {
  TOOL_CALL_END,
  TOOL_CALL_START,
  TokenTrie,
  trieOf,
  vocabularyFromTokenizer,
  type TokenVocabulary,
  type VocabularySource,
} from './vocabulary.js';

export interface ToolFunctionSpec {
  name: string;
  /** JSON schema of the arguments object (the supported subset); absent: any object. */
  parameters?: Record<string, unknown>;
}

/** What the output must be. */
export type StructuredOutput =
  /** A JSON value matching `schema`; without a schema, any JSON object (response_format json_object). */
  | { type: 'json'; schema?: Record<string, unknown> | boolean }
  /** Text matching the regular expression as a whole (see regex.ts for the subset). */
  | { type: 'regex'; pattern: string }
  /** Exactly one of these strings. */
  | { type: 'choice'; choices: string[] }
  /**
   * Qwen2.5 tool-call blocks: `<tool_call>\n{"name": "<fn>", "arguments": <args>}\n</tool_call>`,
   * one of `functions` each, arguments matching the function's parameters. One block, or with
   * `multiple` one or more separated by newlines.
   */
  | { type: 'toolCall'; functions: ToolFunctionSpec[]; multiple?: boolean };

export class StructuredOutputError extends Error {
  constructor(
    message: string,
    /** Where in the spec, e.g. "schema.properties.city.format", "pattern", "functions[0].parameters.x". */
    readonly path: string,
  ) {
    super(message);
    this.name = 'StructuredOutputError';
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function fragOf(spec: StructuredOutput): Frag {
  if (!isObject(spec)) throw new StructuredOutputError('structured output must be an object', '');
  switch (spec.type) {
    case 'json': {
      const schema = spec.schema ?? { type: 'object' };
      return wrapSchema(schema, 'schema');
    }
    case 'regex':
      if (typeof spec.pattern !== 'string') throw new StructuredOutputError('pattern must be a string', 'pattern');
      try {
        return regexFrag(spec.pattern);
      } catch (e) {
        if (e instanceof RegexSyntaxError) throw new StructuredOutputError(e.message, 'pattern');
        throw e;
      }
    case 'choice':
      if (
        !Array.isArray(spec.choices) ||
        spec.choices.length === 0 ||
        !spec.choices.every((c) => typeof c === 'string')
      )
        throw new StructuredOutputError('choices must be a non-empty array of strings', 'choices');
      return alt(...spec.choices.map(literal));
    case 'toolCall': {
      const fns = spec.functions;
      if (!Array.isArray(fns) || fns.length === 0)
        throw new StructuredOutputError('functions must be a non-empty array', 'functions');
      const blocks = fns.map((fn, i) => {
        if (!isObject(fn) || typeof fn.name !== 'string' || fn.name === '')
          throw new StructuredOutputError(`functions[${i}].name must be a non-empty string`, `functions[${i}].name`);
        const params = fn.parameters ?? { type: 'object' };
        const schema = isObject(params) && params.type === undefined ? { type: 'object', ...params } : params;
        return seq(
          literalBytes([TOOL_CALL_START_BYTE]),
          literal(`\n{"name": ${JSON.stringify(fn.name)}, "arguments": `),
          wrapSchema(schema, `functions[${i}].parameters`),
          literal('}\n'),
          literalBytes([TOOL_CALL_END_BYTE]),
        );
      });
      const one = blocks.length === 1 ? blocks[0]! : alt(...blocks);
      return spec.multiple ? loop1(one, literal('\n')) : one;
    }
    default:
      throw new StructuredOutputError(
        `type must be "json", "regex", "choice" or "toolCall", got ${JSON.stringify((spec as { type: unknown }).type)}`,
        'type',
      );
  }
}

function wrapSchema(schema: unknown, path: string): Frag {
  try {
    return schemaFrag(schema);
  } catch (e) {
    if (e instanceof SchemaError) throw new StructuredOutputError(e.message, e.path ? `${path}.${e.path}` : path);
    throw e;
  }
}

// Compiled automata by spec, most recently used last.
const compiled = new Map<string, LazyDfa>();
const MAX_COMPILED = 16;

/** Compiles (or fetches from the cache) the automaton of a spec; throws StructuredOutputError. */
export function compileStructuredOutput(spec: StructuredOutput): LazyDfa {
  const key = JSON.stringify(spec);
  let dfa = compiled.get(key);
  if (dfa) {
    compiled.delete(key);
    compiled.set(key, dfa);
    return dfa;
  }
  dfa = new LazyDfa(buildNfa(fragOf(spec)));
  if (compiled.size >= MAX_COMPILED) compiled.delete(compiled.keys().next().value!);
  compiled.set(key, dfa);
  return dfa;
}

const guides = new WeakMap<TokenVocabulary, WeakMap<LazyDfa, TokenGuide>>();

/** The token guide of a spec over a vocabulary (cached with the compiled automaton). */
export function guideFor(spec: StructuredOutput, vocab: TokenVocabulary): TokenGuide {
  const dfa = compileStructuredOutput(spec);
  let byDfa = guides.get(vocab);
  if (!byDfa) guides.set(vocab, (byDfa = new WeakMap()));
  let g = byDfa.get(dfa);
  if (!g) byDfa.set(dfa, (g = new TokenGuide(dfa, vocab)));
  return g;
}

export function constraintFor(spec: StructuredOutput, vocab: TokenVocabulary): ConstraintState {
  return new ConstraintState(guideFor(spec, vocab));
}
