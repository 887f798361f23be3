// qwen-ts list: the models on this machine (the Hugging Face cache and Ollama's store), as `ollama list`.
import * as os from 'node:os';
import { formatBytes, hubCacheDir, listModels, ollamaModelDirs } from '../model/sources/index.js';
import { CliError, HELP_OPTION, parseCommandArgs } from './args.js';

export const LIST_USAGE = 'usage: qwen-ts list [--json]';

export const LIST_HELP = `${LIST_USAGE}

The models found in the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
~/.cache/huggingface/hub) and Ollama's store ($OLLAMA_MODELS, else ~/.ollama/models): the name to
give --model, the format, the size on disk and where it is.

      --json                 one JSON array instead of the table
  -h, --help                 this help
`;

function tilde(p: string): string {
  const home = os.homedir();
  return p.startsWith(`${home}/`) ? `~${p.slice(home.length)}` : p;
}

export function runList(argv: string[]): number {
  const { values, positionals } = parseCommandArgs(
    argv,
    { json: { type: 'boolean' }, ...HELP_OPTION },
    LIST_USAGE,
    false,
  );
  if (values.help) {
    process.stdout.write(LIST_HELP);
    return 0;
  }
  if (positionals.length > 0) throw new CliError('list takes no arguments', 2, LIST_USAGE);
  const models = listModels();
  if (values.json) {
    process.stdout.write(`${JSON.stringify(models, null, 2)}\n`);
    return 0;
  }
  if (models.length === 0) {
    process.stderr.write(
      `qwen-ts: no models in ${tilde(hubCacheDir())} or ${ollamaModelDirs().map(tilde).join(', ')}; fetch one with: qwen-ts pull Qwen/Qwen2.5-0.5B-Instruct\n`,
    );
    return 0;
  }
  const rows = [
    ['NAME', 'FORMAT', 'SIZE', 'WHERE'],
    ...models.map((m) => [m.name, m.format, formatBytes(m.bytes), tilde(m.where)]),
  ];
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c].length)));
  for (const r of rows)
    process.stdout.write(`${r.map((cell, c) => (c < 3 ? cell.padEnd(widths[c] + 2) : cell)).join('')}\n`);
  return 0;
}
