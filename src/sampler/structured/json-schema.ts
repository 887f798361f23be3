// JSON schemas -> NFA fragments and rules (the automaton form of nfa.ts).
//
// Keywords (JSON Schema draft 4 to 2020-12, OpenAPI's nullable):
//   $ref (#, JSON pointers into the document, $defs/definitions, $anchor / "#name" ids; recursive
//   schemas become rules with a stack, so a tree of comments nests as deep as it likes), allOf
//   (merged), anyOf, oneOf (where its branches provably exclude each other, else an error),
//   type (one or a list), enum, const (any JSON value), nullable, boolean schemas;
//   strings: minLength, maxLength, pattern, format (formats.ts); numbers: minimum, maximum,
//   exclusiveMinimum, exclusiveMaximum (exact, both drafts' forms), multipleOf for integers;
//   arrays: items, prefixItems, items as a list with additionalItems, minItems, maxItems;
//   objects: properties, required (names not listed included), additionalProperties (false, true
//   or a schema), patternProperties, propertyNames, minProperties, maxProperties.
// Keywords nobody validates (annotations, $id, $comment, vendor extensions) are ignored, as the
// specification says. A validation keyword that cannot be enforced exactly (uniqueItems, not,
// if/then/else, contains, dependencies, a pattern together with a length, ...) is an error naming
// it: an output that completes under the constraint must always validate.
//
// Output shape: members in `properties` order, then required names not listed, then other
// members (additionalProperties / patternProperties); whitespace between tokens any run of the
// four JSON whitespace characters (or none with `compact`).
import { FORMATS } from './formats.js';
import {
  alt,
  BudgetError,
  byteSet,
  bytesOf,
  call,
  empty,
  literal,
  literalSet,
  loop1,
  nothing,
  optional,
  repeat,
  seq,
  star,
  type Frag,
  type Nfa,
  type RuleDef,
} from './nfa.js';
import { integerRange, numberRange, type Bound } from './numbers.js';
import { intersectStrings } from './intersect.js';
import { ANY_CHAR, classFrag, jsonPatternFrag, RegexSyntaxError, regexFrag } from './regex.js';

export class SchemaError extends Error {
  constructor(
    message: string,
    /** Dotted path of the offending place, e.g. "properties.city.format". */
    readonly path: string,
  ) {
    super(message);
    this.name = 'SchemaError';
  }
}

export interface JsonOptions {
  /** No whitespace between tokens. */
  compact: boolean;
  /**
   * Wall time the schema compiler may take (merging allOf/oneOf branches can take far longer
   * than building the automaton states that the NFA's own budget counts); BudgetError past it.
   */
  maxMillis?: number;
}

type Schema = Record<string, unknown>;
const isObject = (v: unknown): v is Schema => v !== null && typeof v === 'object' && !Array.isArray(v);
const join = (path: string, key: string | number) =>
  typeof key === 'number' ? `${path}[${key}]` : path === '' ? key : `${path}.${key}`;

const MAX_SCHEMA_DEPTH = 128;
/** What an impossible allOf merges to (compiles to a fragment that matches nothing). */
const NEVER: Schema = { 'x-never': true };
const MAX_BRANCHES = 256;
/** An overlapping oneOf becomes branch-and-not-the-others up to this many branches (quadratic). */
const MAX_EXCLUSIVE_BRANCHES = 8;
const MAX_COUNT_TRACKS = 32;

// --- JSON lexical pieces ---
const WS_SET = byteSet([
  [0x20, 0x20],
  [0x09, 0x0a],
  [0x0d, 0x0d],
]);
const hex = bytesOf(
  byteSet([
    [0x30, 0x39],
    [0x41, 0x46],
    [0x61, 0x66],
  ]),
);
const digit = bytesOf(byteSet([[0x30, 0x39]]));
const plainChar = bytesOf(
  byteSet([
    [0x20, 0x21],
    [0x23, 0x5b],
    [0x5d, 0x7f],
  ]),
);
const escape = seq(
  literal('\\'),
  alt(
    bytesOf(byteSet([...'"\\/bfnrt'].map((c): [number, number] => [c.charCodeAt(0), c.charCodeAt(0)]))),
    seq(literal('u'), hex, hex, hex, hex),
  ),
);
/** Any non-ASCII character, as valid UTF-8. */
const utf8Char = classFrag([[0x80, 0x10ffff]]);
/** Any JSON string. */
export const jsonString: Frag = seq(literal('"'), star(alt(plainChar, escape, utf8Char)), literal('"'));
const intPart = seq(optional(literal('-')), alt(literal('0'), seq(bytesOf(byteSet([[0x31, 0x39]])), star(digit))));
export const jsonInteger: Frag = intPart;
export const jsonNumber: Frag = seq(
  intPart,
  optional(seq(literal('.'), loop1(digit))),
  optional(
    seq(
      bytesOf(
        byteSet([
          [0x45, 0x45],
          [0x65, 0x65],
        ]),
      ),
      optional(
        bytesOf(
          byteSet([
            [0x2b, 0x2b],
            [0x2d, 0x2d],
          ]),
        ),
      ),
      loop1(digit),
    ),
  ),
);
/**
 * One character of a string's content, for counted strings: printable ASCII but " and \\, the
 * short escapes, or one whole UTF-8 character (tails shared, so a copy is ~12 states).
 */
// contentChar's byte sets, made once (a counted string of 512 characters has 512 copies).
const CC_PLAIN = byteSet([
  [0x20, 0x21],
  [0x23, 0x5b],
  [0x5d, 0x7e],
]);
const CC_BACKSLASH = byteSet([[0x5c, 0x5c]]);
const CC_ESCAPED = byteSet([...'"\\/bfnrt'].map((c): [number, number] => [c.charCodeAt(0), c.charCodeAt(0)]));
const CC_CONT = byteSet([[0x80, 0xbf]]);
const CC_LEAD2 = byteSet([[0xc2, 0xdf]]);
const CC_LEAD3 = byteSet([
  [0xe1, 0xec],
  [0xee, 0xef],
]);
const CC_LEAD4 = byteSet([[0xf1, 0xf3]]);
const CC_E0 = byteSet([[0xe0, 0xe0]]);
const CC_E0_NEXT = byteSet([[0xa0, 0xbf]]);
const CC_ED = byteSet([[0xed, 0xed]]);
const CC_ED_NEXT = byteSet([[0x80, 0x9f]]);
const CC_F0 = byteSet([[0xf0, 0xf0]]);
const CC_F0_NEXT = byteSet([[0x90, 0xbf]]);
const CC_F4 = byteSet([[0xf4, 0xf4]]);
const CC_F4_NEXT = byteSet([[0x80, 0x8f]]);
const contentChar: Frag = (nfa, from) => {
  const end = nfa.state();
  nfa.addEdge(from, CC_PLAIN, end);
  const esc = nfa.state();
  nfa.addEdge(from, CC_BACKSLASH, esc);
  nfa.addEdge(esc, CC_ESCAPED, end);
  // UTF-8: one continuation byte left (c1), two (c2), three (c3); leads with narrower second bytes.
  const c1 = nfa.state();
  const c2 = nfa.state();
  const c3 = nfa.state();
  nfa.addEdge(c1, CC_CONT, end);
  nfa.addEdge(c2, CC_CONT, c1);
  nfa.addEdge(c3, CC_CONT, c2);
  nfa.addEdge(from, CC_LEAD2, c1);
  nfa.addEdge(from, CC_LEAD3, c2);
  nfa.addEdge(from, CC_LEAD4, c3);
  const e0 = nfa.state();
  nfa.addEdge(from, CC_E0, e0);
  nfa.addEdge(e0, CC_E0_NEXT, c1);
  const ed = nfa.state();
  nfa.addEdge(from, CC_ED, ed);
  nfa.addEdge(ed, CC_ED_NEXT, c1);
  const f0 = nfa.state();
  nfa.addEdge(from, CC_F0, f0);
  nfa.addEdge(f0, CC_F0_NEXT, c2);
  const f4 = nfa.state();
  nfa.addEdge(from, CC_F4, f4);
  nfa.addEdge(f4, CC_F4_NEXT, c2);
  return end;
};
/** contentChar, recorded as one step of a counted string (Nfa.charChain): only between quotes. */
const countedChar: Frag = (nfa, from) => {
  const end = contentChar(nfa, from);
  nfa.charChain.set(from, end);
  return end;
};
/**
 * Counted strings hold at most this many characters even when maxLength allows more (a counter
 * costs states per character): a subset, so outputs still validate. minLength above it is an error.
 */
