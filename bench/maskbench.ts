// MaskBench (guidance-ai/jsonschemabench, maskbench/data) judged as its runner.py does, with the
// Qwen2.5 tokenizer: a schema passes when it compiles, every token of every valid instance is
// allowed, and every invalid instance is rejected at some token. Instances are serialized as
// Python's json.dumps(data, ensure_ascii=False) (", " and ": " separators, Python float repr,
// key order kept), so numbers and keys are re-read from the file text, not through JSON.parse.
//
//   node dist/bench/maskbench.js <data folder> [--limit N] [--every K] [--shard k/n] [--resume a.jsonl,...] [--shuffle] [--reverse] [--filter substring]
//   [--out results.jsonl] [--slow MS]
//   [--tokenizer dir]
//   node dist/bench/maskbench.js --summarize a.jsonl,b.jsonl   (one summary of several runs' outputs, e.g. shards; no new work)
import { existsSync, readdirSync, readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  guideFor,
  Matcher,
  setCompileBudget,
  StructuredOutputError,
  vocabularyFromTokenizer,
} from '../src/sampler/structured/index.js';
import { slicesOf } from '../src/sampler/structured/slices.js';
import { trieOf } from '../src/sampler/structured/vocabulary.js';
import { QwenTokenizer } from '../src/tokenizer/index.js';

type PyValue = null | boolean | string | { num: string } | PyValue[] | { entries: [string, PyValue][] };

/** A JSON parser that keeps number text and key order (as Python's json.loads would see them). */
function parsePy(text: string): PyValue {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const value = (): PyValue => {
    ws();
    const c = text[i]!;
    if (c === '{') {
      i++;
      const entries: [string, PyValue][] = [];
      ws();
      if (text[i] === '}') {
        i++;
        return { entries };
      }
      for (;;) {
        ws();
        const k = value() as string;
        ws();
        i++; // :
        const v = value();
        const at = entries.findIndex(([x]) => x === k);
        if (at >= 0) entries[at]![1] = v;
        else entries.push([k, v]);
        ws();
        if (text[i++] === '}') return { entries };
      }
    }
    if (c === '[') {
      i++;
      const items: PyValue[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return items;
      }
      for (;;) {
        items.push(value());
        ws();
        if (text[i++] === ']') return items;
      }
    }
    if (c === '"') {
      const start = i;
      i++;
      while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
      i++;
      return JSON.parse(text.slice(start, i)) as string;
    }
    if (text.startsWith('true', i)) return ((i += 4), true);
    if (text.startsWith('false', i)) return ((i += 5), false);
    if (text.startsWith('null', i)) return ((i += 4), null);
    const m = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400))!;
    i += m[0].length;
    return { num: m[0] };
  };
  return value();
}

/** Python's repr of a float. */
function pyFloat(x: number): string {
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : x < 0 ? '-Infinity' : 'NaN';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mant, expText] = x.toExponential().split('e') as [string, string];
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    const e = Math.abs(exp).toString().padStart(2, '0');
    return `${mant}e${exp < 0 ? '-' : '+'}${e}`;
  }
  const s = String(x);
  return s.includes('.') || s.includes('e') ? (s.includes('e') ? x.toFixed(Math.max(0, -exp + 16)) : s) : `${s}.0`;
}

