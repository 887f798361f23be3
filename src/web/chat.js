// The chat page of `qwen-ts serve`: conversations kept in localStorage, answers streamed from the
// server's own OpenAI-compatible API, rendered as Markdown through text nodes only (markdown.js).
import { renderMarkdown } from './markdown.js';

const STORE_KEY = 'qwen-ts.chat.v1';
const $ = (id) => document.getElementById(id);

const state = loadState();
let config = { model: '', chatTemplate: true, contextLength: 0, auth: false, defaults: {} };
let running = null; // the AbortController of the answer being written

function loadState() {
  try {
    const s = JSON.parse(localStorage.getItem(STORE_KEY) ?? 'null');
    if (s && Array.isArray(s.conversations)) return s;
  } catch {
    // a broken store starts afresh
  }
  return { conversations: [], current: null, settings: {}, apiKey: '' };
}

function save() {
  localStorage.setItem(STORE_KEY, JSON.stringify(state));
}

function current() {
  let c = state.conversations.find((x) => x.id === state.current);
  if (!c) {
    c = { id: crypto.randomUUID(), title: 'New chat', messages: [], created: Date.now() };
    state.conversations.unshift(c);
    state.current = c.id;
  }
  return c;
}

function settings() {
  const s = state.settings;
  return {
    system: s.system ?? '',
    // Unset: the model's generation_config.json (the server's defaults, as vLLM's).
    temperature: s.temperature,
    topP: s.topP,
    maxTokens: s.maxTokens, // unset: as many as fit in the context (the server's default)
    probs: s.probs ?? false,
    mode: s.mode ?? (config.chatTemplate ? 'chat' : 'completion'),
  };
}

// --- rendering ---

function renderConversations() {
  const list = $('conversations');
  list.replaceChildren();
  for (const c of state.conversations) {
    const li = document.createElement('li');
    li.className = c.id === state.current ? 'active' : '';
    const title = document.createElement('span');
    title.textContent = c.title;
    title.addEventListener('click', () => {
      if (running) return;
      state.current = c.id;
      save();
      renderAll();
    });
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'delete';
    del.title = 'Delete this conversation';
    del.textContent = '×';
    del.addEventListener('click', () => {
      if (running) return;
      state.conversations = state.conversations.filter((x) => x !== c);
      if (state.current === c.id) state.current = state.conversations[0]?.id ?? null;
      save();
      renderAll();
    });
    li.append(title, del);
    list.append(li);
  }
}

function renderMessages() {
  const box = $('messages');
  box.replaceChildren();
  const c = current();
  if (c.messages.length === 0) {
    const empty = document.createElement('div');
    empty.className = 'empty';
    empty.textContent = config.model ? `Ask ${config.model} something.` : 'Ask something.';
    box.append(empty);
  }
  for (const m of c.messages) box.append(messageView(m));
  box.scrollTop = box.scrollHeight;
}

/** One message: its body (Markdown, or the tokens with their probabilities) and, for answers, stats. */
function messageView(m) {
  const el = document.createElement('div');
  el.className = `message ${m.role}`;
  const body = document.createElement('div');
  body.className = 'body';
  el.append(body);
  fillBody(body, m);
  if (m.role === 'assistant') {
    const meta = document.createElement('div');
    meta.className = 'meta';
    el.append(meta);
    fillMeta(meta, m, body);
  }
  return el;
}

function fillBody(body, m) {
  body.replaceChildren();
  if (m.error) {
    body.classList.add('error');
    body.textContent = m.error;
    return;
  }
  if (m.role === 'assistant' && m.showTokens && m.tokens?.length) {
    body.classList.add('tokens');
    m.tokens.forEach((t, i) => {
      const span = document.createElement('span');
      span.className = 'token';
      span.textContent = t.text;
      span.dataset.i = String(i);
      span.style.backgroundColor = probColor(Math.exp(t.logprob));
      body.append(span);
    });
    return;
  }
  body.classList.remove('tokens');
  if (m.role === 'assistant') body.append(renderMarkdown(document, m.content));
  else body.textContent = m.content;
}

function fillMeta(meta, m, body) {
  meta.replaceChildren();
  const s = m.stats;
  const parts = [];
  if (s) {
    parts.push(`${s.completionTokens} tokens`);
    if (s.tokensPerSecond) parts.push(`${s.tokensPerSecond.toFixed(1)} tok/s`);
    if (s.ttftMs !== undefined) parts.push(`first token ${Math.round(s.ttftMs)} ms`);
    if (s.cachedTokens !== undefined) parts.push(`${s.cachedTokens} of ${s.promptTokens} prompt tokens cached`);
    if (s.finishReason) parts.push(s.finishReason === 'stopped' ? 'stopped' : `finish: ${s.finishReason}`);
  }
  const text = document.createElement('span');
  text.className = 'stats';
  text.textContent = parts.join(' · ');
  meta.append(text);
  if (m.tokens?.length) {
    const toggle = document.createElement('button');
    toggle.type = 'button';
    toggle.className = 'link';
    toggle.textContent = m.showTokens ? 'Show text' : 'Show token probabilities';
    toggle.addEventListener('click', () => {
      m.showTokens = !m.showTokens;
      save();
      fillBody(body, m);
      fillMeta(meta, m, body);
    });
    meta.append(toggle);
  }
}

