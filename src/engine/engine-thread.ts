// The engine thread: loads the model (this thread is thread 0 of its kernel pool) and a tokenizer
// (stream decoding, stop strings, and whatever the sampler needs), runs the scheduler, and talks
// to the main thread only by messages. The main thread stays free for HTTP, streams and parsing.
import { loadModel } from '../model/load.js';
import type { LoadProgress } from '../platform/progress.js';
import { enginePort, envVar } from '../platform/runtime.js';
import type { Qwen2Model } from '../model/qwen2.js';
import { Sampler } from '../sampler/index.js';
import { vocabularyFromTokenizer, type TokenVocabulary } from '../sampler/structured/index.js';
import { QwenTokenizer, StreamDecoder } from '../tokenizer/index.js';
import {
  reviveError,
  serializeError,
  type EngineInit,
  type EngineState,
  type FromEngine,
  type ModelInfo,
  type ToEngine,
} from './messages.js';
import { metricsOf, Sequence } from './request.js';
import { NgramProposer, resolveSpeculativeConfig, type ResolvedSpeculativeConfig } from './speculation/ngram.js';
import { ForcedProposer } from './speculation/forced.js';
import type { Proposer } from './speculation/gate.js';
import { Scheduler } from './scheduler.js';
import { loadTokenizer } from './load-tokenizer.js';

