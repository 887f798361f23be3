// JSON values and a JSON-schema subset -> NFA fragments.
//
// Supported keywords: type (one or a list of string, number, integer, boolean, null, object,
// array), properties, required, additionalProperties: false, items (one schema), enum, const,
// anyOf, and the annotations title, description, $schema, default, examples. Anything else is a
// SchemaError naming the keyword and where it is.
//
// Whitespace is limited to nothing, a space, or a newline and indentation (see `ws`).
// Whitespace is limited to nothing, a space, or a newline and indentation (see `ws`).
// Object members come out in the order `properties` lists them, each optional one may be left
// out, and no other member is allowed (this keeps the language regular: one NFA, no stack).
// A value the schema leaves free (json_object, an object without properties, an array without
// items) is any JSON value nested at most FREE_DEPTH deep: JSON itself needs a stack, which an NFA
// only has up to a fixed depth, and each level doubles the automaton.
import { alt, byteSet, bytesOf, literal, loop1, optional, seq, star, type Frag } from './nfa.js';
import { utf8Multibyte } from './regex.js';

export class SchemaError extends Error {
  constructor(
    message: string,
    /** JSON-pointer-like path of the offending place, e.g. "properties.city.format". */
    readonly path: string,
  ) {
    super(message);
    this.name = 'SchemaError';
  }
}

export const FREE_DEPTH = 5;

// Whitespace between tokens: nothing, one space, or one newline and an indentation of spaces and
// tabs. That covers compact and pretty-printed JSON, and keeps a model from padding a value with
// whitespace runs (a known failure of "any whitespace" JSON modes).
const ws = optional(
  alt(
    literal(' '),
    seq(
      literal('\n'),
      star(
        bytesOf(
          byteSet([
            [0x20, 0x20],
            [0x09, 0x09],
          ]),
        ),
      ),
    ),
  ),
);
const hex = bytesOf(
  byteSet([
    [0x30, 0x39],
    [0x41, 0x46],
    [0x61, 0x66],
  ]),
);
const digit = bytesOf(byteSet([[0x30, 0x39]]));
const digits = loop1(digit);
const plainChar = bytesOf(
  byteSet([
    [0x20, 0x21],
    [0x23, 0x5b],
    [0x5d, 0x7f],
  ]),
); // not " or \
const escape = seq(
  literal('\\'),
  alt(
    bytesOf(
      byteSet([
        [0x22, 0x22],
        [0x5c, 0x5c],
        [0x2f, 0x2f],
        [0x62, 0x62],
        [0x66, 0x66],
        [0x6e, 0x6e],
        [0x72, 0x72],
        [0x74, 0x74],
      ]),
    ),
    seq(literal('u'), hex, hex, hex, hex),
  ),
);
export const jsonString: Frag = seq(literal('"'), star(alt(plainChar, escape, utf8Multibyte)), literal('"'));
const intPart = seq(optional(literal('-')), alt(literal('0'), seq(bytesOf(byteSet([[0x31, 0x39]])), star(digit))));
export const jsonInteger: Frag = intPart;
export const jsonNumber: Frag = seq(
  intPart,
  optional(seq(literal('.'), digits)),
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
      digits,
    ),
  ),
);
const scalars: Frag[] = [jsonString, jsonNumber, literal('true'), literal('false'), literal('null')];

/** { ws (member (ws , ws member)*)? ws } with one copy of member. */
const objectOf = (member: Frag): Frag =>
  seq(literal('{'), ws, optional(seq(loop1(member, seq(ws, literal(','), ws)), ws)), literal('}'));
const arrayOf = (item: Frag): Frag =>
  seq(literal('['), ws, optional(seq(loop1(item, seq(ws, literal(','), ws)), ws)), literal(']'));

/** Any JSON value with containers nested at most `depth` deep. */
export function anyValue(depth = FREE_DEPTH): Frag {
  if (depth <= 0) return alt(...scalars, literal('{}'), literal('[]'));
  const inner = anyValue(depth - 1);
  return alt(...scalars, objectOf(seq(jsonString, ws, literal(':'), ws, inner)), arrayOf(inner));
}
export const anyObject = (depth = FREE_DEPTH): Frag =>
  objectOf(seq(jsonString, ws, literal(':'), ws, anyValue(depth - 1)));

const ANNOTATIONS = new Set(['title', 'description', '$schema', 'default', 'examples', '$comment']);
const KNOWN = new Set(['type', 'properties', 'required', 'additionalProperties', 'items', 'enum', 'const', 'anyOf']);
const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'null', 'object', 'array']);

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const join = (path: string, key: string) => (path === '' ? key : `${path}.${key}`);

