// Structured output: what a request asks for (plain data, so it survives structured clone to a
// worker thread) -> a compiled automaton (cached by the request's JSON) -> a TokenGuide per
// vocabulary (cached too: the memoised masks are reused by every request with the same spec).
import { TokenGuide } from './guide.js';
import { parseGbnf, GbnfError } from './gbnf.js';
import { SchemaError, schemaRules, type JsonOptions } from './json-schema.js';
import { ConstraintState, Matcher } from './matcher.js';
import {
  alt,
  buildNfa,
  BudgetError,
  DEFAULT_BUDGET,
  type Budget,
  literal,
  literalBytes,
  literalSet,
  loop1,
  seq,
  type Nfa,
  type RuleDef,
} from './nfa.js';
import { envVar } from '../../platform/runtime.js';
import { DEFAULT_PDA_LIMITS, GrammarError, Pda, type PdaLimits } from './pda.js';
import { RegexSyntaxError, regexFrag } from './regex.js';
import {
  TOOL_CALL_END_BYTE,
  TOOL_CALL_START_BYTE,
  vocabularyFromTokenizer,
  type TokenVocabulary,
  type VocabularySource,
} from './vocabulary.js';

export { TokenGuide } from './guide.js';
export { ConstraintState, Matcher } from './matcher.js';
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
  /**
   * A JSON value matching `schema`; without a schema, any JSON object (response_format
   * json_object). Whitespace between tokens: any run of space, tab, newline, return ("any", the
   * default, as LLGuidance) or none at all ("compact").
   */
  | { type: 'json'; schema?: Record<string, unknown> | boolean; whitespace?: 'any' | 'compact' }
  /** Text matching the regular expression as a whole (see regex.ts for the subset). */
  | { type: 'regex'; pattern: string }
  /** Exactly one of these strings. */
  | { type: 'choice'; choices: string[] }
  /** Text in the language of a GBNF grammar (llama.cpp's format), from its `root` rule. */
  | { type: 'grammar'; gbnf: string }
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

function jsonOptions(spec: { whitespace?: unknown }): JsonOptions {
  if (spec.whitespace !== undefined && spec.whitespace !== 'any' && spec.whitespace !== 'compact')
    throw new StructuredOutputError(
      `whitespace must be "any" or "compact", got ${JSON.stringify(spec.whitespace)}`,
      'whitespace',
    );
  return { compact: spec.whitespace === 'compact', maxMillis: compileBudget.maxMillis };
}

/** The rules of a spec (rules[0] is the whole output). */
function rulesOf(spec: StructuredOutput): RuleDef[] {
  if (!isObject(spec)) throw new StructuredOutputError('structured output must be an object', '');
  const rules: RuleDef[] = [{ name: 'root', body: null }];
  switch (spec.type) {
    case 'json': {
      const schema = spec.schema ?? { type: 'object' };
      rules[0].body = wrapSchema(schema, 'schema', rules, jsonOptions(spec));
      return rules;
    }
    case 'regex':
      if (typeof spec.pattern !== 'string') throw new StructuredOutputError('pattern must be a string', 'pattern');
      try {
        rules[0].body = regexFrag(spec.pattern);
      } catch (e) {
        if (e instanceof RegexSyntaxError) throw new StructuredOutputError(e.message, 'pattern');
        throw e;
      }
      return rules;
    case 'choice':
      if (
        !Array.isArray(spec.choices) ||
        spec.choices.length === 0 ||
        !spec.choices.every((c) => typeof c === 'string')
      )
        throw new StructuredOutputError('choices must be a non-empty array of strings', 'choices');
      rules[0].body = literalSet(spec.choices);
      return rules;
    case 'grammar':
      if (typeof spec.gbnf !== 'string') throw new StructuredOutputError('gbnf must be a string', 'gbnf');
      try {
        return parseGbnf(spec.gbnf);
      } catch (e) {
        if (e instanceof GbnfError) throw new StructuredOutputError(e.message, 'gbnf');
        throw e;
      }
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
          wrapSchema(schema, `functions[${i}].parameters`, rules, {
            compact: false,
            maxMillis: compileBudget.maxMillis,
          }),
          literal('}\n'),
          literalBytes([TOOL_CALL_END_BYTE]),
        );
      });
      const one = alt(...blocks);
      rules[0].body = spec.multiple ? loop1(one, literal('\n')) : one;
      return rules;
    }
    default:
      throw new StructuredOutputError(
        `type must be "json", "regex", "choice", "grammar" or "toolCall", got ${JSON.stringify((spec as { type: unknown }).type)}`,
        'type',
      );
  }
}

function wrapSchema(schema: unknown, path: string, rules: RuleDef[], opts: JsonOptions) {
  try {
    return schemaRules(schema, rules, opts);
  } catch (e) {
    if (e instanceof SchemaError) throw new StructuredOutputError(e.message, e.path ? `${path}.${e.path}` : path);
    if (e instanceof RangeError && /call stack/.test(e.message))
      throw new StructuredOutputError('the schema is nested too deeply', path);
    throw e;
  }
}

function nfaOf(spec: StructuredOutput, budget: Budget): Nfa {
  return buildNfa(rulesOf(spec), budget);
}

