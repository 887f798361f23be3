// Numeric bounds as regular expressions over the decimal text of a JSON number.
//
// Integers: the classic digit-range construction (a range of n-digit numbers splits into a
// prefix that is fixed, one digit range, and free digits). Numbers: a value I.F lies in [L, H]
// when its integer part lies strictly between the bounds' integer parts (any fraction), or equals
// one of them and the fraction compares as digit strings. Bounded numbers have no exponent (a
// subset of JSON numbers, so every output still validates). The comparison is exact on the text;
// a value within double rounding of an exclusive bound (more than 15 significant digits) is judged
// by its text.

/** A non-negative decimal: integer part and fraction digits (no trailing zeros). */
export interface Decimal {
  int: bigint;
  frac: string;
}

/** The exact decimal of a finite JavaScript number (its shortest round-trip text). */
export function decimalOf(x: number): { negative: boolean; value: Decimal } {
  const negative = x < 0 || Object.is(x, -0);
  const abs = Math.abs(x);
  let text = String(abs);
  if (/e/.test(text)) {
    const [mant, expText] = text.split('e') as [string, string];
    const exp = Number(expText);
    const [ip, fp = ''] = mant.split('.') as [string, string?];
    const digits = ip + fp;
    const point = ip.length + exp;
    text =
      point <= 0
        ? '0.' + '0'.repeat(-point) + digits
        : point >= digits.length
          ? digits + '0'.repeat(point - digits.length)
          : digits.slice(0, point) + '.' + digits.slice(point);
  }
  const [ip, fp = ''] = text.split('.') as [string, string?];
  return { negative: negative && abs !== 0, value: { int: BigInt(ip), frac: fp.replace(/0+$/, '') } };
}

/** Naturals (no leading zeros) in [a, b]; b null for no upper bound. '' when empty. */
export function naturalRange(a: bigint, b: bigint | null): string {
  if (a < 0n) a = 0n;
  if (b !== null && b < a) return '';
  const branches: string[] = [];
  const la = a.toString().length;
  const lb = b === null ? la : b.toString().length;
  for (let len = la; len <= lb; len++) {
    const lo = len === la ? a : 10n ** BigInt(len - 1);
    const hi = b !== null && len === lb ? b : 10n ** BigInt(len) - 1n;
    if (lo > hi) continue;
    const loText = len === 1 ? lo.toString() : lo.toString().padStart(len, '0');
    branches.push(sameLength(loText, hi.toString()));
  }
  if (b === null) branches.push(`[1-9]\\d{${la},}`);
  return branches.length === 0 ? '' : branches.length === 1 ? branches[0] : `(?:${branches.join('|')})`;
}

const digitClass = (a: number, b: number) => (a === b ? String(a) : `[${a}-${b}]`);

/** Digit strings of one length between x and y (x <= y). */
function sameLength(x: string, y: string): string {
  const n = x.length;
  if (n === 0) return '';
  if (x === y) return x;
  if (/^0*$/.test(x.slice(1)) && /^9*$/.test(y.slice(1)))
    return digitClass(Number(x[0]), Number(y[0])) + (n > 1 ? `\\d{${n - 1}}` : '');
  if (x[0] === y[0]) return x[0] + sameLength(x.slice(1), y.slice(1));
  const x0 = Number(x[0]);
  const y0 = Number(y[0]);
  const parts = [x[0] + sameLength(x.slice(1), '9'.repeat(n - 1))];
  if (y0 - x0 >= 2) parts.push(digitClass(x0 + 1, y0 - 1) + `\\d{${n - 1}}`);
  parts.push(y[0] + sameLength('0'.repeat(n - 1), y.slice(1)));
  return `(?:${parts.join('|')})`;
}

/** Integers (JSON text) in [lo, hi]; null for an open end. '' when empty. */
export function integerRange(lo: bigint | null, hi: bigint | null): string {
  const parts: string[] = [];
  if (hi === null || hi >= 0n) {
    const p = naturalRange(lo === null || lo < 0n ? 0n : lo, hi);
    if (p) parts.push(p);
  }
  if (lo === null || lo < 0n) {
    // Negative numbers: magnitudes in [max(1, -hi), -lo].
    const minMag = hi === null || hi >= 0n ? 1n : -hi;
    const p = naturalRange(minMag, lo === null ? null : -lo);
    if (p) parts.push(`-${p}`);
  }
  return parts.length === 0 ? '' : parts.length === 1 ? parts[0] : `(?:${parts.join('|')})`;
}