export const MAX_COUNTED_LENGTH = 512;

const TYPES = ['null', 'boolean', 'object', 'array', 'number', 'integer', 'string'] as const;
type TypeName = (typeof TYPES)[number];

// Keywords by the type they constrain (used to infer a missing `type`).
const OBJECT_KEYS = [
  'properties',
  'required',
  'additionalProperties',
  'patternProperties',
  'propertyNames',
  'minProperties',
  'maxProperties',
];
const ARRAY_KEYS = ['items', 'prefixItems', 'additionalItems', 'minItems', 'maxItems'];
const STRING_KEYS = ['minLength', 'maxLength', 'pattern', 'format'];
const NUMBER_KEYS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'];
/** Internal keyword (from `not: {enum: [...]}`): the strings that are not allowed. */
const NOT_STRINGS = '$notStrings';
/** Validation keywords that cannot be enforced exactly. */
const UNSUPPORTED = [
  'not',
  'if',
  'then',
  'else',
  'contains',
  'minContains',
  'maxContains',
  'dependencies',
  'dependentRequired',
  'dependentSchemas',
  'unevaluatedItems',
  '$dynamicRef',
  '$recursiveRef',
];

/** Compiles `schema` into a fragment; recursive references add rules to `rules`. Throws SchemaError. */
export function schemaRules(schema: unknown, rules: RuleDef[], opts: JsonOptions): Frag {
  return new SchemaCompiler(schema, rules, opts).compile(schema, '', 0);
}

class SchemaCompiler {
  private readonly ws: Frag;
  private readonly comma: Frag;
  private readonly colon: Frag;
  private readonly refRules = new Map<string, number>();
  private readonly anchors = new Map<string, unknown>();
  private valueRule = -1;
  private readonly baseId: string;
  private readonly deadline: number;

  constructor(
    private readonly root: unknown,
    private readonly rules: RuleDef[],
    private readonly opts: JsonOptions,
  ) {
    this.deadline = Date.now() + (opts.maxMillis ?? Infinity);
    this.ws = opts.compact ? empty : star(bytesOf(WS_SET));
    this.comma = seq(this.ws, literal(','), this.ws);
    this.colon = seq(this.ws, literal(':'), this.ws);
    this.baseId = isObject(root) && typeof (root.$id ?? root.id) === 'string' ? String(root.$id ?? root.id) : '';
    this.collectAnchors(root, 0);
  }

  private collectAnchors(s: unknown, depth: number): void {
    if (depth > MAX_SCHEMA_DEPTH || s === null || typeof s !== 'object') return;
    if (Array.isArray(s)) {
      for (const x of s) this.collectAnchors(x, depth + 1);
      return;
    }
    const o = s as Schema;
    if (typeof o.$anchor === 'string') this.anchors.set('#' + o.$anchor, o);
    for (const k of ['$id', 'id'])
      if (typeof o[k] === 'string' && (o[k] as string).startsWith('#')) this.anchors.set(o[k] as string, o);
    for (const [k, v] of Object.entries(o)) if (k !== 'enum' && k !== 'const') this.collectAnchors(v, depth + 1);
  }

  // --- $ref ---

  private resolve(ref: string, path: string): unknown {
    let r = ref;
    if (this.baseId && r.startsWith(this.baseId)) r = r.slice(this.baseId.length);
    if (r === '' || r === '#') return this.root;
    if (this.anchors.has(r)) return this.anchors.get(r);
    if (!r.startsWith('#/'))
      throw new SchemaError(`$ref "${ref}" at ${path} is not a reference inside this schema`, path);
    let node: unknown = this.root;
    for (const raw of r.slice(2).split('/')) {
      const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
      if (Array.isArray(node) && /^\d+$/.test(key)) node = node[Number(key)];
      else if (isObject(node) && Object.prototype.hasOwnProperty.call(node, key)) node = node[key];
      else throw new SchemaError(`$ref "${ref}" at ${path} points to nothing`, path);
    }
    return node;
  }

  /** A reference becomes a rule (compiled once, however often and however recursively it is used). */
  private refFrag(ref: string, path: string): Frag {
    let id = this.refRules.get(ref);
    if (id === undefined) {
      const target = this.resolve(ref, path);
      id = this.rules.length;
      const rule: RuleDef = { name: ref, body: null };
      this.rules.push(rule);
      this.refRules.set(ref, id);
      rule.body = this.compile(target, path, 0);
    }
    return call(id);
  }

  /** Any JSON value, nested as deep as it likes (a recursive rule). */
  private anyValue(): Frag {
    if (this.valueRule < 0) {
      this.valueRule = this.rules.length;
      const rule: RuleDef = { name: 'value', body: null };
      this.rules.push(rule);
      const v = call(this.valueRule);
      rule.body = alt(
        jsonString,
        jsonNumber,
        literalSet(['true', 'false', 'null']),
        this.objectOf(seq(jsonString, this.colon, v)),
        this.arrayOf(v),
      );
    }
    return call(this.valueRule);
  }

  private objectOf(member: Frag): Frag {
    return seq(literal('{'), this.ws, optional(seq(loop1(member, this.comma), this.ws)), literal('}'));
  }

  private arrayOf(item: Frag): Frag {
    return seq(literal('['), this.ws, optional(seq(loop1(item, this.comma), this.ws)), literal(']'));
  }

  // --- schemas ---

  private checkTime(): void {
    if (Date.now() > this.deadline)
      throw new BudgetError(
        `compiling the constraint took more than ${this.opts.maxMillis} ms (the limit per request)`,
      );
  }

  compile(schema: unknown, path: string, depth: number): Frag {
    this.checkTime();
    if (depth > MAX_SCHEMA_DEPTH)
      throw new SchemaError(`the schema nests more than ${MAX_SCHEMA_DEPTH} levels deep at ${path}`, path);
    if (schema === true) return this.anyValue();
    if (schema === false) return nothing;
    if (schema === NEVER) return nothing;
    if (!isObject(schema))
      throw new SchemaError(
        `${path || 'the schema'} must be an object or a boolean, got ${JSON.stringify(schema)}`,
        path,
      );
    if ('not' in schema) {
      const violations = this.negate(schema.not, join(path, 'not'));
      if (violations.length === 0) return nothing;
      const rest = withoutKeys(schema, ['not']);
      return this.compile({ allOf: [rest, { anyOf: violations }] }, path, depth + 1);
    }
    for (const k of UNSUPPORTED)
      if (k in schema && !(k === 'if' && !('then' in schema) && !('else' in schema)))
        throw new SchemaError(`unsupported JSON-schema keyword "${k}" at ${join(path, k)}`, join(path, k));
    if (typeof schema.$ref === 'string') {
      const rest = withoutKeys(schema, ['$ref']);
      if (!hasValidation(rest)) return this.refFrag(schema.$ref, join(path, '$ref'));
      // Siblings of $ref apply too (2019-09 and later): as allOf.
      return this.compile({ allOf: [this.resolve(schema.$ref, join(path, '$ref')), rest] }, path, depth + 1);
    }
    if (Array.isArray(schema.allOf)) {
      if (schema.allOf.length === 0)
        throw new SchemaError(`${join(path, 'allOf')} must be a non-empty array`, join(path, 'allOf'));
      let merged: Schema = withoutKeys(schema, ['allOf']);
      schema.allOf.forEach((s, i) => {
        merged = this.merge(merged, this.inline(s, join(join(path, 'allOf'), i)), join(join(path, 'allOf'), i));
      });
      return this.compile(merged, path, depth + 1);
    }
    for (const key of ['anyOf', 'oneOf'] as const) {
      if (!(key in schema)) continue;
      const list = schema[key];
      if (!Array.isArray(list) || list.length === 0)
        throw new SchemaError(`${join(path, key)} must be a non-empty array`, join(path, key));
      if (list.length > MAX_BRANCHES)
        throw new SchemaError(`${join(path, key)} has more than ${MAX_BRANCHES} branches`, join(path, key));
      const rest = withoutKeys(schema, [key]);
      const branches = list.map((s, i) => {
        const p = join(join(path, key), i);
        return hasValidation(rest) ? this.merge(rest, this.inline(s, p), p) : s;
      });
      if (key === 'oneOf' && !this.disjoint(branches)) {
        // Exactly one = each branch with the nots of the others, where every not has an exact form.
        const overlap = () =>
          new SchemaError(
            `${join(path, 'oneOf')}: its branches may overlap, so "exactly one" cannot be enforced (use anyOf if any one will do)`,
            join(path, 'oneOf'),
          );
        if (branches.length > MAX_EXCLUSIVE_BRANCHES) throw overlap();
        try {
          for (const [i, b] of branches.entries()) this.negate(b, join(join(path, key), i));
          const exclusive = branches.map((b, i) => ({
            allOf: [b, ...branches.filter((_, j) => j !== i).map((o) => ({ not: o }))],
          }));
          return alt(...exclusive.map((s, i) => this.compile(s, join(join(path, key), i), depth + 1)));
        } catch (e) {
          if (e instanceof SchemaError) throw overlap();
          throw e;
        }
      }
      return alt(...branches.map((s, i) => this.compile(s, join(join(path, key), i), depth + 1)));
    }
    return this.typed(schema, path, depth);
  }