/** A compiled constraint: its automaton, and the token guides built over it (one per vocabulary). */
export interface CompiledConstraint {
  readonly pda: Pda;
  readonly guides: Map<TokenVocabulary, TokenGuide>;
}

// Compiled constraints by spec, most recently used last, bounded by the bytes they hold (not by
// count: one 50,000-entry enum weighs as much as thousands of small schemas).
const compiled = new Map<string, CompiledConstraint>();
/**
 * Bytes the cache may hold across all constraints (automata and memoised masks). Kept small: a
 * full cache is a large heap of small objects, and the garbage collector's pauses over it land
 * in the mask times (MaskBench's worst masks halved going from 256 MB to 64 MB).
 */
export const MAX_CACHE_BYTES = 64 * 1024 * 1024;
/** Longest spec (as JSON) the cache keeps; longer ones compile per request. */
const MAX_KEY_CHARS = 4 * 1024 * 1024;

function sizeOf(c: CompiledConstraint): number {
  let bytes = c.pda.approxBytes;
  for (const g of c.guides.values()) bytes += g.approxBytes;
  return bytes;
}

function evict(keep: number): void {
  let total = 0;
  for (const c of compiled.values()) total += sizeOf(c);
  for (const [key, c] of compiled) {
    if (total <= keep) break;
    total -= sizeOf(c);
    compiled.delete(key);
  }
}

/** The budget of one compile (states, time); MaskBench raises the time on a loaded machine. */
let compileBudget: Budget = DEFAULT_BUDGET;
export function setCompileBudget(budget: Partial<Budget>): void {
  compileBudget = { ...compileBudget, ...budget };
}

/**
 * The matcher's limits per constraint (lazily built states, stacks). Tests lower them, in this
 * thread or (QWEN_TS_DEBUG_AUTOMATON_STATES) in an engine thread started after it is set.
 */
let automatonLimits: PdaLimits = {
  ...DEFAULT_PDA_LIMITS,
  maxFrameStates: Number(envVar('QWEN_TS_DEBUG_AUTOMATON_STATES') ?? 0) || DEFAULT_PDA_LIMITS.maxFrameStates,
};
export function setAutomatonLimits(limits: Partial<PdaLimits>): void {
  automatonLimits = { ...automatonLimits, ...limits };
}

function build(spec: StructuredOutput): Pda {
  try {
    return new Pda(nfaOf(spec, compileBudget), automatonLimits);
  } catch (e) {
    if (e instanceof BudgetError || e instanceof GrammarError) throw new StructuredOutputError(e.message, '');
    if (e instanceof RangeError && /call stack/.test(e.message))
      throw new StructuredOutputError('the constraint is nested too deeply', '');
    throw e;
  }
}

/** Compiles (or fetches from the cache) the automaton of a spec; throws StructuredOutputError. */
export function compileStructuredOutput(spec: StructuredOutput): CompiledConstraint {
  let key: string;
  try {
    key = JSON.stringify(spec);
  } catch (e) {
    if (e instanceof RangeError) throw new StructuredOutputError('the spec nests too deeply to read', '');
    throw new StructuredOutputError('structured output must be plain JSON data', '');
  }
  let c = compiled.get(key);
  if (c) {
    compiled.delete(key);
    compiled.set(key, c);
    return c;
  }
  c = { pda: build(spec), guides: new Map() };
  if (key.length <= MAX_KEY_CHARS) {
    evict(MAX_CACHE_BYTES - sizeOf(c));
    compiled.set(key, c);
  }
  return c;
}

/** The token guide of a spec over a vocabulary (cached with the compiled automaton). */
export function guideFor(spec: StructuredOutput, vocab: TokenVocabulary): TokenGuide {
  const c = compileStructuredOutput(spec);
  let g = c.guides.get(vocab);
  if (!g) {
    g = new TokenGuide(c.pda, vocab);
    c.guides.set(vocab, g);
  }
  return g;
}

export function constraintFor(spec: StructuredOutput, vocab: TokenVocabulary): ConstraintState {
  return new ConstraintState(guideFor(spec, vocab));
}

/** What createMatcher accepts as the tokenizer: a TokenVocabulary, or a tokenizer (QwenTokenizer). */
export type MatcherTokenizer =
  TokenVocabulary | (VocabularySource & { readonly eosTokenId: number | null; readonly vocabSize: number });

const vocabularies = new WeakMap<object, TokenVocabulary>();

/**
 * A matcher for one output under `spec` (throws StructuredOutputError for a bad spec). With a
 * tokenizer, EOS is its eos token (pass a TokenVocabulary to choose the EOS ids and the number of
 * logits rows).
 */
export function createMatcher(spec: StructuredOutput, tokenizer: MatcherTokenizer): Matcher {
  let vocab: TokenVocabulary;
  if ('bytesOf' in tokenizer) vocab = tokenizer;
  else {
    let v = vocabularies.get(tokenizer);
    if (!v) {
      if (tokenizer.eosTokenId === null)
        throw new StructuredOutputError('the tokenizer has no eos_token: pass a TokenVocabulary with eosIds', '');
      v = vocabularyFromTokenizer(tokenizer, tokenizer.vocabSize, [tokenizer.eosTokenId]);
      vocabularies.set(tokenizer, v);
    }
    vocab = v;
  }
  return new Matcher(guideFor(spec, vocab));
}