async function main(): Promise<void> {
  const port = await enginePort();
  const post = (m: FromEngine) => port.post(m);
  // The caller's thread reads and parses the tokenizer files once and sends what decoding needs.
  const tokenizerFiles = new Promise<string>((resolve) =>
    port.once((m: ToEngine) => resolve(m.type === 'tokenizer' ? m.files : '')),
  );
  const init = port.init as EngineInit;
  let model: Qwen2Model;
  let tokenizer: QwenTokenizer;
  let speculative: ResolvedSpeculativeConfig | null;
  try {
    const s = init.options.speculativeConfig;
    speculative = s === undefined || s === null ? null : resolveSpeculativeConfig(s);
    // The engine's options, not the model's.
    const {
      prefixCaching: _prefixCaching,
      speculativeConfig: _speculativeConfig,
      jumpForward: _jumpForward,
      ...loadOptions
    } = init.options;
    const onProgress = init.progress ? (progress: LoadProgress) => post({ type: 'progress', progress }) : undefined;
    model = await loadModel(init.dir, { ...loadOptions, onProgress });
    const files = await tokenizerFiles;
    tokenizer = files ? QwenTokenizer.forDecoding(files) : await loadTokenizer(init.dir);
  } catch (e) {
    post({ type: 'load-error', error: serializeError(e) });
    return;
  }
  const prefixCaching = init.options.prefixCaching ?? true;
  const jumpForward = init.options.jumpForward ?? true;
  const stepDelayMs = Number(envVar('QWEN_TS_DEBUG_STEP_DELAY_MS') ?? 0) || 0;
  // Testing: propose whatever the measured step costs (so that every path of verification runs).
  const proposeAlways = envVar('QWEN_TS_DEBUG_SPEC_PROPOSE_ALWAYS') === '1';
  const scheduler = new Scheduler(model, { prefixCaching, stepDelayMs, proposeAlways });
  const live = new Map<number, Sequence>();
  const cache = model.kvCache;
  const state = (): EngineState => ({
    waiting: scheduler.queueLength,
    running: scheduler.runningCount,
    freeTokens: cache.freeTokens,
    capacityTokens: cache.capacityTokens,
    cachedIdleTokens: cache.cachedIdleTokens,
    ...scheduler.counters,
  });
  scheduler.onStep = () => post({ type: 'state', state: state() });

  // Token byte strings for constrained decoding, bad_words and min_tokens: built on first use.
  let vocabulary: TokenVocabulary | null = null;
  const tokenVocabulary = (): TokenVocabulary => {
    const eos = model.generationConfig.eosTokenIds;
    const eosIds = eos.length > 0 ? eos : tokenizer.eosTokenId !== null ? [tokenizer.eosTokenId] : [];
    return (vocabulary ??= vocabularyFromTokenizer(tokenizer, model.config.vocabSize, eosIds));
  };

  let poolingSampler: Sampler | null = null;
  const submit = (m: Extract<ToEngine, { type: 'submit' }>): void => {
    const p = m.params;
    const stops = p.stop === undefined ? [] : typeof p.stop === 'string' ? [p.stop] : p.stop;
    const arrival = m.arrivalEpochMs - performance.timeOrigin;
    // A pooling request samples nothing: one idle sampler serves them all (a sampler holds vocab-sized buffers).
    const sampler = m.pooling
      ? (poolingSampler ??= new Sampler({ temperature: 0 }, model.config.vocabSize))
      : new Sampler(p, model.config.vocabSize, {
          vocabulary:
            p.structuredOutput || p.badWords?.length || (p.minTokens ?? 0) > 0 ? tokenVocabulary() : undefined,
        });
    // Jump-forward first: where the constraint decides the text, looking it up in the context is moot.
    const proposers: Proposer[] = [];
    if (!m.pooling && jumpForward && sampler.constrained) proposers.push(new ForcedProposer(sampler));
    if (!m.pooling && speculative) proposers.push(new NgramProposer(speculative));
    const seq = new Sequence({
      id: m.id,
      promptIds: m.promptIds,
      sampler,
      decoder: new StreamDecoder(tokenizer, { skipSpecialTokens: true, prompt: m.promptIds }),
      maxTokens: p.maxTokens!,
      stop: stops,
      stopTokenIds: new Set(p.stopTokenIds ?? []),
      eosIds: new Set(p.ignoreEos ? [] : model.generationConfig.eosTokenIds),
      wantLogprobs: p.logprobs !== undefined,
      proposers,
      promptLogprobs: p.promptLogprobs,
      onDelta: m.streaming ? (text) => post({ type: 'delta', id: m.id, text }) : undefined,
      resolve: (s) => {
        live.delete(m.id);
        const output = { text: s.text, tokenIds: s.outputIds, finishReason: s.finishReason! } as Extract<
          FromEngine,
          { type: 'done' }
        >['output'];
        if (s.stopReason !== undefined) output.stopReason = s.stopReason;
        if (s.wantLogprobs) output.logprobs = s.logprobs;
        if (s.pooled) output.pooled = s.pooled;
        if (s.promptLogprobs >= 0) output.promptLogprobs = s.promptLogprobsOut;
        post({ type: 'done', id: m.id, output, metrics: metricsOf(s), state: state() });
      },
      reject: (e) => {
        live.delete(m.id);
        post({ type: 'failed', id: m.id, error: serializeError(e), state: state() });
      },
      arrival: Math.min(arrival, performance.now()),
      pooling: m.pooling,
    });
    live.set(m.id, seq);
    scheduler.submit(seq);
  };

  port.on((m: ToEngine) => {
    switch (m.type) {
      case 'submit':
        try {
          submit(m);
        } catch (e) {
          live.delete(m.id);
          post({ type: 'failed', id: m.id, error: serializeError(e), state: state() });
        }
        return;
      case 'abort': {
        const seq = live.get(m.id);
        if (seq) scheduler.abort(seq, m.error && reviveError(m.error));
        return;
      }
      case 'state':
        post({ type: 'state', state: state() });
        return;
      case 'tokenizer':
        return;
      case 'close':
        for (const seq of live.values()) scheduler.abort(seq, new Error('the LLM was closed'));
        void model.close().finally(() => {
          post({ type: 'closed' });
          port.close();
        });
        return;
    }
  });

  const info: ModelInfo = {
    config: model.config,
    generationConfig: model.generationConfig,
    kvCache: {
      maxSequences: cache.maxSequences,
      contextLength: cache.contextLength,
      capacityTokens: cache.capacityTokens,
      blockSize: model.dims.blockSize,
    },
    weights: { format: model.weights.format, description: model.weights.description, headless: model.weights.headless },
    threads: model.threads,
    maxBatchTokens: model.dims.maxRows,
    prefixCaching,
    speculativeConfig: speculative,
    jumpForward,
  };
  post({ type: 'ready', info, state: state() });
}

void main();
