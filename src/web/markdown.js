// Markdown to DOM nodes, for model output. Model text is untrusted: it is only ever put into the page
// as text nodes (textContent), never parsed as HTML, so `<img src=x onerror=...>` shows as those
// characters. Links keep only http(s) targets. Covers what chat models write: fenced code blocks,
// headings, lists, quotes, paragraphs, inline code, bold, italic, links.

/** @param {Document} doc @param {string} text @returns {DocumentFragment} */
export function renderMarkdown(doc, text) {
  const out = doc.createDocumentFragment();
  const lines = text.split('\n');
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*(```+|~~~+)\s*([\w+-]*)/.exec(line);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++; // the closing fence (or the end of a text still streaming)
      out.append(codeBlock(doc, body.join('\n'), fence[2]));
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      const h = doc.createElement(`h${Math.min(6, heading[1].length + 2)}`);
      appendInline(doc, h, heading[2]);
      out.append(h);
      i++;
      continue;
    }
    if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const list = doc.createElement(ordered ? 'ol' : 'ul');
      while (i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) {
        const li = doc.createElement('li');
        appendInline(doc, li, lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ''));
        list.append(li);
        i++;
      }
      out.append(list);
      continue;
    }
    if (/^>\s?/.test(line)) {
      const quote = doc.createElement('blockquote');
      const body = [];
      while (i < lines.length && /^>\s?/.test(lines[i])) body.push(lines[i++].replace(/^>\s?/, ''));
      appendInline(doc, quote, body.join('\n'));
      out.append(quote);
      continue;
    }
    if (line.trim() === '') {
      i++;
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() !== '' && !startsBlock(lines[i])) para.push(lines[i++]);
    const p = doc.createElement('p');
    appendInline(doc, p, para.join('\n'));
    out.append(p);
  }
  return out;
}

function startsBlock(line) {
  return /^\s*(```|~~~)|^#{1,6}\s|^\s*([-*+]|\d+[.)])\s+|^>/.test(line);
}

function codeBlock(doc, code, lang) {
  const pre = doc.createElement('pre');
  const el = doc.createElement('code');
  if (lang) el.dataset.lang = lang;
  el.textContent = code;
  const copy = doc.createElement('button');
  copy.type = 'button';
  copy.className = 'copy';
  copy.textContent = 'Copy';
  copy.addEventListener('click', () => navigator.clipboard?.writeText(code));
  pre.append(copy, el);
  return pre;
}

// Inline spans, in order of precedence: `code`, [text](http...), **bold**, *italic* / _italic_.
const INLINE = /`([^`\n]+)`|\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)|\*\*([^*\n]+)\*\*|\*([^*\n]+)\*|\b_([^_\n]+)_\b/g;

/** @param {Document} doc @param {HTMLElement} parent @param {string} text */
function appendInline(doc, parent, text) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    appendText(doc, parent, text.slice(last, m.index));
    if (m[1] !== undefined) parent.append(element(doc, 'code', m[1]));
    else if (m[2] !== undefined) {
      const a = element(doc, 'a', m[2]);
      a.href = m[3];
      a.target = '_blank';
      a.rel = 'noopener noreferrer nofollow';
      parent.append(a);
    } else if (m[4] !== undefined) parent.append(element(doc, 'strong', m[4]));
    else parent.append(element(doc, 'em', m[5] ?? m[6]));
    last = m.index + m[0].length;
  }
  appendText(doc, parent, text.slice(last));
}

function appendText(doc, parent, text) {
  const parts = text.split('\n');
  parts.forEach((part, k) => {
    if (k > 0) parent.append(doc.createElement('br'));
    if (part) parent.append(doc.createTextNode(part));
  });
}

function element(doc, tag, text) {
  const el = doc.createElement(tag);
  el.textContent = text;
  return el;
}