  /**
   * `not: n` as a positive schema: the branches (any one will do) of what violates `n`. A schema
   * is the conjunction of its keywords, so a value violates it when its type is another one or it
   * breaks one keyword; each keyword's violation is written with the keywords that are exact here
   * (not required [a] = properties {a: false}, not minimum x = exclusiveMaximum x, not anyOf = allOf
   * of nots, ...). A keyword whose violation cannot be written exactly is refused, naming it.
   */
  private negate(n: unknown, path: string, seen = 0): unknown[] {
    if (n === true) return [];
    if (n === false) return [true];
    if (!isObject(n)) throw new SchemaError(`${path} must be an object or a boolean`, path);
    if (seen > 32) throw new SchemaError(`unsupported JSON-schema keyword "not" at ${path}: nested too deep`, path);
    const s = typeof n.$ref === 'string' ? this.inline(n, path) : n;
    if (!isObject(s)) return this.negate(s, path, seen + 1);
    if (!hasValidation(s)) return [];
    const refuse = (k: string, why = ''): never => {
      throw new SchemaError(
        `unsupported JSON-schema keyword "not" at ${path}: not of "${k}"${why ? ` (${why})` : ''}`,
        join(path, k),
      );
    };
    const out: unknown[] = [];
    for (const [k, v] of Object.entries(s)) {
      if (!KNOWN.has(k)) continue;
      switch (k) {
        case 'type': {
          const named = ([] as unknown[]).concat(v);
          if (s.nullable === true) named.push('null');
          // Numbers with a fraction (what "not integer" also admits) have no exact form here: left
          // out, a narrowing (every output still validates).
          const kept = TYPES.filter(
            (t) => !named.includes(t) && t !== 'integer' && !(t === 'number' && named.includes('integer')),
          );
          if (kept.length > 0) out.push({ type: kept });
          break;
        }
        case 'nullable':
          break;
        case 'not':
          out.push(v);
          break;
        case 'anyOf':
          if (!Array.isArray(v)) refuse(k);
          out.push({ allOf: (v as unknown[]).map((x) => ({ not: x })) });
          break;
        case 'oneOf':
          if (!Array.isArray(v) || !this.disjoint(v)) refuse(k, 'its branches may overlap');
          out.push({ allOf: (v as unknown[]).map((x) => ({ not: x })) });
          break;
        case 'allOf':
          if (!Array.isArray(v)) refuse(k);
          for (const x of v as unknown[]) out.push({ not: x });
          break;
        case 'required':
          if (!Array.isArray(v)) refuse(k);
          for (const name of v as string[]) out.push({ type: 'object', properties: { [name]: false } });
          break;
        case 'properties':
          if (!isObject(v)) refuse(k);
          for (const [name, x] of Object.entries(v as Schema))
            if (x !== true) out.push({ type: 'object', required: [name], properties: { [name]: { not: x } } });
          break;
        case 'minimum':
          if (typeof v !== 'number') refuse(k);
          out.push(
            s.exclusiveMinimum === true ? { type: 'number', maximum: v } : { type: 'number', exclusiveMaximum: v },
          );
          break;
        case 'maximum':
          if (typeof v !== 'number') refuse(k);
          out.push(
            s.exclusiveMaximum === true ? { type: 'number', minimum: v } : { type: 'number', exclusiveMinimum: v },
          );
          break;
        case 'exclusiveMinimum':
          if (typeof v === 'number') out.push({ type: 'number', maximum: v });
          else if (typeof v !== 'boolean') refuse(k);
          break;
        case 'exclusiveMaximum':
          if (typeof v === 'number') out.push({ type: 'number', minimum: v });
          else if (typeof v !== 'boolean') refuse(k);
          break;
        case 'minLength':
        case 'minItems':
        case 'minProperties': {
          if (typeof v !== 'number' || !Number.isInteger(v)) refuse(k);
          const type = k === 'minLength' ? 'string' : k === 'minItems' ? 'array' : 'object';
          const maxKey = k.replace('min', 'max');
          if ((v as number) > 0) out.push({ type, [maxKey]: (v as number) - 1 });
          break;
        }
        case 'maxLength':
        case 'maxItems':
        case 'maxProperties': {
          if (typeof v !== 'number' || !Number.isInteger(v)) refuse(k);
          const type = k === 'maxLength' ? 'string' : k === 'maxItems' ? 'array' : 'object';
          out.push({ type, [k.replace('max', 'min')]: (v as number) + 1 });
          break;
        }
        case 'items':
          if (v === false) out.push({ type: 'array', minItems: 1 });
          else if (Array.isArray(v) && s.additionalItems === false) out.push({ type: 'array', minItems: v.length + 1 });
          else if (!(v === true || (isObject(v) && !hasValidation(v)))) refuse(k);
          break;
        case 'prefixItems':
          if (!Array.isArray(v)) refuse(k);
          if (s.items === false) out.push({ type: 'array', minItems: (v as unknown[]).length + 1 });
          else refuse(k);
          break;
        case 'additionalItems':
          if (!Array.isArray(s.items) && v !== true) break; // no effect without a tuple
          if (v !== true && s.additionalItems !== false) refuse(k);
          break;
        case 'contains':
          out.push({ type: 'array', items: { not: v } });
          break;
        case 'uniqueItems':
          if (v === true) refuse(k);
          break;
        case 'if':
          if (!('then' in s) && !('else' in s)) break;
          refuse(k);
          break;
        case 'enum':
        case 'const': {
          const values = k === 'const' ? [v] : Array.isArray(v) ? v : refuse(k);
          out.push(...this.notValues(values, () => refuse(k, 'of numbers, arrays or objects')));
          break;
        }
        default:
          refuse(k);
      }
    }
    return out;
  }

  /** Every JSON value but these (strings by a trie of the names; numbers by ranges between them). */
  private notValues(values: unknown[], refuse: () => never): unknown[] {
    const types = new Set(values.map(typeOfValue));
    const out: unknown[] = [];
    const others = TYPES.filter((t) => t !== 'integer' && !types.has(t) && !(t === 'number' && types.has('integer')));
    if (others.length > 0) out.push({ type: others });
    if (types.has('boolean')) {
      const rest = [true, false].filter((b) => !values.includes(b));
      if (rest.length > 0) out.push({ const: rest[0] });
    }
    if (types.has('string')) out.push({ type: 'string', [NOT_STRINGS]: values.filter((x) => typeof x === 'string') });
    if (types.has('number') || types.has('integer')) {
      const nums = [...new Set(values.filter((x): x is number => typeof x === 'number'))].sort((a, b) => a - b);
      out.push({ type: 'number', exclusiveMaximum: nums[0] });
      for (let i = 0; i + 1 < nums.length; i++)
        out.push({ type: 'number', exclusiveMinimum: nums[i], exclusiveMaximum: nums[i + 1] });
      out.push({ type: 'number', exclusiveMinimum: nums[nums.length - 1] });
    }
    if (types.has('array') || types.has('object')) refuse();
    return out;
  }