function dumps(v: PyValue): string {
  if (v === null) return 'null';
  if (v === true) return 'true';
  if (v === false) return 'false';
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(dumps).join(', ')}]`;
  if ('num' in v) return /[.eE]/.test(v.num) ? pyFloat(Number(v.num)) : BigInt(v.num).toString();
  return `{${v.entries.map(([k, x]) => `${JSON.stringify(k)}: ${dumps(x)}`).join(', ')}}`;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string) => {
    const k = args.indexOf(name);
    if (k < 0) return undefined;
    const v = args[k + 1];
    args.splice(k, 2);
    return v;
  };
  const summarize = opt('--summarize');
  if (summarize) {
    const all: Status[] = [];
    for (const f of summarize.split(','))
      for (const line of readFileSync(f, 'utf8').split('\n')) if (line.trim()) all.push(JSON.parse(line) as Status);
    report(all, 0);
    return;
  }
  const limit = Number(opt('--limit') ?? Infinity);
  const filter = opt('--filter');
  // --resume a.jsonl,b.jsonl: leave out the files these outputs already hold (then --every samples the rest).
  const resume = opt('--resume');
  const every = Number(opt('--every') ?? 1);
  // --shard k/n: the files whose index in name order is k mod n (one process per core).
  const [shardK, shardN] = (opt('--shard') ?? '0/1').split('/').map(Number) as [number, number];
  // --shuffle: a fixed pseudo-random order (so a run cut short is a uniform sample, not the first names).
  const shuffle = args.includes('--shuffle');
  if (shuffle) args.splice(args.indexOf('--shuffle'), 1);
  const reverse = args.includes('--reverse');
  if (reverse) args.splice(args.indexOf('--reverse'), 1);
  const out = opt('--out');
  // --slow MS: print every mask slower than that (file, test, the text before it) to stderr.
  const slow = Number(opt('--slow') ?? Infinity);
  const tokDir = opt('--tokenizer') ?? new URL('../../assets/qwen2.5-tokenizer', import.meta.url).pathname;
  const folder = args[0];
  if (!folder || !existsSync(folder)) {
    console.error('usage: node dist/bench/maskbench.js <maskbench data folder> [--limit N] [--filter s] [--out file]');
    process.exit(2);
  }
  // A compile may take up to 10 s here (runner.py allows 900 s; the slowest schema that compiles
  // takes 1.8 s on the loaded machine); the server keeps its 1 s budget. At 60 s, one refused
  // schema (Github_hard o64819) merged branches for 35 s into a 2.3 GB heap, whose collection
  // then stalled a later file's masks by seconds.
  setCompileBudget({ maxMillis: 10_000 });
  const tok = await QwenTokenizer.fromDir(tokDir);
  const vocab = vocabularyFromTokenizer(tok, tok.vocabSize, [tok.eosTokenId ?? 151643]);
  // Built once per tokenizer, outside the timings.
  trieOf(vocab);
  slicesOf(vocab);
  let files = readdirSync(folder)
    .filter((f) => f.endsWith('.json'))
    .sort();
  if (filter) files = files.filter((f) => f.includes(filter));
  if (resume) {
    const done = new Set<string>();
    for (const f of resume.split(','))
      for (const line of readFileSync(f, 'utf8').split('\n'))
        if (line.trim()) done.add((JSON.parse(line) as { file: string }).file);
    files = files.filter((f) => !done.has(f));
  }
  files = files.filter((_, i) => i % every === 0);
  files = files.filter((_, i) => i % shardN === shardK);
  if (shuffle) {
    const key = (f: string) => {
      let h = 2166136261;
      for (let i = 0; i < f.length; i++) h = Math.imul(h ^ f.charCodeAt(i), 16777619);
      return h >>> 0;
    };
    files.sort((a, b) => key(a) - key(b));
  }
  if (reverse) files.reverse();
  files = files.slice(0, limit);
  if (out) writeFileSync(out, '');

  const statuses: Status[] = [];
  let masks = 0;
  let maskTimes = new Float64Array(1 << 16);
  const started = performance.now();
  for (const [n, file] of files.entries()) {
    const text = readFileSync(join(folder, file), 'utf8');
    const raw = JSON.parse(text) as { schema: unknown; tests?: { data: unknown; valid: boolean }[] };
    const py = parsePy(text) as { entries: [string, PyValue][] };
    const pyTests = (py.entries.find(([k]) => k === 'tests')?.[1] ?? []) as { entries: [string, PyValue][] }[];
    const status: Status = { file };
    statuses.push(status);
    try {
      const t0 = performance.now();
      let guide;
      try {
        guide = guideFor({ type: 'json', schema: raw.schema as Record<string, unknown> }, vocab);
      } catch (e) {
        if (!(e instanceof StructuredOutputError)) throw e;
        status.compileError = e.message;
        continue;
      }
      status.compileMs = Number((performance.now() - t0).toFixed(3));
      const firstMask = masks;
      const matcher = new Matcher(guide);
      for (const [i, test] of (raw.tests ?? []).entries()) {
        matcher.reset();
        const dataValue = pyTests[i]!.entries.find(([k]) => k === 'data')![1];
        const instance = dumps(dataValue);
        const tokens = tok.encode(instance, { addSpecialTokens: false });
        let accepted = true;
        for (const [k, t] of tokens.entries()) {
          const m0 = performance.now();
          const bits = matcher.allowedTokens();
          const ok = ((bits[t >>> 5]! >>> (t & 31)) & 1) === 1;
          if (ok) matcher.accept(t);
          const dt = performance.now() - m0;
          if (masks === maskTimes.length) {
            const grown = new Float64Array(masks * 2);
            grown.set(maskTimes);
            maskTimes = grown;
          }
          maskTimes[masks++] = dt;
          if (dt > slow)
            console.error(
              `slow mask ${dt.toFixed(1)} ms: ${file} test #${i} after ${JSON.stringify(tok.decode(tokens.slice(0, k)).slice(-60))}`,
            );
          if (!ok) {
            accepted = false;
            break;
          }
        }
        if (accepted && !test.valid) {
          status.validationError = `test #${i}: should reject but didn't`;
          status.instance = instance;
          break;
        }
        if (!accepted && test.valid) {
          status.validationError = `test #${i}: should accept but didn't`;
          status.instance = instance;
          break;
        }
      }
      status.maskMs = Array.from(maskTimes.subarray(firstMask, masks), (x) => Number(x.toFixed(3)));
    } catch (e) {
      status.exception = (e as Error).stack;
    } finally {
      if (out) appendFileSync(out, JSON.stringify(status) + '\n');
      if ((n + 1) % 500 === 0) {
        console.error(`${n + 1}/${files.length} files, ${((performance.now() - started) / 1000).toFixed(0)} s`);
        report(statuses, performance.now() - started);
      }
    }
  }
  report(statuses, performance.now() - started);
}

