// LLM: the vLLM offline API in TypeScript. Load a model directory once, then generate, chat or
// stream with SamplingParams; unset sampling parameters default to generation_config.json's.
//
// The model runs in the engine thread (engine-thread.ts: scheduler, forward pass, sampling); this
// object lives on the caller's thread, tokenizes and applies the chat template, and exchanges
// plain-data messages with the engine, so the caller's event loop never waits for a forward pass.
import type { GenerationConfig, ModelConfig } from '../model/config.js';
import { validateSamplingParams, type SamplingParams } from '../sampler/index.js';
import { joinPath, pathKind } from '../platform/files.js';
import {
  resolveModel,
  startTaskThreads,
  stderrIsTerminal,
  writeStderr,
  type TaskThreads,
} from '../platform/runtime.js';
import { ProgressLine, type LoadProgress } from '../platform/progress.js';
import { QwenTokenizer, type ChatMessage, type ChatTemplateOptions, type TokenizerFiles } from '../tokenizer/index.js';
import { EngineClient } from './client.js';
import { resolveSpeculativeConfig } from './speculation/ngram.js';
import { parseToolCalls, toolChoiceConstraint, type ToolChoice } from './tool-calls.js';
import type { EngineOptions, EngineState, ModelInfo } from './messages.js';
import type { CompletionOutput, RequestMetrics } from './request.js';
import { readTokenizerFiles } from './load-tokenizer.js';
import { DEFAULT_POOLING, loadPoolingConfig, type PoolingConfig, type PoolingRequest } from '../model/pooling.js';
import { embed, type EmbedInput, type EmbeddingOutput, type EmbedOptions } from './embed.js';
import { score, type ScoreOptions, type ScoreOutput } from './rerank.js';
import { MODEL_TASKS, resolveTask, TaskError, type ModelTask } from './task.js';
import type { FinishedOutput } from './messages.js';
import type { PromptLogprob } from './prompt-logprobs.js';
import { perplexity, type PerplexityOptions, type PerplexityResult } from './perplexity.js';

export type { EngineOptions, EngineState, ModelInfo } from './messages.js';

export type PromptInput = string | { prompt: string } | { promptTokenIds: number[] };

export interface RequestOutput {
  prompt: string;
  promptTokenIds: number[];
  outputs: CompletionOutput[];
  metrics: RequestMetrics;
  /** With promptLogprobs: each prompt token's log-probability and top tokens (null for the first), as vLLM's prompt_logprobs. */
  promptLogprobs?: (PromptLogprob | null)[];
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

function isDirectory(p: string): boolean {
  return pathKind(p) === 'directory';
}

export interface LLMLoadOptions extends EngineOptions {
  /** A progress line on stderr while loading; default: stderr is a terminal and no onProgress is given. */
  progressBar?: boolean;
  /** What the model is for: 'generate', 'embed' or 'score' (a yes/no reranker). Default: read from the folder (task.ts). */
  task?: ModelTask;
}

export interface GenerateOptions {
  /** Called after each finished prompt. */
  onProgress?: (p: { done: number; total: number; generatedTokens: number; tokensPerSec: number }) => void;
  /** Progress bar on stderr; default: when stderr is a TTY and there is more than one prompt. */
  progressBar?: boolean;
  signal?: AbortSignal;
}

export interface StreamOptions {
  signal?: AbortSignal;
  /** Called once with the finished output (finish reason, token ids, metrics). */
  onFinish?: (output: CompletionOutput, metrics: RequestMetrics) => void;
}

export interface ChatOptions {
  chatTemplate?: ChatTemplateOptions;
  /** With chatTemplate.tools: "required" or a named function force tool calls (constrained decoding); "none" leaves the tools out of the prompt. Default "auto". */
  toolChoice?: ToolChoice;
}

/**
 * Texts of at least this many characters are tokenized in a separate thread by LLM.tokenize
 * (about 2 ms per KB here: a 900 KB prompt would hold the event loop for seconds).
 */
export const LARGE_TEXT_CHARS = 32 * 1024;

/** Default max_tokens when neither the request nor generation_config.json sets one. */
export const DEFAULT_MAX_TOKENS = 256;

export class LLM {
  /** The model's configuration and the engine's sizes (the weights live in the engine thread). */
  readonly model: ModelInfo;