function probColor(p) {
  // Red (unlikely) through yellow to green (certain), light enough for dark text.
  const hue = Math.round(120 * p);
  return `hsl(${hue} 70% 85%)`;
}

function renderSettings() {
  const s = settings();
  $('system').value = s.system;
  $('temperature').value = s.temperature === undefined ? '' : String(s.temperature);
  $('temperature').placeholder =
    `model default${config.defaults.temperature !== undefined ? ` (${config.defaults.temperature})` : ''}`;
  $('top-p').value = s.topP === undefined ? '' : String(s.topP);
  $('top-p').placeholder = `model default${config.defaults.topP !== undefined ? ` (${config.defaults.topP})` : ''}`;
  $('max-tokens').value = s.maxTokens === undefined ? '' : String(s.maxTokens);
  $('probs').checked = s.probs;
  $('mode').value = s.mode;
  $('api-key').value = state.apiKey ?? '';
}

function renderAll() {
  renderConversations();
  renderMessages();
  renderSettings();
}

function banner(text) {
  const b = $('banner');
  b.textContent = text ?? '';
  b.hidden = !text;
}

// --- talking to the server ---

/** X-Session-Id names the conversation, so a load balancer can keep it on the replica that caches it. */
function headers(conversation) {
  const h = { 'Content-Type': 'application/json', 'X-Session-Id': conversation.id };
  if (state.apiKey) h.Authorization = `Bearer ${state.apiKey}`;
  return h;
}

async function loadConfig() {
  try {
    const r = await fetch('/web/config.json');
    if (r.ok) config = { ...config, ...(await r.json()) };
  } catch {
    // the page still works with the defaults
  }
  $('model-info').textContent = config.model
    ? `${config.model}${config.contextLength ? ` · context ${config.contextLength}` : ''}`
    : '';
  if (!config.chatTemplate)
    banner(`${config.model || 'This model'} has no chat template: messages are continued as plain text.`);
  if (config.auth && !state.apiKey) banner('This server needs an API key: enter it under Settings.');
}

function requestBody(c, s) {
  const common = {
    model: config.model || undefined,
    stream: true,
    stream_options: { include_usage: true },
    temperature: s.temperature,
    top_p: s.topP,
    max_tokens: s.maxTokens,
  };
  const history = c.messages.filter((m) => !m.error && (m.role === 'user' || m.content));
  if (s.mode === 'chat') {
    const messages = history.map((m) => ({ role: m.role, content: m.content }));
    if (s.system.trim()) messages.unshift({ role: 'system', content: s.system });
    return {
      url: '/v1/chat/completions',
      body: { ...common, messages, ...(s.probs ? { logprobs: true, top_logprobs: 5 } : {}) },
    };
  }
  const prompt = history.map((m) => m.content).join('');
  return { url: '/v1/completions', body: { ...common, prompt, ...(s.probs ? { logprobs: 5 } : {}) } };
}

/** Yields each JSON payload of a Server-Sent Events response. */
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') return;
        yield JSON.parse(data);
      }
    }
  }
}

/** Token records { text, logprob, top: [{ text, logprob }] } from a chunk's logprobs, either API. */
function chunkTokens(choice) {
  const lp = choice.logprobs;
  if (!lp) return [];
  if (Array.isArray(lp.content))
    return lp.content.map((t) => ({
      text: t.token,
      logprob: t.logprob,
      top: (t.top_logprobs ?? []).map((x) => ({ text: x.token, logprob: x.logprob })),
    }));
  if (Array.isArray(lp.tokens))
    return lp.tokens.map((text, k) => ({
      text,
      logprob: lp.token_logprobs[k],
      top: Object.entries(lp.top_logprobs?.[k] ?? {}).map(([t, l]) => ({ text: t, logprob: l })),
    }));
  return [];
}