  /** A schema with its top-level $ref resolved (for merging). */
  private inline(s: unknown, path: string, seen = 0): unknown {
    if (seen > 32) throw new SchemaError(`$ref chain too long at ${path}`, path);
    if (isObject(s) && typeof s.$ref === 'string') {
      const target = this.resolve(s.$ref, join(path, '$ref'));
      const rest = withoutKeys(s, ['$ref']);
      const t = this.inline(target, path, seen + 1);
      return hasValidation(rest) ? this.merge(t, rest, path) : t;
    }
    return s;
  }

  /** allOf of two schemas as one schema; throws where the combination cannot be expressed. */
  private merge(a: unknown, b: unknown, path: string): Schema {
    this.checkTime();
    if (a === false || b === false || a === NEVER || b === NEVER) return NEVER;
    if (a === true) return isObject(b) ? b : {};
    if (b === true) return isObject(a) ? a : {};
    if (!isObject(a) || !isObject(b)) throw new SchemaError(`${path} must be an object or a boolean`, path);
    if (typeof a.$ref === 'string') a = this.inline(a, path) as Schema;
    if (typeof b.$ref === 'string') b = this.inline(b, path) as Schema;
    if (!isObject(a) || !isObject(b)) return this.merge(a, b, path);
    if ('not' in a && 'not' in b) {
      // Two nots: the second one as the branches that violate it.
      const violations = this.negate(b.not, join(path, 'not'));
      if (violations.length === 0) return NEVER;
      return this.merge(this.merge(a, withoutKeys(b, ['not']), path), { anyOf: violations }, path);
    }
    // Nested combinators: allOf flattens; anyOf/oneOf distribute (A and (B or C) = A&B or A&C).
    if (Array.isArray(b.allOf)) {
      let m = this.merge(a, withoutKeys(b, ['allOf']), path);
      for (const s of b.allOf) m = this.merge(m, this.inline(s, path), path);
      return m;
    }
    if (Array.isArray(a.allOf)) return this.merge(b, a, path);
    for (const key of ['anyOf', 'oneOf'] as const) {
      const [withIt, other] = Array.isArray(b[key]) ? [b, a] : Array.isArray(a[key]) ? [a, b] : [null, null];
      if (!withIt || !other) continue;
      if (key === 'oneOf' && !this.disjoint(withIt.oneOf as unknown[]))
        throw new SchemaError(`${join(path, 'oneOf')}: its branches may overlap`, join(path, 'oneOf'));
      const list = withIt[key] as unknown[];
      if (list.length > MAX_BRANCHES) throw new SchemaError(`${join(path, key)} has too many branches`, path);
      const base = this.merge(other, withoutKeys(withIt, [key]), path);
      const branches = list.map((s) => this.merge(base, this.inline(s, path), path));
      return { anyOf: branches };
    }
    const out: Schema = { ...a };
    for (const [k, v] of Object.entries(b)) {
      if (!(k in out)) {
        out[k] = v;
        continue;
      }
      const u = out[k];
      if (JSON.stringify(u) === JSON.stringify(v)) continue;
      switch (k) {
        case 'type': {
          const ta = Array.isArray(u) ? u : [u];
          const tb = Array.isArray(v) ? v : [v];
          const both = ta.filter((t) => tb.includes(t) || (t === 'integer' && tb.includes('number')));
          for (const t of tb) if (t === 'integer' && ta.includes('number') && !both.includes(t)) both.push(t);
          if (both.length === 0) return NEVER;
          out.type = both;
          break;
        }
        case 'properties': {
          const pa = u as Schema;
          const pb = v as Schema;
          const props: Schema = { ...pa };
          for (const [name, s] of Object.entries(pb)) props[name] = name in pa ? { allOf: [pa[name], s] } : s;
          out.properties = props;
          break;
        }
        case 'required':
        case NOT_STRINGS:
          out[k] = [...new Set([...(u as string[]), ...(v as string[])])];
          break;
        case 'minimum':
        case 'minLength':
        case 'minItems':
        case 'minProperties':
          out[k] = Math.max(u as number, v as number);
          break;
        case 'maximum':
        case 'maxLength':
        case 'maxItems':
        case 'maxProperties':
          out[k] = Math.min(u as number, v as number);
          break;
        case 'exclusiveMinimum':
        case 'exclusiveMaximum':
          if (typeof u === 'number' && typeof v === 'number')
            out[k] = k === 'exclusiveMinimum' ? Math.max(u, v) : Math.min(u, v);
          else throw new SchemaError(`cannot merge "${k}" at ${path}`, join(path, k));
          break;
        case 'enum': {
          const vb = (v as unknown[]).map((x) => JSON.stringify(x));
          out.enum = (u as unknown[]).filter((x) => vb.includes(JSON.stringify(x)));
          break;
        }
        case 'items':
        case 'additionalProperties':
        case 'additionalItems':
        case 'propertyNames':
          if (isObject(u) || isObject(v) || typeof u === 'boolean' || typeof v === 'boolean')
            out[k] = u === false || v === false ? false : { allOf: [u, v] };
          else throw new SchemaError(`cannot merge "${k}" at ${path}`, join(path, k));
          break;
        default:
          if (isAnnotation(k)) break;
          throw new SchemaError(`allOf combines two different "${k}" at ${path}; that is not supported`, join(path, k));
      }
    }
    // Properties one side lists and the other forbids through additionalProperties: false.
    for (const [side, other] of [
      [a, b],
      [b, a],
    ] as const) {
      if (other.additionalProperties === false && isObject(side.properties)) {
        const allowed = isObject(other.properties) ? Object.keys(other.properties) : [];
        const props = out.properties as Schema;
        for (const name of Object.keys(side.properties))
          if (!allowed.includes(name) && !matchesAnyPattern(name, other.patternProperties)) props[name] = false;
      } else if (isObject(other.additionalProperties) && isObject(side.properties) && isObject(out.properties)) {
        const allowed = isObject(other.properties) ? Object.keys(other.properties) : [];
        const props = out.properties as Schema;
        for (const name of Object.keys(side.properties))
          if (!allowed.includes(name) && !matchesAnyPattern(name, other.patternProperties))
            props[name] = { allOf: [props[name], other.additionalProperties] };
      }
    }
    return out;
  }

  /** Whether the branches of a oneOf provably exclude each other (then oneOf = anyOf). */
  private disjoint(branches: unknown[]): boolean {
    const sigs = branches.map((s) => this.signature(this.inline(s, '')));
    for (let i = 0; i < sigs.length; i++)
      for (let j = i + 1; j < sigs.length; j++) if (!excludes(sigs[i], sigs[j])) return false;
    return true;
  }

  /** What a branch can be, coarsely: its types, its constant values, its required discriminators. */
  private signature(s: unknown): Signature {
    if (!isObject(s))
      return {
        types: s === false ? new Set() : new Set(TYPES),
        values: null,
        tags: new Map(),
        closed: null,
        required: [],
      };
    const values = 'const' in s ? [s.const] : Array.isArray(s.enum) ? s.enum : null;
    let types = new Set<TypeName>(
      s.type === undefined ? this.inferTypes(s) : ([] as TypeName[]).concat(s.type as TypeName),
    );
    if (types.has('number')) types.add('integer');
    if (s.nullable === true) types.add('null');
    if (values)
      types = new Set(values.map(typeOfValue).filter((t) => types.has(t) || (t === 'integer' && types.has('number'))));
    const tags = new Map<string, string[]>();
    const props = isObject(s.properties) ? s.properties : {};
    const required = Array.isArray(s.required) ? (s.required as string[]) : [];
    for (const name of required) {
      const p = this.inline(props[name], '');
      if (isObject(p) && ('const' in p || Array.isArray(p.enum)))
        tags.set(
          name,
          ('const' in p ? [p.const] : (p.enum as unknown[])).map((x) => JSON.stringify(x)),
        );
    }
    const closed = s.additionalProperties === false && !s.patternProperties ? Object.keys(props) : null;
    return { types, values: values?.map((x) => JSON.stringify(x)) ?? null, tags, closed, required };
  }

  private inferTypes(s: Schema): TypeName[] {
    const types: TypeName[] = [];
    if (OBJECT_KEYS.some((k) => k in s)) types.push('object');
    if (ARRAY_KEYS.some((k) => k in s)) types.push('array');
    if (STRING_KEYS.some((k) => k in s)) types.push('string');
    if (NUMBER_KEYS.some((k) => k in s)) types.push('number', 'integer');
    return types.length > 0 ? types : [...TYPES];
  }