  private tokenizerThread: TaskThreads | null = null;
  /** What the model is for (embed, score or generate), and why. */
  readonly task: { task: ModelTask; reason: string };
  /** How embed() pools: the folder's sentence-transformers files, else last token + L2 normalisation. */
  readonly pooling: PoolingConfig;

  private constructor(
    private engine: EngineClient,
    readonly tokenizer: QwenTokenizer,
    private dir: string,
    name: string,
    taskOption: ModelTask | undefined,
  ) {
    this.model = engine.info;
    this.task = resolveTask(taskOption, name, dir, this.model.config, this.model.weights.headless === true);
    this.pooling = isDirectory(dir) ? loadPoolingConfig(dir) : DEFAULT_POOLING;
  }

  /**
   * Load a model: a folder, or a name (Org/Name from the Hugging Face cache or the hub, an Ollama
   * name:tag; see resolveModel), then the tokenizer here and the model in a new engine thread. Options are
   * loadModel's plus `prefixCaching` (default true), `speculativeConfig` (default none), `onProgress` (the load's stages and bytes) and
   * `progressBar` (a progress line on stderr; default: when stderr is a terminal and there is no
   * onProgress).
   */
  static async load(model: string, options: LLMLoadOptions = {}): Promise<LLM> {
    const { progressBar, source, task, ...engineOptions } = options; // source holds callbacks: it stays on this thread
    // A bad speculative config is an error before the model loads.
    if (engineOptions.speculativeConfig != null)
      engineOptions.speculativeConfig = resolveSpeculativeConfig(engineOptions.speculativeConfig);
    if (task !== undefined && !MODEL_TASKS.includes(task))
      throw new TaskError(
        `LLM.load: option task must be one of ${MODEL_TASKS.join(', ')}, got ${JSON.stringify(task)}`,
      );
    const onProgress = engineOptions.onProgress;
    if (onProgress !== undefined && typeof onProgress !== 'function')
      throw new TypeError(`LLM.load: option onProgress must be a function, got ${typeof onProgress}`);
    const dir = await resolveModel(model, source, onProgress);
    const t0 = performance.now();
    const line = (progressBar ?? (onProgress === undefined && stderrIsTerminal())) ? new ProgressLine('') : null;
    const report = (p: LoadProgress) => {
      const progress = { ...p, seconds: (performance.now() - t0) / 1000 };
      onProgress?.(progress);
      line?.update(progress.doneBytes, progress.totalBytes, `loading ${progress.stage}`, p.stage === 'tokenizer');
    };
    // tokenizer.json is read and parsed once, here; the engine thread gets what decoding needs.
    report({ stage: 'tokenizer', doneBytes: 0, totalBytes: 0, seconds: 0 });
    let files: TokenizerFiles;
    try {
      files = readTokenizerFiles(dir);
    } catch (e) {
      // Not a folder (a missing path, a single file): loadModel's own check says what to give.
      if (!isDirectory(dir)) await EngineClient.start(dir, engineOptions).then((c) => c.close());
      throw e;
    }
    // Sent before this thread builds its own, so the engine builds its (smaller) one meanwhile.
    const engine = EngineClient.start(dir, engineOptions, {
      tokenizerFiles: Promise.resolve(QwenTokenizer.decodingFiles(files)),
      onProgress: onProgress || line ? report : undefined,
    });
    let tokenizer: QwenTokenizer;
    try {
      tokenizer = new QwenTokenizer(files.tokenizerJson, files.tokenizerConfig, files.source);
      const client = await engine;
      // A GGUF file holds its config: it is the file to name.
      tokenizer.checkModelVocab(client.info.config.vocabSize, isDirectory(dir) ? joinPath(dir, 'config.json') : dir);
      const llm = new LLM(client, tokenizer, dir, model, task);
      line?.end();
      return llm;
    } catch (e) {
      line?.end();
      await engine.then((c) => c.close()).catch(() => {});
      throw e;
    }
  }