export interface Bound {
  value: number;
  exclusive: boolean;
}

/** 0.F >= 0.B (or >) for a fraction F given as its digits (the text after the point; '' = none). */
function fractionAtLeast(b: string, strict: boolean): string {
  if (b === '') return strict ? '\\.\\d*[1-9]\\d*' : '(?:\\.\\d+)?';
  const parts: string[] = [];
  for (let j = 0; j < b.length; j++) {
    const d = Number(b[j]);
    if (d < 9) parts.push(b.slice(0, j) + digitClass(d + 1, 9) + '\\d*');
  }
  parts.push(b + (strict ? '\\d*[1-9]\\d*' : '\\d*'));
  return `\\.(?:${parts.join('|')})`;
}

/** 0.F <= 0.B (or <). */
function fractionAtMost(b: string, strict: boolean): string {
  if (b === '') return strict ? '' : '(?:\\.0+)?';
  const parts: string[] = [];
  for (let j = 0; j < b.length; j++) {
    const d = Number(b[j]);
    if (d > 0) parts.push(b.slice(0, j) + digitClass(0, d - 1) + '\\d*');
    if (j > 0) parts.push(b.slice(0, j));
  }
  if (!strict) parts.push(b + '0*');
  return `(?:\\.(?:${parts.join('|')}))?`;
}

/** Magnitudes m = I(.F)? with lo <= m <= hi (bounds non-negative decimals; null = open). '' when empty. */
function magnitudeRange(
  lo: { d: Decimal; strict: boolean } | null,
  hi: { d: Decimal; strict: boolean } | null,
): string | null {
  const anyFraction = '(?:\\.\\d+)?';
  const L = lo ?? { d: { int: 0n, frac: '' }, strict: false };
  const parts: string[] = [];
  if (hi === null) {
    const above = naturalRange(L.d.int + 1n, null);
    if (above) parts.push(above + anyFraction);
    parts.push(L.d.int.toString() + fractionAtLeast(L.d.frac, L.strict));
    return `(?:${parts.join('|')})`;
  }
  const H = hi;
  if (L.d.int === H.d.int) {
    // Both bounds inside one unit: only the common exact cases are supported.
    if (H.d.frac === '' && H.strict) return '';
    if (L.d.frac === '' && !L.strict) return H.d.int.toString() + fractionAtMost(H.d.frac, H.strict);
    return null;
  }
  if (L.d.int > H.d.int) return '';
  const between = naturalRange(L.d.int + 1n, H.d.int - 1n);
  if (between) parts.push(between + anyFraction);
  parts.push(L.d.int.toString() + fractionAtLeast(L.d.frac, L.strict));
  const top = fractionAtMost(H.d.frac, H.strict);
  if (!(H.d.frac === '' && H.strict)) parts.push(H.d.int.toString() + top);
  return `(?:${parts.join('|')})`;
}

/**
 * JSON numbers (no exponent) between the bounds; undefined ends are open. null when the bounds
 * fall into a case not supported (both inside one unit with fractions on both sides).
 */
export function numberRange(min: Bound | undefined, max: Bound | undefined): string | null {
  const parts: string[] = [];
  const neg = (b: Bound) => decimalOf(-b.value);
  const pos = (b: Bound) => decimalOf(b.value);
  // Non-negative values: m in [max(min, 0), max].
  if (max === undefined || max.value >= 0) {
    const lo = min === undefined || min.value < 0 ? null : { d: pos(min).value, strict: min.exclusive };
    const hi = max === undefined ? null : { d: pos(max).value, strict: max.exclusive };
    const p = magnitudeRange(lo, hi);
    if (p === null) return null;
    if (p) parts.push(p);
  }
  // Negative values: magnitudes in [max(-max, 0), -min].
  if (min === undefined || min.value < 0) {
    const lo = max === undefined || max.value > 0 ? null : { d: neg(max).value, strict: max.exclusive };
    const hi = min === undefined ? null : { d: neg(min).value, strict: min.exclusive };
    const p = magnitudeRange(lo, hi);
    if (p === null) return null;
    if (p) parts.push(`-${p}`);
  }
  return parts.length === 0 ? '' : `(?:${parts.join('|')})`;
}
