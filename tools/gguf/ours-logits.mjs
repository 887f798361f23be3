// Our logits of a GGUF for the tokens of an oracle JSON, and their deviation from it.
// usage: node tools/gguf/ours-logits.mjs FILE.gguf ORACLE.json   (after npx tsc -p tsconfig.json)
// prints: file, max |ours - exact| over every position and logit, argmax agreement
import { readFileSync } from 'node:fs';
import { loadModel } from '../../dist/src/model/load.js';

const [file, oracleFile] = process.argv.slice(2);
const o = JSON.parse(readFileSync(oracleFile, 'utf8'));
const m = await loadModel(file, { threads: 1 });
const logits = await m.forward(o.tokens, { allLogits: true });
const V = m.config.vocabSize;
let worst = 0;
let same = 0;
for (let p = 0; p < o.tokens.length; p++) {
  let a = 0;
  let b = 0;
  for (let i = 0; i < V; i++) {
    worst = Math.max(worst, Math.abs(logits[p * V + i] - o.logits[p][i]));
    if (logits[p * V + i] > logits[p * V + a]) a = i;
    if (o.logits[p][i] > o.logits[p][b]) b = i;
  }
  if (a === b) same++;
}
console.log(`${file.split('/').pop()}\tours-vs-exact ${worst.toExponential(2)}\targmax ${same}/${o.tokens.length}`);
await m.close();