  get config(): ModelConfig {
    return this.model.config;
  }

  get generationConfig(): GenerationConfig {
    return this.model.generationConfig;
  }

  /** The sampling parameters a request runs with: the request's, then generation_config.json's. */
  resolveParams(params: SamplingParams = {}): SamplingParams {
    const request = validateSamplingParams(params); // camelCase names only (snake_case aliases mapped)
    const g = this.model.generationConfig;
    const fromModel: SamplingParams = {};
    if (g.temperature !== undefined) fromModel.temperature = g.doSample === false ? 0 : g.temperature;
    if (g.topP !== undefined) fromModel.topP = g.topP;
    if (g.topK !== undefined) fromModel.topK = g.topK === 0 ? -1 : g.topK;
    if (g.minP !== undefined) fromModel.minP = g.minP;
    if (g.repetitionPenalty !== undefined) fromModel.repetitionPenalty = g.repetitionPenalty;
    if (g.maxNewTokens !== undefined) fromModel.maxTokens = g.maxNewTokens;
    const defined = Object.fromEntries(Object.entries(request).filter(([, v]) => v !== undefined));
    return { maxTokens: DEFAULT_MAX_TOKENS, ...fromModel, ...defined };
  }

  encodePrompt(input: PromptInput): { prompt: string; promptTokenIds: number[] } {
    if (typeof input === 'string') return { prompt: input, promptTokenIds: this.tokenizer.encode(input) };
    if (input && typeof input === 'object' && 'promptTokenIds' in input && Array.isArray(input.promptTokenIds)) {
      const text = 'prompt' in input && typeof input.prompt === 'string' ? input.prompt : undefined;
      return { prompt: text ?? this.tokenizer.decode(input.promptTokenIds), promptTokenIds: input.promptTokenIds };
    }
    if (input && typeof input === 'object' && 'prompt' in input && typeof input.prompt === 'string') {
      return { prompt: input.prompt, promptTokenIds: this.tokenizer.encode(input.prompt) };
    }
    throw new TypeError('a prompt must be a string, { prompt: string } or { promptTokenIds: number[] }');
  }

  /**
   * Token ids of a text, like tokenizer.encode, without holding this thread for a large text:
   * from LARGE_TEXT_CHARS characters on, the work runs in a tokenizer thread (started on first
   * use, idle threads do not keep the process alive).
   */
  async tokenize(text: string, opts: { addSpecialTokens?: boolean } = {}): Promise<number[]> {
    if (typeof text !== 'string' || text.length < LARGE_TEXT_CHARS) return this.tokenizer.encode(text, opts);
    return this.tokenizeInThread(text, opts.addSpecialTokens ?? true);
  }

  /**
   * Token ids of each text, as tokenize; texts of LARGE_TEXT_CHARS characters in all go to the
   * tokenizer thread together (64 prompts of 16 KB would hold this thread as one of 1 MB does).
   */
  async tokenizeAll(texts: string[], opts: { addSpecialTokens?: boolean } = {}): Promise<number[][]> {
    let chars = 0;
    for (const t of texts) chars += typeof t === 'string' ? t.length : 0;
    if (chars < LARGE_TEXT_CHARS) return texts.map((t) => this.tokenizer.encode(t, opts));
    for (const t of texts)
      if (typeof t !== 'string') throw new TypeError('QwenTokenizer.encode: text must be a string');
    return Promise.all(texts.map((t) => this.tokenizeInThread(t, opts.addSpecialTokens ?? true)));
  }