  private typed(schema: Schema, path: string, depth: number): Frag {
    if ('const' in schema || 'enum' in schema) return this.enumFrag(schema, path);
    let types: TypeName[];
    if (schema.type === undefined) {
      if (!hasValidation(schema)) return this.anyValue();
      types = this.inferTypes(schema);
    } else {
      const list = Array.isArray(schema.type) ? schema.type : [schema.type];
      if (list.length === 0)
        throw new SchemaError(`${join(path, 'type')} must name at least one type, got []`, join(path, 'type'));
      for (const t of list)
        if (typeof t !== 'string' || !(TYPES as readonly string[]).includes(t))
          throw new SchemaError(`unsupported type ${JSON.stringify(t)} at ${join(path, 'type')}`, join(path, 'type'));
      types = list as TypeName[];
    }
    if (schema.nullable === true && !types.includes('null')) types = [...types, 'null'];
    if (types.includes('number')) types = types.filter((t) => t !== 'integer');
    const frags = types.map((t): Frag => {
      switch (t) {
        case 'null':
          return literal('null');
        case 'boolean':
          return literalSet(['true', 'false']);
        case 'string':
          return this.stringFrag(schema, path);
        case 'integer':
        case 'number':
          return this.numberFrag(schema, path, t === 'integer');
        case 'array':
          return this.arrayFrag(schema, path, depth);
        case 'object':
          return this.objectFrag(schema, path, depth);
      }
    });
    return alt(...frags);
  }

  private enumFrag(schema: Schema, path: string): Frag {
    let values: unknown[];
    if ('const' in schema) values = [schema.const];
    else {
      if (!Array.isArray(schema.enum) || schema.enum.length === 0)
        throw new SchemaError(`${join(path, 'enum')} must be a non-empty array`, join(path, 'enum'));
      values = schema.enum;
      if ('const' in schema) values = values.filter((v) => JSON.stringify(v) === JSON.stringify(schema.const));
    }
    const rest = withoutKeys(schema, ['enum', 'const']);
    // Keep the values the sibling keywords allow (each checked by a small validator below).
    const kept = values.filter((v) => conforms(v, rest, (r) => this.inline({ $ref: r }, path)));
    const scalars = kept.filter((v) => v === null || typeof v !== 'object');
    const texts: string[] = [];
    for (const v of scalars) {
      texts.push(JSON.stringify(v));
      if (typeof v === 'number' && Number.isInteger(v) && Math.abs(v) < 1e16) texts.push(`${JSON.stringify(v)}.0`);
    }
    const frags: Frag[] = [];
    if (texts.length > 0) frags.push(literalSet(texts));
    for (const v of kept) if (v !== null && typeof v === 'object') frags.push(this.valueFrag(v));
    return alt(...frags);
  }

  /** Exactly this JSON value, with any whitespace JSON allows. */
  private valueFrag(v: unknown): Frag {
    if (Array.isArray(v))
      return v.length === 0
        ? seq(literal('['), this.ws, literal(']'))
        : seq(
            literal('['),
            this.ws,
            ...v.flatMap((x, i) => (i === 0 ? [this.valueFrag(x)] : [this.comma, this.valueFrag(x)])),
            this.ws,
            literal(']'),
          );
    if (isObject(v)) {
      const entries = Object.entries(v);
      return entries.length === 0
        ? seq(literal('{'), this.ws, literal('}'))
        : seq(
            literal('{'),
            this.ws,
            ...entries.flatMap(([k, x], i) => [
              ...(i === 0 ? [] : [this.comma]),
              literal(JSON.stringify(k)),
              this.colon,
              this.valueFrag(x),
            ]),
            this.ws,
            literal('}'),
          );
    }
    return literal(JSON.stringify(v));
  }

  private stringFrag(schema: Schema, path: string): Frag {
    const minLength = nonNegInt(schema, 'minLength', path) ?? 0;
    const maxLength = nonNegInt(schema, 'maxLength', path) ?? Infinity;
    const hasLength = minLength > 0 || maxLength !== Infinity;
    const constraints = ['pattern', 'format'].filter((k) => k in schema);
    if (NOT_STRINGS in schema) {
      if (constraints.length > 0 || hasLength)
        throw new SchemaError(
          `unsupported JSON-schema keyword combination at ${path || 'the schema'}: not of an enum with ${[...constraints, ...(hasLength ? ['minLength/maxLength'] : [])].join(', ')} on one string`,
          join(path, 'not'),
        );
      // Strings written without escapes (a subset: still valid) that are none of the names.
      return keyNotIn(schema[NOT_STRINGS] as string[]);
    }
    if (typeof schema.format === 'string' && !(schema.format in FORMATS)) {
      throw new SchemaError(
        `unsupported JSON-schema keyword "format" at ${join(path, 'format')}: "${schema.format}" (supported: ${Object.keys(FORMATS).join(', ')})`,
        join(path, 'format'),
      );
    }
    const parts: Frag[] = [];
    if (typeof schema.format === 'string') parts.push(jsonPatternFrag(`^(?:${FORMATS[schema.format]})$`));
    if ('pattern' in schema) {
      if (typeof schema.pattern !== 'string')
        throw new SchemaError(`${join(path, 'pattern')} must be a string`, join(path, 'pattern'));
      try {
        parts.push(jsonPatternFrag(schema.pattern));
      } catch (e) {
        if (e instanceof RegexSyntaxError)
          throw new SchemaError(`${join(path, 'pattern')}: ${e.message}`, join(path, 'pattern'));
        throw e;
      }
    }
    if (parts.length === 1 && !hasLength) return seq(literal('"'), parts[0], literal('"'));
    if (parts.length > 1 && !hasLength) return seq(literal('"'), intersectStrings(parts, 0, Infinity), literal('"'));
    if (hasLength) {
      if (minLength > maxLength) return nothing;
      if (minLength > MAX_COUNTED_LENGTH)
        throw new SchemaError(
          `unsupported JSON-schema keyword "minLength" at ${join(path, 'minLength')}: above ${MAX_COUNTED_LENGTH}`,
          join(path, 'minLength'),
        );
      // Without maxLength nothing is counted past minLength (a free run: no cap, few states).
      const max = maxLength === Infinity ? Infinity : Math.min(maxLength, MAX_COUNTED_LENGTH);
      if (parts.length > 0) return seq(literal('"'), intersectStrings(parts, minLength, max), literal('"'));
      return seq(literal('"'), repeat(countedChar, minLength, max), literal('"'));
    }
    return jsonString;
  }

  private numberFrag(schema: Schema, path: string, integer: boolean): Frag {
    let min: Bound | undefined;
    let max: Bound | undefined;
    const num = (k: string): number | undefined => {
      const v = schema[k];
      if (v === undefined || typeof v === 'boolean') return undefined;
      if (typeof v !== 'number' || !Number.isFinite(v))
        throw new SchemaError(`${join(path, k)} must be a number`, join(path, k));
      return v;
    };
    const minimum = num('minimum');
    const maximum = num('maximum');
    // Draft 4: exclusiveMinimum: true makes minimum exclusive; later drafts: a number.
    if (minimum !== undefined) min = { value: minimum, exclusive: schema.exclusiveMinimum === true };
    if (maximum !== undefined) max = { value: maximum, exclusive: schema.exclusiveMaximum === true };
    const exMin = num('exclusiveMinimum');
    const exMax = num('exclusiveMaximum');
    if (exMin !== undefined && (min === undefined || exMin >= min.value)) min = { value: exMin, exclusive: true };
    if (exMax !== undefined && (max === undefined || exMax <= max.value)) max = { value: exMax, exclusive: true };
    const multipleOf = num('multipleOf');
    if (multipleOf !== undefined) {
      if (!(multipleOf > 0))
        throw new SchemaError(`${join(path, 'multipleOf')} must be above 0`, join(path, 'multipleOf'));
      if (!Number.isInteger(multipleOf) || multipleOf > 10_000)
        throw new SchemaError(
          `unsupported JSON-schema keyword "multipleOf" at ${join(path, 'multipleOf')}: only integer multiples (up to 10000)`,
          join(path, 'multipleOf'),
        );
      integer = true;
      if (multipleOf > 1) {
        if (min === undefined && max === undefined) return multiplesFrag(multipleOf, true);
        // Only "minimum: 0" combines with it (non-negative multiples).
        if (min && min.value === 0 && !min.exclusive && max === undefined) return multiplesFrag(multipleOf, false);
        throw new SchemaError(
          `unsupported JSON-schema keyword combination at ${path}: multipleOf with minimum/maximum`,
          join(path, 'multipleOf'),
        );
      }
    }
    if (integer) {
      if (min === undefined && max === undefined) return jsonInteger;
      const lo =
        min === undefined ? null : min.exclusive ? BigInt(Math.floor(min.value)) + 1n : BigInt(Math.ceil(min.value));
      const hi =
        max === undefined ? null : max.exclusive ? BigInt(Math.ceil(max.value)) - 1n : BigInt(Math.floor(max.value));
      if (lo !== null && hi !== null && lo > hi) return nothing;
      return this.regexOf(integerRange(lo, hi), path);
    }
    if (min === undefined && max === undefined) return jsonNumber;
    const re = numberRange(min, max);
    if (re === null)
      throw new SchemaError(
        `unsupported JSON-schema keyword combination at ${path}: minimum and maximum with fractions inside one unit`,
        join(path, 'minimum'),
      );
    return this.regexOf(re, path);
  }

