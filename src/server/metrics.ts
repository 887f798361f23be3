// Prometheus metrics in the text exposition format (version 0.0.4), no client library.

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

function labelText(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

const fmt = (x: number): string => (Number.isFinite(x) ? String(x) : x > 0 ? '+Inf' : x < 0 ? '-Inf' : 'NaN');

class Histogram {
  private counts: number[];
  private sum = 0;
  private count = 0;
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: number[],
  ) {
    this.counts = new Array(buckets.length).fill(0);
  }
  observe(x: number): void {
    if (!Number.isFinite(x)) return;
    this.sum += x;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (x <= this.buckets[i]) this.counts[i]++;
  }
  render(): string[] {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket{le="${fmt(b)}"} ${this.counts[i]}`));
    lines.push(
      `${this.name}_bucket{le="+Inf"} ${this.count}`,
      `${this.name}_sum ${fmt(this.sum)}`,
      `${this.name}_count ${this.count}`,
    );
    return lines;
  }
}

export interface GaugeSource {
  /**
   * Sequences generating in the engine and waiting in it for a KV cache slot; KV cache tokens free
   * and in all; prompt tokens admitted and how many of them came from the prefix cache.
   */
  engine(): {
    running: number;
    waiting: number;
    freeTokens?: number;
    capacityTokens?: number;
    promptTokens?: number;
    cachedPromptTokens?: number;
    /** Speculative decoding: verification steps with a proposal, tokens proposed, tokens accepted. */
    specDrafts?: number;
    specDraftTokens?: number;
    specAcceptedTokens?: number;
  };
  /** Requests admitted by the server, and waiting in the server's queue. */
  server(): { running: number; queued: number };
}

const PREFIX = 'qwen_ts';
const WINDOW_MS = 10_000;

export class Metrics {
  private requests = new Map<string, number>(); // `${endpoint}\u0000${status}` -> count
  private promptTokens = 0;
  private generationTokens = 0;
  private ttft = new Histogram(
    `${PREFIX}_time_to_first_token_seconds`,
    'Seconds from request arrival to the first generated token.',
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  );
  private e2e = new Histogram(
    `${PREFIX}_e2e_request_latency_seconds`,
    'Seconds from request arrival to the end of the response (generation requests).',
    [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300],
  );
  private queueTime = new Histogram(
    `${PREFIX}_request_queue_time_seconds`,
    'Seconds a generation request waited for admission and a KV cache slot.',
    [0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60],
  );
  private lastDecodeTps = 0;
  private finished: { at: number; tokens: number }[] = [];
  private readonly started = Date.now();

  constructor(private gauges: GaugeSource) {}

  countRequest(endpoint: string, status: number): void {
    const k = `${endpoint}\u0000${status}`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
  }

  /** One finished generation request. */
  observeGeneration(r: {
    promptTokens: number;
    completionTokens: number;
    ttft?: number;
    e2e: number;
    queue?: number;
    decodeTokensPerSec?: number;
  }): void {
    this.promptTokens += r.promptTokens;
    this.generationTokens += r.completionTokens;
    if (r.ttft !== undefined) this.ttft.observe(r.ttft);
    if (r.queue !== undefined) this.queueTime.observe(r.queue);
    this.e2e.observe(r.e2e);
    if (r.decodeTokensPerSec !== undefined && r.decodeTokensPerSec > 0) this.lastDecodeTps = r.decodeTokensPerSec;
    const now = Date.now();
    this.finished.push({ at: now, tokens: r.completionTokens });
    this.prune(now);
  }

  private prune(now: number): void {
    while (this.finished.length > 0 && this.finished[0].at < now - WINDOW_MS) this.finished.shift();
  }

  render(): string {
    const now = Date.now();
    this.prune(now);
    const lines: string[] = [];
    const counter = (name: string, help: string, value: number) =>
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${fmt(value)}`);
    const gauge = (name: string, help: string, value: number) =>
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${fmt(value)}`);

    lines.push(
      `# HELP ${PREFIX}_requests_total HTTP requests by endpoint and status code.`,
      `# TYPE ${PREFIX}_requests_total counter`,
    );
    for (const [k, v] of [...this.requests].sort()) {
      const [endpoint, status] = k.split('\u0000');
      lines.push(`${PREFIX}_requests_total${labelText({ endpoint, status })} ${v}`);
    }
    counter(`${PREFIX}_prompt_tokens_total`, 'Prompt tokens of finished generation requests.', this.promptTokens);
    counter(
      `${PREFIX}_generation_tokens_total`,
      'Generated tokens of finished generation requests.',
      this.generationTokens,
    );
    lines.push(...this.ttft.render(), ...this.e2e.render(), ...this.queueTime.render());
    gauge(
      `${PREFIX}_decode_tokens_per_second`,
      'Decode speed of the last finished sequence (tokens/s after its first token).',
      this.lastDecodeTps,
    );
    const span = Math.min(WINDOW_MS, now - this.started) / 1000;
    const recent = this.finished.reduce((s, f) => s + f.tokens, 0);
    gauge(
      `${PREFIX}_generation_throughput_tokens_per_second`,
      `Generated tokens of requests finished in the last ${WINDOW_MS / 1000} s, per second.`,
      span > 0 ? recent / span : 0,
    );
    const e = this.gauges.engine();
    const s = this.gauges.server();
    gauge(
      `${PREFIX}_num_requests_running`,
      'Sequences generating in the engine (each holds a KV cache slot).',
      e.running,
    );
    gauge(
      `${PREFIX}_num_requests_waiting`,
      'Sequences waiting in the engine for a KV cache slot, plus requests in the server queue.',
      e.waiting + s.queued,
    );
    if (e.capacityTokens !== undefined && e.freeTokens !== undefined)
      gauge(
        `${PREFIX}_kv_cache_usage_ratio`,
        'Share of the KV cache held by running sequences (blocks kept only for prefix reuse count as free).',
        e.capacityTokens > 0 ? 1 - e.freeTokens / e.capacityTokens : 0,
      );
    if (e.promptTokens !== undefined && e.cachedPromptTokens !== undefined) {
      counter(`${PREFIX}_prefix_cache_queries_total`, 'Prompt tokens looked up in the prefix cache.', e.promptTokens);
      counter(
        `${PREFIX}_prefix_cache_hits_total`,
        'Prompt tokens found in the prefix cache (their prefill was skipped).',
        e.cachedPromptTokens,
      );
    }
    if (e.specDrafts !== undefined && e.specDraftTokens !== undefined && e.specAcceptedTokens !== undefined) {
      // vLLM's spec_decode counters; the mean acceptance length counts the token every step yields.
      counter(`${PREFIX}_spec_decode_num_drafts_total`, 'Verification steps with proposed tokens.', e.specDrafts);
      counter(`${PREFIX}_spec_decode_num_draft_tokens_total`, 'Proposed tokens verified.', e.specDraftTokens);
      counter(
        `${PREFIX}_spec_decode_num_accepted_tokens_total`,
        'Proposed tokens the model accepted.',
        e.specAcceptedTokens,
      );
      gauge(
        `${PREFIX}_spec_decode_mean_acceptance_length`,
        'Tokens per verification step: 1 + accepted / drafts (1 with no drafts yet).',
        e.specDrafts > 0 ? 1 + e.specAcceptedTokens / e.specDrafts : 1,
      );
    }
    gauge(`${PREFIX}_server_requests_in_flight`, 'Generation requests admitted by the server.', s.running);
    gauge(`${PREFIX}_server_requests_queued`, 'Generation requests waiting in the server queue.', s.queued);
    return lines.join('\n') + '\n';
  }
}
