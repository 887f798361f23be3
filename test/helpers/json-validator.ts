// A JSON-schema validator for the subset constrained decoding supports, written independently of
// the constraint's automaton (properties in any order, as JSON schema means them).
/** Independent validator for the supported subset (properties in any order, like JSON schema). */
export function validate(v: unknown, s: Record<string, unknown>, path = '$'): string[] {
  if ('const' in s) return JSON.stringify(v) === JSON.stringify(s.const) ? [] : [`${path}: not the const`];
  if (Array.isArray(s.enum))
    return s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v)) ? [] : [`${path}: not in enum`];
  if (Array.isArray(s.anyOf)) {
    const ok = s.anyOf.some((b) => validate(v, b as Record<string, unknown>, path).length === 0);
    return ok ? [] : [`${path}: no anyOf branch matches`];
  }
  const types = s.type === undefined ? [] : Array.isArray(s.type) ? s.type : [s.type];
  const is = (t: string): boolean =>
    t === 'string'
      ? typeof v === 'string'
      : t === 'number'
        ? typeof v === 'number'
        : t === 'integer'
          ? Number.isInteger(v)
          : t === 'boolean'
            ? typeof v === 'boolean'
            : t === 'null'
              ? v === null
              : t === 'array'
                ? Array.isArray(v)
                : v !== null && typeof v === 'object' && !Array.isArray(v);
  if (types.length > 0 && !types.some(is)) return [`${path}: expected ${types.join('|')}, got ${JSON.stringify(v)}`];
  const errors: string[] = [];
  if (v !== null && typeof v === 'object' && !Array.isArray(v) && s.properties) {
    const props = s.properties as Record<string, Record<string, unknown>>;
    for (const r of (s.required as string[]) ?? []) if (!(r in v)) errors.push(`${path}: missing ${r}`);
    for (const [k, x] of Object.entries(v)) {
      if (!(k in props)) errors.push(`${path}: extra property ${k}`);
      else errors.push(...validate(x, props[k]!, `${path}.${k}`));
    }
  }
  if (Array.isArray(v) && s.items)
    v.forEach((x, i) => errors.push(...validate(x, s.items as Record<string, unknown>, `${path}[${i}]`)));
  return errors;
}