  private regexOf(re: string, path: string): Frag {
    if (re === '') return nothing;
    try {
      return regexFrag(re);
    } catch (e) {
      throw new SchemaError(`internal: bad numeric range at ${path}: ${(e as Error).message}`, path);
    }
  }

  private arrayFrag(schema: Schema, path: string, depth: number): Frag {
    if (schema.uniqueItems === true && !(typeof schema.maxItems === 'number' && schema.maxItems <= 1))
      throw new SchemaError(
        `unsupported JSON-schema keyword "uniqueItems" at ${join(path, 'uniqueItems')}: distinct items cannot be enforced by a grammar`,
        join(path, 'uniqueItems'),
      );
    const minItems = nonNegInt(schema, 'minItems', path) ?? 0;
    let maxItems = nonNegInt(schema, 'maxItems', path) ?? Infinity;
    let prefix: unknown[] = [];
    let rest: unknown = true;
    let prefixPath = 'prefixItems';
    let restPath = 'items';
    if (Array.isArray(schema.prefixItems)) {
      prefix = schema.prefixItems;
      if (schema.items !== undefined) rest = schema.items;
    } else if (Array.isArray(schema.items)) {
      prefix = schema.items;
      prefixPath = 'items';
      restPath = 'additionalItems';
      if (schema.additionalItems !== undefined) rest = schema.additionalItems;
    } else if (schema.items !== undefined) rest = schema.items;
    if (rest === false) maxItems = Math.min(maxItems, prefix.length);
    if (minItems > maxItems) return nothing;
    const prefixFrags = prefix.map((s, i) => this.compile(s, join(join(path, prefixPath), i), depth + 1));
    const restFrag =
      rest === false ? nothing : rest === true ? this.anyValue() : this.compile(rest, join(path, restPath), depth + 1);
    const itemAt = (i: number) => (i < prefixFrags.length ? prefixFrags[i] : restFrag);
    const close = literal(']');
    return (nfa: Nfa, from: number) => {
      const open = seq(literal('['), this.ws)(nfa, from);
      const end = nfa.state();
      // counts[i]: i items written.
      let here = open;
      if (minItems === 0) nfa.addEps(close(nfa, here), end);
      const explicit = maxItems === Infinity ? Math.max(prefixFrags.length, minItems, 1) : maxItems;
      for (let i = 0; i < explicit; i++) {
        here = (i === 0 ? itemAt(0) : seq(this.comma, itemAt(i)))(nfa, here);
        if (i + 1 >= minItems) nfa.addEps(seq(this.ws, close)(nfa, here), end);
      }
      if (maxItems === Infinity) {
        // More items of the rest schema: (sep item)* after the explicit ones.
        const loopStart = nfa.state();
        nfa.addEps(here, loopStart);
        const after = seq(this.comma, restFrag)(nfa, loopStart);
        nfa.addEps(after, loopStart);
        nfa.addEps(seq(this.ws, close)(nfa, after), end);
      }
      return end;
    };
  }

  private objectFrag(schema: Schema, path: string, depth: number): Frag {
    const props = schema.properties ?? {};
    if (!isObject(props))
      throw new SchemaError(`${join(path, 'properties')} must be an object`, join(path, 'properties'));
    const required = schema.required ?? [];
    if (!Array.isArray(required) || !required.every((r) => typeof r === 'string'))
      throw new SchemaError(`${join(path, 'required')} must be an array of strings`, join(path, 'required'));
    const patterns = schema.patternProperties ?? {};
    if (!isObject(patterns))
      throw new SchemaError(`${join(path, 'patternProperties')} must be an object`, join(path, 'patternProperties'));
    const additional = schema.additionalProperties ?? true;
    const names = schema.propertyNames;
    const minP = nonNegInt(schema, 'minProperties', path) ?? 0;
    const maxP = nonNegInt(schema, 'maxProperties', path) ?? Infinity;
    if (
      isObject(schema.unevaluatedProperties) ||
      (schema.unevaluatedProperties === false &&
        additional !== false &&
        Object.keys(patterns).length === 0 &&
        additional !== true)
    )
      throw new SchemaError(
        `unsupported JSON-schema keyword "unevaluatedProperties" at ${path}`,
        join(path, 'unevaluatedProperties'),
      );
    // unevaluatedProperties: false with nothing else to evaluate extra members: no extra members.
    const extraAllowed = schema.unevaluatedProperties === false ? false : additional !== false;

    // The listed members (properties, then required names not listed), with patternProperties that match them.
    const listed: { name: string; schema: unknown; required: boolean; path: string }[] = [];
    const nameOk = (n: string) =>
      names === undefined || conforms(n, names as Schema, (r) => this.inline({ $ref: r }, path));
    for (const [name, s] of Object.entries(props)) {
      const isReq = required.includes(name);
      let sch: unknown = s;
      for (const [pat, ps] of Object.entries(patterns)) if (testPattern(pat, name, path)) sch = { allOf: [sch, ps] };
      if (sch === false || !nameOk(name)) {
        if (isReq) return nothing;
        continue;
      }
      listed.push({ name, schema: sch, required: isReq, path: join(join(path, 'properties'), name) });
    }
    for (const name of required) {
      if (name in props) continue;
      let sch: unknown = undefined;
      for (const [pat, ps] of Object.entries(patterns))
        if (testPattern(pat, name, path)) sch = sch === undefined ? ps : { allOf: [sch, ps] };
      if (sch === undefined) sch = extraAllowed ? additional : false;
      if (sch === false || !nameOk(name)) return nothing;
      listed.push({ name, schema: sch, required: true, path: join(join(path, 'required'), name) });
    }
    // Other members: under a patternProperties key, or any other key for additionalProperties.
    const extras: Frag[] = [];
    // Keys other members may not take: every listed name, also those forbidden (a false schema).
    const listedNames = [...new Set([...Object.keys(props), ...required])];
    const patternEntries = Object.entries(patterns);
    if (patternEntries.length > 0 && schema.unevaluatedProperties !== false) {
      const distinct = new Set(patternEntries.map(([, s]) => JSON.stringify(s)));
      if (distinct.size > 1 && patternEntries.length > 1)
        throw new SchemaError(
          `unsupported JSON-schema keyword "patternProperties" at ${join(path, 'patternProperties')}: several patterns with different schemas`,
          join(path, 'patternProperties'),
        );
      for (const [pat, ps] of patternEntries) {
        if (names === undefined && MATCHES_EVERY_STRING.has(pat)) {
          // A pattern every key matches (found anywhere in it): the extra keys are all the others.
          const value = this.compile(ps, join(join(path, 'patternProperties'), pat), depth + 1);
          extras.push(seq(keyNotIn(listedNames), this.colon, value));
          continue;
        }
        if (listedNames.some((n) => testPattern(pat, n, path)) || names !== undefined) continue; // keys may not repeat listed ones
        let keyFrag: Frag;
        try {
          keyFrag = seq(literal('"'), jsonPatternFrag(pat), literal('"'));
        } catch (e) {
          if (e instanceof RegexSyntaxError)
            throw new SchemaError(
              `${join(join(path, 'patternProperties'), pat)}: ${e.message}`,
              join(path, 'patternProperties'),
            );
          throw e;
        }
        extras.push(seq(keyFrag, this.colon, this.compile(ps, join(join(path, 'patternProperties'), pat), depth + 1)));
      }
    } else if (patternEntries.length === 0 && extraAllowed && additional !== false) {
      let keyFrag: Frag | null = keyNotIn(listedNames);
      if (names !== undefined) {
        // Keys must match propertyNames; only without listed names (no key to exclude).
        keyFrag =
          listedNames.length > 0
            ? null
            : this.compile({ type: 'string', ...(names as Schema) }, join(path, 'propertyNames'), depth + 1);
      }
      if (keyFrag)
        extras.push(seq(keyFrag, this.colon, this.compile(additional, join(path, 'additionalProperties'), depth + 1)));
    }
    const members = listed.map((m) =>
      seq(literal(JSON.stringify(m.name)), this.colon, this.compile(m.schema, m.path, depth + 1)),
    );
    const extra = extras.length > 0 ? alt(...extras) : null;
    if (listed.length === 0 && extra && minP === 0 && maxP === Infinity) return this.objectOf(extra);

    // Count tracks: track c = members written so far (saturating at `cap`); c > 0 means a comma comes first.
    const cap = maxP !== Infinity ? maxP : Math.max(minP, 1);
    if (cap > MAX_COUNT_TRACKS)
      throw new SchemaError(
        `unsupported JSON-schema keyword "${maxP !== Infinity ? 'maxProperties' : 'minProperties'}" at ${path}: above ${MAX_COUNT_TRACKS}`,
        join(path, maxP !== Infinity ? 'maxProperties' : 'minProperties'),
      );
    const bump = (c: number) => (maxP === Infinity ? Math.min(c + 1, cap) : c + 1);
    return (nfa: Nfa, from: number) => {
      const start = seq(literal('{'), this.ws)(nfa, from);
      const end = nfa.state();
      // at[c]: the state "c members written" before the next listed member, -1 where unreachable
      // (after a required member no track 0, ...): only reachable tracks get copies of a member.
      let at: number[] = [start];
      for (let c = 1; c <= cap; c++) at.push(-1);
      const track = (list: number[], c: number) => (list[c] >= 0 ? list[c] : (list[c] = nfa.state()));
      // One copy of a member per track it leads to: the tracks that go to the same one (all of
      // them without min/maxProperties) enter a shared copy, each after its comma if it has one.
      const addMember = (member: Frag, from: number[], into: number[]) => {
        const entries = new Map<number, number>();
        for (let c = 0; c <= cap; c++) {
          if (from[c] < 0) continue;
          const to = bump(c);
          if (to > cap) continue;
          track(into, to); // made now: when from is into, the new track loops too
          let entry = entries.get(to);
          if (entry === undefined) entries.set(to, (entry = nfa.state()));
          nfa.addEps(c === 0 ? from[c] : this.comma(nfa, from[c]), entry);
        }
        for (const [to, entry] of entries) nfa.addEps(member(nfa, entry), track(into, to));
      };
      for (let i = 0; i < members.length; i++) {
        const next: number[] = at.map(() => -1);
        for (let c = 0; c <= cap; c++) if (at[c] >= 0 && !listed[i].required) nfa.addEps(at[c], track(next, c));
        addMember(members[i], at, next);
        at = next;
      }
      // Extra members loop: from track c to track c + 1 (saturating); reachable tracks only grow.
      if (extra) addMember(extra, at, at);
      for (let c = 0; c <= cap; c++) {
        if (c < minP || at[c] < 0) continue;
        nfa.addEps((c === 0 ? literal('}') : seq(this.ws, literal('}')))(nfa, at[c]), end);
      }
      return end;
    };
  }
}