async function send(text) {
  const c = current();
  const s = settings();
  c.messages.push({ role: 'user', content: text });
  if (c.title === 'New chat') c.title = text.slice(0, 40) || 'New chat';
  const answer = { role: 'assistant', content: '', tokens: [], showTokens: false };
  const { url, body } = requestBody(c, s);
  c.messages.push(answer);
  save();
  renderConversations();
  renderMessages();
  const box = $('messages');
  const view = box.lastElementChild;
  const bodyEl = view.querySelector('.body');
  const metaEl = view.querySelector('.meta');
  setRunning(new AbortController());
  const t0 = performance.now();
  let tFirst;
  let usage;
  let finishReason;
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: headers(c),
      body: JSON.stringify(body),
      signal: running.signal,
    });
    if (!response.ok) {
      const err = await response.json().catch(() => null);
      const message = err?.error?.message ?? `HTTP ${response.status}`;
      if (response.status === 401) banner('The server needs an API key: enter it under Settings.');
      throw new Error(message);
    }
    for await (const chunk of events(response)) {
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      const delta = choice.delta?.content ?? choice.text ?? '';
      if (delta && tFirst === undefined) tFirst = performance.now();
      answer.content += delta;
      answer.tokens.push(...chunkTokens(choice));
      if (choice.finish_reason) finishReason = choice.finish_reason;
      bodyEl.replaceChildren(renderMarkdown(document, answer.content));
      box.scrollTop = box.scrollHeight;
    }
  } catch (e) {
    if (running?.signal.aborted) finishReason = 'stopped';
    else answer.error = `Error: ${e.message}`;
  }
  const tEnd = performance.now();
  const completionTokens = usage?.completion_tokens ?? answer.tokens.length;
  answer.stats = {
    completionTokens,
    promptTokens: usage?.prompt_tokens,
    cachedTokens: usage?.prompt_tokens_details?.cached_tokens,
    ttftMs: tFirst !== undefined ? tFirst - t0 : undefined,
    tokensPerSecond:
      tFirst !== undefined && completionTokens > 1 ? (completionTokens - 1) / ((tEnd - tFirst) / 1000) : undefined,
    finishReason,
  };
  if (!answer.tokens.length) delete answer.tokens;
  setRunning(null);
  save();
  fillBody(bodyEl, answer);
  fillMeta(metaEl, answer, bodyEl);
}

function setRunning(controller) {
  running = controller;
  $('stop').hidden = !controller;
  $('send').disabled = !!controller;
}

// --- events ---

function wire() {
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('input').value;
    if (!text.trim() || running) return;
    $('input').value = '';
    void send(text);
  });
  $('input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('stop').addEventListener('click', () => running?.abort());
  $('new-chat').addEventListener('click', () => {
    if (running) return;
    state.current = null;
    current();
    save();
    renderAll();
  });
  $('settings-toggle').addEventListener('click', () => ($('settings').hidden = !$('settings').hidden));
  $('settings-close').addEventListener('click', () => ($('settings').hidden = true));
  $('settings').addEventListener('submit', (e) => e.preventDefault());
  const bind = (id, key, read) =>
    $(id).addEventListener('change', () => {
      const v = read($(id));
      if (v === undefined) delete state.settings[key];
      else state.settings[key] = v;
      save();
    });
  const num = (el) => (el.value === '' || !Number.isFinite(Number(el.value)) ? undefined : Number(el.value));
  bind('system', 'system', (el) => el.value);
  bind('temperature', 'temperature', num);
  bind('top-p', 'topP', num);
  bind('max-tokens', 'maxTokens', num);
  bind('probs', 'probs', (el) => el.checked);
  bind('mode', 'mode', (el) => el.value);
  $('api-key').addEventListener('change', () => {
    state.apiKey = $('api-key').value.trim();
    save();
    banner('');
  });
  // Token probabilities: one tooltip, filled from the hovered token's record.
  const tip = $('tooltip');
  $('messages').addEventListener('mouseover', (e) => {
    const span = e.target.closest?.('.token');
    if (!span) return;
    const view = span.closest('.message');
    const index = [...$('messages').children].indexOf(view);
    const m = current().messages[index];
    const t = m?.tokens?.[Number(span.dataset.i)];
    if (!t) return;
    tip.replaceChildren();
    const head = document.createElement('div');
    head.className = 'head';
    head.textContent = `${JSON.stringify(t.text)}  p = ${(100 * Math.exp(t.logprob)).toFixed(1)}%`;
    tip.append(head);
    for (const alt of t.top) {
      const row = document.createElement('div');
      row.textContent = `${JSON.stringify(alt.text)}  ${(100 * Math.exp(alt.logprob)).toFixed(1)}%`;
      if (alt.text === t.text) row.className = 'chosen';
      tip.append(row);
    }
    const r = span.getBoundingClientRect();
    tip.style.left = `${Math.round(r.left + window.scrollX)}px`;
    tip.style.top = `${Math.round(r.bottom + window.scrollY + 4)}px`;
    tip.hidden = false;
  });
  $('messages').addEventListener('mouseout', (e) => {
    if (e.target.closest?.('.token')) tip.hidden = true;
  });
}

wire();
await loadConfig();
current();
renderAll();
document.body.dataset.ready = 'true';