  private async tokenizeInThread(text: string, addSpecialTokens: boolean): Promise<number[]> {
    this.tokenizerThread ??= startTaskThreads(new URL('./tokenize-task.js', import.meta.url), 1, {
      minThreads: 0,
      idleTimeoutMs: 30_000,
    });
    // (No such thread in the browser: the text is tokenized here.)
    if (this.tokenizerThread === null) return this.tokenizer.encode(text, { addSpecialTokens });
    const ids = (await this.tokenizerThread.run({ dir: this.dir, text, addSpecialTokens })) as Int32Array;
    return Array.from(ids);
  }

  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    return this.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true, ...opts });
  }

  /** The chat template applied, then encoded without adding BOS: the template writes it (as vLLM and HF). */
  encodeChat(messages: ChatMessage[], opts: ChatTemplateOptions = {}): { prompt: string; promptTokenIds: number[] } {
    const prompt = this.applyChatTemplate(messages, opts);
    return { prompt, promptTokenIds: this.tokenizer.encode(prompt, { addSpecialTokens: false }) };
  }

  /**
   * Start one sequence. Resolves with the finished output; `onDelta` receives the text as it
   * is produced. The lower-level entry point under generate/chat/stream and the HTTP server.
   */
  submit(
    promptTokenIds: number[],
    params: SamplingParams,
    hooks: { onDelta?: (delta: string) => void; signal?: AbortSignal; index?: number } = {},
  ): Promise<{ output: CompletionOutput; metrics: RequestMetrics }> {
    let p: SamplingParams;
    try {
      p = this.resolveParams(params);
    } catch (e) {
      return Promise.reject(e);
    }
    if (promptTokenIds.length === 0)
      return Promise.reject(new RangeError('the prompt is empty: at least one token is needed'));
    if (this.task.task === 'embed')
      return Promise.reject(
        new TaskError(
          `this model embeds (${this.task.reason}): it cannot generate text; use embed(), or load a causal language model`,
        ),
      );
    // Whether the prompt fits the context and the KV cache: checked once, by the engine's scheduler.
    return this.engine.submit(promptTokenIds, p, hooks).then(({ output, metrics }) => ({
      output: { index: hooks.index ?? 0, ...output },
      metrics,
    }));
  }

  /** encodePrompt of each input, the texts tokenized as tokenizeAll does (large ones off this thread). */
  private async encodePrompts(inputs: PromptInput[]): Promise<{ prompt: string; promptTokenIds: number[] }[]> {
    const textOf = (input: PromptInput): string | null =>
      typeof input === 'string'
        ? input
        : input && typeof input === 'object' && !('promptTokenIds' in input) && typeof input.prompt === 'string'
          ? input.prompt
          : null;
    const texts = inputs.map(textOf).filter((t): t is string => t !== null);
    const ids = await this.tokenizeAll(texts);
    let next = 0;
    return inputs.map((input) => {
      const text = textOf(input);
      return text === null ? this.encodePrompt(input) : { prompt: text, promptTokenIds: ids[next++] };
    });
  }

  /** encodeChat, tokenized off this thread when the rendered conversation is large. */
  private async encodeChatAsync(
    messages: ChatMessage[],
    opts: ChatTemplateOptions = {},
  ): Promise<{ prompt: string; promptTokenIds: number[] }> {
    const prompt = this.applyChatTemplate(messages, opts);
    return { prompt, promptTokenIds: await this.tokenize(prompt, { addSpecialTokens: false }) };
  }

  /** Complete each prompt; all prompts run together (batched decode). One result per prompt. */
  async generate(
    prompts: PromptInput | PromptInput[],
    params: SamplingParams = {},
    opts: GenerateOptions = {},
  ): Promise<RequestOutput[]> {
    const list = Array.isArray(prompts) ? prompts : [prompts];
    this.resolveParams(params); // reject bad parameters before anything starts
    const encoded = await this.encodePrompts(list);
    const total = encoded.length;
    const bar = opts.progressBar ?? (stderrIsTerminal() && total > 1);
    const t0 = performance.now();
    const tokens0 = this.engine.state.generatedTokens;
    let done = 0;
    const progress = () => {
      const generatedTokens = this.engine.state.generatedTokens - tokens0;
      const tokensPerSec = generatedTokens / ((performance.now() - t0) / 1000);
      opts.onProgress?.({ done, total, generatedTokens, tokensPerSec });
      if (bar) {
        const width = 30;
        const filled = Math.round((width * done) / total);
        writeStderr(
          `\rProcessed prompts [${'='.repeat(filled)}${' '.repeat(width - filled)}] ${done}/${total}, ${tokensPerSec.toFixed(1)} tok/s${done === total ? '\n' : ''}`,
        );
      }
    };
    const n = params.n ?? 1;
    const results = await Promise.all(
      encoded.map(async (e) => {
        // As in vLLM, every prompt gets its own generator seeded with params.seed; its n completions seed + i.
        const runs = await Promise.all(
          Array.from({ length: n }, (_, i) =>
            this.submit(e.promptTokenIds, params.seed === undefined ? params : { ...params, seed: params.seed + i }, {
              signal: opts.signal,
              index: i,
            }),
          ),
        );
        done++;
        progress();
        const outputs = runs.map((r) => r.output);
        const result: RequestOutput = {
          prompt: e.prompt,
          promptTokenIds: e.promptTokenIds,
          outputs,
          metrics: runs[0].metrics,
        };
        // The prompt is the same for all n: its log-probabilities belong to the request (as vLLM).
        if (outputs[0].promptLogprobs) result.promptLogprobs = outputs[0].promptLogprobs;
        for (const o of outputs) delete o.promptLogprobs;
        return result;
      }),
    );
    return results;
  }

  /** Apply the chat template to each conversation (one, or a list of them) and generate. */
  async chat(
    messages: ChatMessage[] | ChatMessage[][],
    params: SamplingParams = {},
    opts: GenerateOptions & ChatOptions = {},
  ): Promise<RequestOutput[]> {
    const conversations = Array.isArray(messages[0]) ? (messages as ChatMessage[][]) : [messages as ChatMessage[]];
    const tools = opts.chatTemplate?.tools ?? [];
    const template = opts.toolChoice === 'none' ? { ...opts.chatTemplate, tools: undefined } : opts.chatTemplate;
    const texts = conversations.map((c) => this.applyChatTemplate(c, template));
    const ids = await this.tokenizeAll(texts, { addSpecialTokens: false });
    const prompts = texts.map((prompt, i) => ({ prompt, promptTokenIds: ids[i] }));
    const forced = tools.length > 0 ? toolChoiceConstraint(tools, opts.toolChoice) : undefined;
    const results = await this.generate(prompts, forced ? { ...params, structuredOutput: forced } : params, opts);
    if (tools.length > 0 && opts.toolChoice !== 'none') {
      for (const r of results) {
        for (const o of r.outputs) {
          const calls = parseToolCalls(o.text).toolCalls;
          if (calls.length > 0) o.toolCalls = calls;
        }
      }
    }
    return results;
  }

  /**
   * Stream the text of one completion as it is generated. A prompt string or input is completed
   * as is; an array of chat messages gets the chat template. Stop by leaving the loop (break),
   * which frees the sequence's cache at once, or with opts.signal: the loop then throws the
   * signal's reason (a DOMException named AbortError by default), as fetch does, after onFinish
   * has seen the output so far (finish reason "abort").
   */
  async *stream(
    input: PromptInput | ChatMessage[],
    params: SamplingParams = {},
    opts: StreamOptions = {},
  ): AsyncGenerator<string, void, undefined> {
    if ((params.n ?? 1) !== 1) throw new RangeError('stream() makes one completion: n must be 1');
    const { promptTokenIds } = Array.isArray(input)
      ? await this.encodeChatAsync(input)
      : (await this.encodePrompts([input]))[0];
    const queue: string[] = [];
    let wake: (() => void) | null = null;
    let finished = false;
    let failure: unknown = null;
    const inner = new AbortController();
    const onOuterAbort = () => inner.abort();
    opts.signal?.addEventListener('abort', onOuterAbort, { once: true });
    if (opts.signal?.aborted) inner.abort();
    let abortedOutput = false;
    const done = this.submit(promptTokenIds, params, {
      signal: inner.signal,
      onDelta: (d) => {
        queue.push(d);
        wake?.();
      },
    }).then(
      (r) => {
        finished = true;
        abortedOutput = r.output.finishReason === 'abort';
        try {
          opts.onFinish?.(r.output, r.metrics);
        } catch (e) {
          failure = e; // the caller's callback: the stream ends with its error, the engine goes on
        }
        wake?.();
      },
      (e) => {
        finished = true;
        failure = e;
        wake?.();
      },
    );
    try {
      for (;;) {
        if (queue.length > 0) {
          yield queue.shift()!;
          continue;
        }
        if (finished) break;
        await new Promise<void>((r) => (wake = r));
        wake = null;
      }
      await done;
      if (failure) throw failure;
      // As fetch: a stream ended by the caller's signal throws its reason (an AbortError by default).
      if (abortedOutput && opts.signal?.aborted) throw abortReason(opts.signal);
    } finally {
      inner.abort(); // the consumer left early: free the sequence
      opts.signal?.removeEventListener('abort', onOuterAbort);
    }
  }

  /**
   * One vector per text (or token id list), in vLLM's shape: the final-norm hidden states pooled
   * (this.pooling), cut to `dimensions`, L2-normalised. Texts run batched, at most maxSequences at a
   * time, the rest queued; no KV cache is kept. Refused for a reranker (task 'score').
   */
  async embed(texts: EmbedInput | EmbedInput[], opts: EmbedOptions = {}): Promise<EmbeddingOutput[]> {
    if (this.task.task === 'score')
      throw new TaskError(
        `this model is a reranker (task "score": ${this.task.reason}): use score(query, documents), or load it with task: "embed"`,
      );
    const list = Array.isArray(texts) ? texts : [texts];
    return embed(
      {
        pooling: this.pooling,
        hiddenSize: this.config.hiddenSize,
        vocabSize: this.config.vocabSize,
        tokenizeAll: (t) => this.tokenizeAll(t),
        decode: (ids) => this.tokenizer.decode(ids),
        pool: (ids, p, signal) => this.pool(ids, p, signal),
      },
      list,
      opts,
    );
  }

  /**
   * Relevance of each document to the query, P(yes) in [0, 1], with a yes/no reranker
   * (Qwen3-Reranker's template; rerank.ts). Needs task 'score' (a folder named *Reranker*, or the option).
   */
  async score(query: string, documents: string | string[], opts: ScoreOptions = {}): Promise<ScoreOutput[]> {
    if (this.task.task !== 'score')
      throw new TaskError(
        `score() needs a reranker (task "score"); this model's task is "${this.task.task}" (${this.task.reason}). Load a Qwen3-Reranker, or pass task: "score"`,
      );
    return score(
      {
        encode: (text) => this.tokenizer.encode(text, { addSpecialTokens: false }),
        tokenToId: (token) => this.tokenizer.tokenToId(token),
        pool: (ids, p, signal) => this.pool(ids, p, signal),
      },
      query,
      documents,
      opts,
    );
  }

  /** A pooling request: the prompt read, its pooled hidden state or chosen logits returned, its cache freed. */
  private async pool(promptTokenIds: number[], pooling: PoolingRequest, signal?: AbortSignal): Promise<FinishedOutput> {
    const { output } = await this.engine.submit(promptTokenIds, { maxTokens: 1, temperature: 0 }, { signal, pooling });
    return output;
  }

  /** Perplexity of a text as llama-perplexity computes it (windows of opts.ctx tokens, default 512): see perplexity.ts. */
  perplexity(text: string | number[], opts: PerplexityOptions = {}): Promise<PerplexityResult> {
    return perplexity(this, text, opts);
  }

  /** Requests waiting for a slot and sequences generating now (as of the engine's last step). */
  get load(): { waiting: number; running: number } {
    return { waiting: this.engine.state.waiting, running: this.engine.state.running };
  }

  /** The engine's state as of its last step (load, KV cache use, prefix cache counters). */
  get state(): EngineState {
    return this.engine.state;
  }

  /** The engine's state now: load, KV cache use, prefix cache counters. */
  stats(): Promise<EngineState> {
    return this.engine.fresh();
  }

  /** Stop the engine thread and its kernel threads; requests still running are rejected. */
  async close(): Promise<void> {
    await Promise.all([this.engine.close(), this.tokenizerThread?.destroy()]);
  }
}