/** Patterns that match every string as JSON Schema applies them (a search: an empty match will do). */
const MATCHES_EVERY_STRING = new Set(['', '.*', '^.*', '.*$', '(.*)', '^(.*)']);

/** A JSON string key that is none of `names` (compared as written: keys have no escapes here). */
const ALL_LEADS = byteSet([[0xc2, 0xf4]]);

function keyNotIn(names: string[]): Frag {
  const keyChar = alt(
    bytesOf(
      byteSet([
        [0x20, 0x21],
        [0x23, 0x5b],
        [0x5d, 0x7e],
      ]),
    ),
    utf8Char,
  );
  const anyKey = seq(literal('"'), star(keyChar), literal('"'));
  if (names.length === 0) return anyKey;
  const enc = new TextEncoder();
  const encoded = names.map((n) => enc.encode(JSON.stringify(n).slice(1, -1)));
  // A trie of the names; leaving it (a byte no name has here) is free; a quote is allowed unless a name ends there.
  return (nfa: Nfa, from: number) => {
    const open = literal('"')(nfa, from);
    const end = nfa.state();
    const free = nfa.state();
    const freeEnd = star(keyChar)(nfa, free);
    nfa.addEps(literal('"')(nfa, freeEnd), end);
    const leaveTo = nfa.state();
    nfa.addEps(leaveTo, free);
    let leadStart = -1;
    const anyLead = () => {
      if (leadStart < 0) {
        leadStart = nfa.state();
        nfa.addEps(utf8Tail()(nfa, leadStart, ALL_LEADS), free);
      }
      return leadStart;
    };
    const build = (node: number, list: Uint8Array[], depth: number): void => {
      const byByte = new Map<number, Uint8Array[]>();
      let endsHere = false;
      for (const b of list) {
        if (b.length === depth) endsHere = true;
        else {
          const k = b[depth];
          if (!byByte.has(k)) byByte.set(k, []);
          byByte.get(k)!.push(b);
        }
      }
      if (!endsHere) nfa.addEps(literal('"')(nfa, node), end);
      // Bytes that leave the trie: any key character starting with another byte. Multi-byte
      // characters are compared byte by byte, so an ASCII byte set and the UTF-8 lead bytes suffice.
      const leave = new Uint8Array(256);
      for (const [lo, hi] of [
        [0x20, 0x21],
        [0x23, 0x5b],
        [0x5d, 0x7e],
      ] as [number, number][])
        for (let c = lo; c <= hi; c++) if (!byByte.has(c)) leave[c] = 1;
      nfa.addEdge(node, leave, leaveTo);
      // Non-ASCII characters: leave on a lead byte no name continues with (through one shared
      // tail where no name continues with a non-ASCII byte here: most nodes of most names).
      if ([...byByte.keys()].every((c) => c < 0x80)) nfa.addEps(node, anyLead());
      else {
        const lead = new Uint8Array(256);
        for (let c = 0xc2; c <= 0xf4; c++) if (!byByte.has(c)) lead[c] = 1;
        nfa.addEps(utf8Tail()(nfa, node, lead), free);
      }
      for (const [k, sub] of byByte) {
        const child = nfa.state();
        nfa.addEdge(node, byteSet([[k, k]]), child);
        build(child, sub, depth + 1);
      }
    };
    build(open, encoded, 0);
    return end;
  };
}

/** The rest of a UTF-8 character after a lead byte in `lead`. */
function utf8Tail(): (nfa: Nfa, from: number, lead: Uint8Array) => number {
  return (nfa, from, lead) => {
    const end = nfa.state();
    const cont = byteSet([[0x80, 0xbf]]);
    const two = new Uint8Array(256);
    const three = new Uint8Array(256);
    const four = new Uint8Array(256);
    for (let c = 0; c < 256; c++) {
      if (!lead[c]) continue;
      if (c >= 0xc2 && c <= 0xdf) two[c] = 1;
      else if (c >= 0xe0 && c <= 0xef) three[c] = 1;
      else if (c >= 0xf0 && c <= 0xf4) four[c] = 1;
    }
    // Loose continuation ranges are fine here: the vocabulary only holds valid UTF-8 tokens and
    // the decoded key is whatever those bytes are; what matters is that it differs from every name.
    const s2 = nfa.state();
    nfa.addEdge(from, two, s2);
    nfa.addEdge(s2, cont, end);
    const s3a = nfa.state();
    const s3b = nfa.state();
    nfa.addEdge(from, three, s3a);
    nfa.addEdge(s3a, cont, s3b);
    nfa.addEdge(s3b, cont, end);
    const s4a = nfa.state();
    const s4b = nfa.state();
    const s4c = nfa.state();
    nfa.addEdge(from, four, s4a);
    nfa.addEdge(s4a, cont, s4b);
    nfa.addEdge(s4b, cont, s4c);
    nfa.addEdge(s4c, cont, end);
    return end;
  };
}

