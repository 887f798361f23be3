// `qwen-ts embed` and `qwen-ts rerank`: LLM.embed and LLM.score from the command line, one JSON
// line per text (or per document, best first) on stdout.
import { CliError, HELP_OPTION, MODEL_HELP, MODEL_OPTIONS, modelArgsFrom, parseCommandArgs } from './args.js';
import { loadLLM } from './common.js';

export const EMBED_USAGE =
  'usage: qwen-ts embed --model NAME [--dimensions N] [--prompt-name NAME | --prompt TEXT] [--no-normalize] "text" ...';
export const RERANK_USAGE = 'usage: qwen-ts rerank --model NAME --query TEXT [--instruction TEXT] "document" ...';

export const EMBED_HELP = `${EMBED_USAGE}

Print one line of JSON per text: {"index", "text", "tokens", "embedding"}. Without text arguments,
each line of stdin is a text. The model's pooling and normalisation come from its
sentence-transformers files (else the last token, L2-normalised).

Options:
      --dimensions N         keep the first N values (Matryoshka), then normalise
      --prompt-name NAME     a prompt of config_sentence_transformers.json (query, document)
      --prompt TEXT          text put before each text
      --no-normalize         the pooled hidden state as it is
  -h, --help                 this help

${MODEL_HELP}

Example:
  qwen-ts embed --model Qwen/Qwen3-Embedding-0.6B --prompt-name query "What is the capital of China?"
`;

export const RERANK_HELP = `${RERANK_USAGE}

Score each document against the query with a yes/no reranker (Qwen3-Reranker's template) and
print one line of JSON per document, best first: {"index", "score", "document"}. Without document
arguments, each line of stdin is a document.

Options:
      --query TEXT           the query (required)
      --instruction TEXT     the <Instruct> line (default: "Given a web search query, retrieve relevant
                             passages that answer the query")
  -h, --help                 this help

${MODEL_HELP}

Example:
  qwen-ts rerank --model Qwen/Qwen3-Reranker-0.6B --query "capital of China?" "Beijing is the capital." "Bananas."
`;

async function textsFrom(positionals: string[], usage: string, what: string): Promise<string[]> {
  if (positionals.length > 0) return positionals;
  if (process.stdin.isTTY) throw new CliError(`give at least one ${what}, or lines on stdin`, 2, usage);
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .split(/\r?\n/)
    .filter((line) => line !== '');
}

export async function runEmbed(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    {
      ...HELP_OPTION,
      dimensions: { type: 'string' },
      'prompt-name': { type: 'string' },
      prompt: { type: 'string' },
      'no-normalize': { type: 'boolean' },
      ...MODEL_OPTIONS,
    },
    EMBED_USAGE,
    true,
  );
  if (values.help) {
    process.stdout.write(EMBED_HELP);
    return 0;
  }
  const modelArgs = modelArgsFrom(values);
  modelArgs.load.maxSequences = 8;
  let dimensions: number | undefined;
  if (typeof values.dimensions === 'string') {
    dimensions = Number(values.dimensions);
    if (!Number.isInteger(dimensions) || dimensions < 1)
      throw new CliError(`--dimensions must be a positive integer, got ${JSON.stringify(values.dimensions)}`);
  }
  const texts = await textsFrom(positionals, EMBED_USAGE, 'text');
  const llm = await loadLLM(modelArgs);
  try {
    const out = await llm.embed(texts, {
      dimensions,
      promptName: values['prompt-name'] as string | undefined,
      prompt: values.prompt as string | undefined,
      normalize: values['no-normalize'] === true ? false : undefined,
    });
    for (const [index, o] of out.entries())
      process.stdout.write(
        JSON.stringify({ index, text: texts[index], tokens: o.promptTokenIds.length, embedding: o.outputs.embedding }) +
          '\n',
      );
    return 0;
  } finally {
    await llm.close();
  }
}

export async function runRerank(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    argv,
    { ...HELP_OPTION, query: { type: 'string' }, instruction: { type: 'string' }, ...MODEL_OPTIONS },
    RERANK_USAGE,
    true,
  );
  if (values.help) {
    process.stdout.write(RERANK_HELP);
    return 0;
  }
  const query = values.query;
  if (typeof query !== 'string' || query === '') throw new CliError('--query TEXT is required', 2, RERANK_USAGE);
  const modelArgs = modelArgsFrom(values);
  modelArgs.load.maxSequences = 8;
  const docs = await textsFrom(positionals, RERANK_USAGE, 'document');
  const llm = await loadLLM(modelArgs);
  try {
    const out = await llm.score(query, docs, { instruction: values.instruction as string | undefined });
    const ranked = out.map((o, index) => ({ index, score: o.outputs.score, document: docs[index] }));
    ranked.sort((a, b) => b.score - a.score || a.index - b.index);
    for (const r of ranked) process.stdout.write(JSON.stringify(r) + '\n');
    return 0;
  } finally {
    await llm.close();
  }
}