/** Compiles a schema (the subset above) into an NFA fragment; throws SchemaError. */
export function schemaFrag(schema: unknown, path = ''): Frag {
  if (schema === true) return anyValue();
  if (!isObject(schema))
    throw new SchemaError(`${path || 'the schema'} must be an object, got ${JSON.stringify(schema)}`, path);
  for (const key of Object.keys(schema)) {
    if (!KNOWN.has(key) && !ANNOTATIONS.has(key))
      throw new SchemaError(`unsupported JSON-schema keyword "${key}" at ${join(path, key)}`, join(path, key));
  }
  if ('const' in schema) return literal(JSON.stringify(schema.const));
  if ('enum' in schema) {
    const values = schema.enum;
    if (!Array.isArray(values) || values.length === 0)
      throw new SchemaError(`${join(path, 'enum')} must be a non-empty array`, join(path, 'enum'));
    return alt(...values.map((v) => literal(JSON.stringify(v))));
  }
  if ('anyOf' in schema) {
    const list = schema.anyOf;
    if (!Array.isArray(list) || list.length === 0)
      throw new SchemaError(`${join(path, 'anyOf')} must be a non-empty array`, join(path, 'anyOf'));
    const rest = { ...schema };
    delete rest.anyOf;
    // Sibling keywords apply to every branch, as they would in a validator.
    return alt(...list.map((s, i) => schemaFrag(isObject(s) ? { ...rest, ...s } : s, `${join(path, 'anyOf')}[${i}]`)));
  }
  let types: string[];
  if (schema.type === undefined) {
    if ('properties' in schema) types = ['object'];
    else if ('items' in schema) types = ['array'];
    else return anyValue();
  } else {
    types = Array.isArray(schema.type) ? schema.type : [schema.type];
    for (const t of types)
      if (typeof t !== 'string' || !TYPES.has(t))
        throw new SchemaError(`unsupported type ${JSON.stringify(t)} at ${join(path, 'type')}`, join(path, 'type'));
  }
  const frags = types.map((t): Frag => {
    switch (t) {
      case 'string':
        return jsonString;
      case 'number':
        return jsonNumber;
      case 'integer':
        return jsonInteger;
      case 'boolean':
        return alt(literal('true'), literal('false'));
      case 'null':
        return literal('null');
      case 'array':
        return arrayOf(
          schema.items === undefined ? anyValue(FREE_DEPTH - 1) : schemaFrag(schema.items, join(path, 'items')),
        );
      default:
        return objectFrag(schema, path);
    }
  });
  return frags.length === 1 ? frags[0]! : alt(...frags);
}

function objectFrag(schema: Record<string, unknown>, path: string): Frag {
  const ap = schema.additionalProperties;
  if (ap !== undefined && ap !== false)
    throw new SchemaError(
      `unsupported JSON-schema keyword "additionalProperties" at ${join(path, 'additionalProperties')}: only false is supported`,
      join(path, 'additionalProperties'),
    );
  const props = schema.properties;
  if (props === undefined) {
    if (schema.required !== undefined && !(Array.isArray(schema.required) && schema.required.length === 0))
      throw new SchemaError(`${join(path, 'required')} names properties that are not defined`, join(path, 'required'));
    return ap === false ? literal('{}') : anyObject();
  }
  if (!isObject(props))
    throw new SchemaError(`${join(path, 'properties')} must be an object`, join(path, 'properties'));
  const required = schema.required ?? [];
  if (!Array.isArray(required) || !required.every((r) => typeof r === 'string'))
    throw new SchemaError(`${join(path, 'required')} must be an array of strings`, join(path, 'required'));
  for (const r of required)
    if (!(r in props))
      throw new SchemaError(
        `${join(path, 'required')} names "${r}", which is not in properties`,
        join(path, 'required'),
      );
  const names = Object.keys(props);
  const members = names.map((name) =>
    seq(
      literal(JSON.stringify(name)),
      ws,
      literal(':'),
      ws,
      schemaFrag(props[name], join(join(path, 'properties'), name)),
    ),
  );
  const isRequired = names.map((n) => required.includes(n));
  const comma = seq(ws, literal(','), ws);
  // Two tracks of states: none[i] = "before member i, nothing written yet" (no comma before the
  // next member), some[i] = "before member i, some member written". One copy of each member per
  // track, joined by epsilon edges, so optional members cost no more than required ones.
  return (nfa, from) => {
    const none: number[] = [seq(literal('{'), ws)(nfa, from)];
    const some: number[] = [nfa.state()];
    for (let i = 0; i < names.length; i++) {
      none.push(nfa.state());
      some.push(nfa.state());
      if (!isRequired[i]) {
        nfa.eps[none[i]!]!.push(none[i + 1]!);
        nfa.eps[some[i]!]!.push(some[i + 1]!);
      }
      nfa.eps[members[i]!(nfa, none[i]!)]!.push(some[i + 1]!);
      nfa.eps[seq(comma, members[i]!)(nfa, some[i]!)]!.push(some[i + 1]!);
    }
    const end = nfa.state();
    nfa.eps[literal('}')(nfa, none[names.length]!)]!.push(end);
    nfa.eps[seq(ws, literal('}'))(nfa, some[names.length]!)]!.push(end);
    return end;
  };
}