interface Status {
  file: string;
  compileMs?: number;
  compileError?: string;
  maskMs?: number[];
  validationError?: string;
  instance?: string;
  exception?: string;
}

/** The summary the README's MaskBench table needs, from per-file statuses (one run, or several merged). */
function report(statuses: Status[], elapsedMs: number): void {
  const total = statuses.length;
  let passing = 0;
  let compileErrors = 0;
  let validationErrors = 0;
  let invalidationErrors = 0;
  let exceptions = 0;
  let masks = 0;
  const reasons = new Map<string, number>();
  for (const st of statuses) {
    if (st.exception) exceptions++;
    else if (st.compileError !== undefined) {
      compileErrors++;
      const m = /keyword(?: combination)? "?([^"\s:]+)/.exec(st.compileError);
      const reason = m ? m[1]! : st.compileError.replace(/\d+/g, 'N').slice(0, 60);
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
    } else if (st.validationError) {
      if (/should reject/.test(st.validationError)) invalidationErrors++;
      else validationErrors++;
    } else passing++;
    masks += st.maskMs?.length ?? 0;
  }
  const sortedMasks = new Float64Array(masks);
  let at = 0;
  for (const st of statuses) for (const x of st.maskMs ?? []) sortedMasks[at++] = x;
  sortedMasks.sort();
  const sortedCompile = Float64Array.from(
    statuses.filter((st) => st.compileMs !== undefined).map((st) => st.compileMs!),
  ).sort();
  const pct = (x: number) => `${((100 * x) / total).toFixed(1)}%`;
  const ms = (x: number) => `${x.toFixed(3)} ms`;
  const took = elapsedMs > 0 ? `, ${(elapsedMs / 1000).toFixed(0)} s` : '';
  console.log(`MaskBench: ${total} schemas, ${masks} masks${took}`);
  console.log('| engine | passing | compile errors | validation errors | invalidation errors (unsound) | exceptions |');
  console.log('|---|---|---|---|---|---|');
  console.log(
    `| qwen-ts | ${passing} (${pct(passing)}) | ${compileErrors} | ${validationErrors} | ${invalidationErrors} | ${exceptions} |`,
  );
  console.log(
    `mask time: p50 ${ms(percentile(sortedMasks, 50))}, p99 ${ms(percentile(sortedMasks, 99))}, max ${ms(sortedMasks[sortedMasks.length - 1] ?? NaN)}`,
  );
  console.log(
    `compile time: p50 ${ms(percentile(sortedCompile, 50))}, p90 ${ms(percentile(sortedCompile, 90))}, p99 ${ms(percentile(sortedCompile, 99))}, max ${ms(sortedCompile[sortedCompile.length - 1] ?? NaN)}`,
  );
  console.log('compile errors by keyword:');
  for (const [k, v] of [...reasons].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`  ${k}: ${v}`);
}

await main();
