// qwen-ts pull NAME: fetch a model from the hub into the Hugging Face cache without running it
// (the files missing there only; refs/<revision> updated to the hub's current commit).
import { ModelSourceError, formatBytes, parseHubName, resolveModel } from '../model/sources/index.js';
import { CliError, HELP_OPTION, parseCommandArgs } from './args.js';
import { note } from './common.js';

export const PULL_USAGE = 'usage: qwen-ts pull NAME [--revision REV]';

export const PULL_HELP = `${PULL_USAGE}

Download a model from the Hugging Face hub into the Hugging Face cache ($HF_HUB_CACHE, else
$HF_HOME/hub, else ~/.cache/huggingface/hub), shared with Python's huggingface_hub: only the files
the engine reads (config, generation config, tokenizer, the safetensors weights), each with a
progress bar, resumed after a cut, LFS files checked against their SHA-256. Afterwards
--model NAME runs it offline.

  NAME                       Org/Name, e.g. Qwen/Qwen2.5-0.5B-Instruct; Org/Name-GGUF:Q4_K_M for
                             the one GGUF file of that quantization (default Q4_K_M)
      --revision REV         branch, tag or commit (default main)
  -h, --help                 this help

Environment: HF_TOKEN (gated and private models), HF_ENDPOINT (a mirror), HF_HUB_OFFLINE=1
(no network: pull refuses). Ollama names (name:tag) are fetched by \`ollama pull\`.
`;

export async function runPull(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    { revision: { type: 'string' }, ...HELP_OPTION },
    PULL_USAGE,
    true,
  );
  if (values.help) {
    process.stdout.write(PULL_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new CliError('pull takes one model name', 2, PULL_USAGE);
  const name = positionals[0];
  if (!parseHubName(name))
    throw new CliError(
      /^[\w.-]+(:[\w.-]+)?$/.test(name)
        ? `${name} is not a hub name (Org/Name); for an Ollama model run \`ollama pull ${name}\``
        : `${name} is not a hub name (Org/Name, e.g. Qwen/Qwen2.5-0.5B-Instruct)`,
      2,
      PULL_USAGE,
    );
  if (['1', 'on', 'yes', 'true'].includes((process.env.HF_HUB_OFFLINE ?? '').toLowerCase()))
    throw new CliError(
      `HF_HUB_OFFLINE=${process.env.HF_HUB_OFFLINE} forbids the network that pull needs; unset it to pull ${name}`,
    );
  const revision = typeof values.revision === 'string' ? values.revision : undefined;
  const t0 = performance.now();
  let bytes = 0;
  try {
    const found = await resolveModel(name, {
      revision,
      refresh: true,
      progressBar: true,
      onProgress: (p) => {
        if (p.done) bytes += p.bytes;
      },
    });
    const secs = (performance.now() - t0) / 1000;
    note(
      bytes > 0
        ? `pulled ${name} (${formatBytes(bytes)} in ${secs.toFixed(1)} s) into ${found.path}`
        : `${name} is up to date in ${found.path}`,
    );
    process.stdout.write(`${found.path}\n`);
    return 0;
  } catch (e) {
    if (e instanceof ModelSourceError) throw new CliError(e.message, e.userError ? 2 : 1);
    throw e;
  }
}