/** Multiples of k as JSON integers (non-negative only unless `signed`): a remainder automaton. */
function multiplesFrag(k: number, signed: boolean): Frag {
  return (nfa: Nfa, from: number) => {
    const end = nfa.state();
    const start = signed ? nfa.state() : from;
    if (signed) {
      nfa.addEps(from, start);
      nfa.addEdge(from, byteSet([[0x2d, 0x2d]]), start);
    }
    // "0" alone, or a non-zero first digit then digits, tracking the remainder mod k.
    const zero = nfa.state();
    nfa.addEdge(start, byteSet([[0x30, 0x30]]), zero);
    nfa.addEps(zero, end);
    const rem: number[] = [];
    for (let r = 0; r < k; r++) rem.push(nfa.state());
    for (let d = 1; d <= 9; d++) nfa.addEdge(start, byteSet([[0x30 + d, 0x30 + d]]), rem[d % k]);
    for (let r = 0; r < k; r++) {
      const byTarget = new Map<number, [number, number][]>();
      for (let d = 0; d <= 9; d++) {
        const t = (r * 10 + d) % k;
        if (!byTarget.has(t)) byTarget.set(t, []);
        byTarget.get(t)!.push([0x30 + d, 0x30 + d]);
      }
      for (const [t, ranges] of byTarget) nfa.addEdge(rem[r], byteSet(ranges), rem[t]);
    }
    nfa.addEps(rem[0], end);
    return end;
  };
}

interface Signature {
  types: Set<TypeName>;
  values: string[] | null;
  tags: Map<string, string[]>;
  /** Names an object may have (additionalProperties: false), or null. */
  closed: string[] | null;
  required: string[];
}

function excludes(a: Signature, b: Signature): boolean {
  const shared = [...a.types].filter((t) => b.types.has(t));
  if (shared.length === 0) return true;
  if (a.values && b.values && !a.values.some((v) => b.values!.includes(v))) return true;
  if (shared.every((t) => t === 'object')) {
    for (const [name, vals] of a.tags) {
      const other = b.tags.get(name);
      if (other && !vals.some((v) => other.includes(v))) return true;
    }
    if (a.closed && b.required.some((n) => !a.closed!.includes(n))) return true;
    if (b.closed && a.required.some((n) => !b.closed!.includes(n))) return true;
  }
  return false;
}

function typeOfValue(v: unknown): TypeName {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v as TypeName;
}

function withoutKeys(s: Schema, keys: string[]): Schema {
  const out: Schema = {};
  for (const [k, v] of Object.entries(s)) if (!keys.includes(k)) out[k] = v;
  return out;
}

const ANNOTATIONS = new Set([
  'title',
  'description',
  '$schema',
  '$id',
  'id',
  '$comment',
  'default',
  'examples',
  'example',
  'readOnly',
  'writeOnly',
  'deprecated',
  '$defs',
  'definitions',
  '$anchor',
  'contentMediaType',
  'contentEncoding',
]);
const isAnnotation = (k: string) => ANNOTATIONS.has(k) || !KNOWN.has(k);

/** Keywords that validate (everything else is an annotation or an unknown extension: ignored). */
const KNOWN = new Set([
  'type',
  'enum',
  'const',
  'nullable',
  '$ref',
  'allOf',
  'anyOf',
  'oneOf',
  'uniqueItems',
  'unevaluatedProperties',
  NOT_STRINGS,
  ...OBJECT_KEYS,
  ...ARRAY_KEYS,
  ...STRING_KEYS,
  ...NUMBER_KEYS,
  ...UNSUPPORTED,
]);

function hasValidation(s: Schema): boolean {
  return Object.keys(s).some((k) => KNOWN.has(k) && !(k === 'uniqueItems' && s[k] === false));
}

function nonNegInt(s: Schema, key: string, path: string): number | undefined {
  const v = s[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
    throw new SchemaError(
      `${join(path, key)} must be a non-negative integer, got ${JSON.stringify(v)}`,
      join(path, key),
    );
  return v;
}

function testPattern(pattern: string, text: string, path: string): boolean {
  try {
    return new RegExp(pattern, 'u').test(text);
  } catch {
    throw new SchemaError(`the pattern ${JSON.stringify(pattern)} at ${path} is not a valid regular expression`, path);
  }
}

function matchesAnyPattern(name: string, patterns: unknown): boolean {
  if (!isObject(patterns)) return false;
  return Object.keys(patterns).some((p) => {
    try {
      return new RegExp(p, 'u').test(name);
    } catch {
      return false;
    }
  });
}

/**
 * A small validator for enum/const values against their sibling keywords, and for property names
 * against propertyNames. It answers false where unsure, so a value it keeps always validates.
 */
function conforms(v: unknown, s: unknown, resolveRef: (ref: string) => unknown, depth = 0): boolean {
  if (depth > 32) return false;
  if (s === true || s === undefined) return true;
  if (s === false || !isObject(s)) return false;
  for (const k of Object.keys(s)) {
    if (!KNOWN.has(k)) continue;
    const x = s[k];
    switch (k) {
      case 'type': {
        const types = Array.isArray(x) ? x : [x];
        const t = typeOfValue(v);
        if (
          !types.includes(t) &&
          !(t === 'integer' && types.includes('number')) &&
          !(v === null && s.nullable === true)
        )
          return false;
        break;
      }
      case 'nullable':
        break;
      case NOT_STRINGS:
        if (typeof v === 'string' && (x as string[]).includes(v)) return false;
        break;
      case 'enum':
        if (!Array.isArray(x) || !x.some((e) => JSON.stringify(e) === JSON.stringify(v))) return false;
        break;
      case 'const':
        if (JSON.stringify(x) !== JSON.stringify(v)) return false;
        break;
      case '$ref':
        if (typeof x !== 'string' || !conforms(v, resolveRef(x), resolveRef, depth + 1)) return false;
        break;
      case 'allOf':
        if (!Array.isArray(x) || !x.every((y) => conforms(v, y, resolveRef, depth + 1))) return false;
        break;
      case 'anyOf':
        if (!Array.isArray(x) || !x.some((y) => conforms(v, y, resolveRef, depth + 1))) return false;
        break;
      case 'minLength':
      case 'maxLength':
        if (typeof v === 'string') {
          const n = [...v].length;
          if (k === 'minLength' ? n < (x as number) : n > (x as number)) return false;
        }
        break;
      case 'pattern':
        if (typeof v === 'string') {
          try {
            if (!new RegExp(x as string, 'u').test(v)) return false;
          } catch {
            return false;
          }
        }
        break;
      case 'format':
        if (typeof v === 'string') {
          const re = FORMATS[x as string];
          if (!re) return false;
          try {
            if (!new RegExp(`^(?:${re})$`, 'u').test(v)) return false;
          } catch {
            return false;
          }
        }
        break;
      case 'minimum':
        if (typeof v === 'number' && v < (x as number)) return false;
        break;
      case 'maximum':
        if (typeof v === 'number' && v > (x as number)) return false;
        break;
      case 'exclusiveMinimum':
        if (typeof v === 'number' && (typeof x === 'number' ? v <= x : x === true && v <= (s.minimum as number)))
          return false;
        break;
      case 'exclusiveMaximum':
        if (typeof v === 'number' && (typeof x === 'number' ? v >= x : x === true && v >= (s.maximum as number)))
          return false;
        break;
      case 'multipleOf':
        if (typeof v === 'number' && (typeof x !== 'number' || !Number.isInteger(v / x))) return false;
        break;
      default:
        // Object and array keywords (and anything else): only values they cannot apply to pass.
        if (OBJECT_KEYS.includes(k) && (!isObject(v) || Object.keys(v).length === 0)) {
          if (isObject(v) && k === 'required' && Array.isArray(x) && x.length > 0) return false;
          if (isObject(v) && k === 'minProperties' && (x as number) > 0) return false;
          break;
        }
        if (ARRAY_KEYS.includes(k) && !Array.isArray(v)) break;
        if (STRING_KEYS.includes(k) || NUMBER_KEYS.includes(k)) break;
        return false;
    }
  }
  return true;
}
