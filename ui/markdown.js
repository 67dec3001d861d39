// Markdown for the model's answers, built as DOM nodes whose text is set with text nodes only:
// nothing the model (or an OCR result) writes is ever parsed as HTML, so no tag or script in it
// can run. Covered: paragraphs, headings, lists, quotes, code blocks, tables, rules, and inline
// code, bold, italics and http(s) links.

const FENCE = /^\s*(```+|~~~+)\s*([\w+#.-]*)\s*$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/;
const INLINE =
  /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|(?<!\w)__(?=\S)([\s\S]*?\S)__(?!\w)|\*(?=[^\s*])([^*]*?[^\s*])\*|(?<![\w])_(?=[^\s_])([^_]*?[^\s_])_(?![\w])|\[([^\]\n]+)\]\((https?:\/\/[^\s()]+)\)|(https?:\/\/[^\s<>()"']*[^\s<>()"'.,;:!?])/g;

function el(name, ...children) {
  const node = document.createElement(name);
  node.append(...children);
  return node;
}

/** `text` as a fragment of block elements. */
export function renderMarkdown(text) {
  const root = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  const startsBlock = (line) =>
    FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") {
      i += 1;
      continue;
    }
    const fence = line.match(FENCE);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1;
      const code = el("code", body.join("\n"));
      if (fence[2]) code.dataset.lang = fence[2];
      root.append(el("pre", code));
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      const level = Math.min(heading[1].length + 2, 6);
      root.append(inline(el(`h${level}`), heading[2]));
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      root.append(el("hr"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(lines[i++].replace(QUOTE, ""));
      root.append(el("blockquote", renderMarkdown(quoted.join("\n"))));
      continue;
    }
    if (ITEM.test(line)) {
      i = list(lines, i, root);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])) {
      i = table(lines, i, root);
      continue;
    }
    const paragraph = el("p");
    let first = true;
    while (i < lines.length && lines[i].trim() !== "" && (first || !startsBlock(lines[i]))) {
      if (!first) paragraph.append(el("br"));
      inline(paragraph, lines[i].trim());
      first = false;
      i += 1;
    }
    root.append(paragraph);
  }
  return root;
}

/** A list starting at `lines[start]`; returns the index after it. */
function list(lines, start, root) {
  const ordered = /\d/.test(lines[start].match(ITEM)[2]);
  const node = el(ordered ? "ol" : "ul");
  if (ordered) {
    const first = Number.parseInt(lines[start].match(ITEM)[2], 10);
    if (first !== 1) node.start = first;
  }
  let i = start;
  let item = null;
  while (i < lines.length) {
    const match = lines[i].match(ITEM);
    if (match && /\d/.test(match[2]) === ordered) {
      item = inline(el("li"), match[3]);
      node.append(item);
    } else if (item && /^\s+\S/.test(lines[i])) {
      item.append(el("br"));
      inline(item, lines[i].trim());
    } else {
      break;
    }
    i += 1;
  }
  root.append(node);
  return i;
}

/** A pipe table starting at `lines[start]` (header, rule, rows); returns the index after it. */
function table(lines, start, root) {
  const cells = (line) =>
    line
      .trim()
      .replace(/^\|/, "")
      .replace(/\|$/, "")
      .split("|")
      .map((cell) => cell.trim());
  const head = el("tr", ...cells(lines[start]).map((cell) => inline(el("th"), cell)));
  const body = el("tbody");
  let i = start + 2;
  while (i < lines.length && lines[i].includes("|") && lines[i].trim() !== "") {
    body.append(el("tr", ...cells(lines[i]).map((cell) => inline(el("td"), cell))));
    i += 1;
  }
  root.append(el("div", el("table", el("thead", head), body)));
  root.lastChild.className = "table-scroll";
  return i;
}

/** Appends `text` to `parent` with its inline marks; returns `parent`. */
export function inline(parent, text) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    if (m[1]) {
      parent.append(el("code", m[2].trim() || m[2]));
    } else if (m[3] !== undefined || m[4] !== undefined) {
      parent.append(inline(el("strong"), m[3] ?? m[4]));
    } else if (m[5] !== undefined || m[6] !== undefined) {
      parent.append(inline(el("em"), m[5] ?? m[6]));
    } else if (m[7] !== undefined) {
      parent.append(link(m[7], m[8]));
    } else if (m[9] !== undefined) {
      parent.append(link(m[9], m[9]));
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) parent.append(text.slice(last));
  return parent;
}

/** A link to an http(s) address only (the patterns admit no other scheme). */
function link(label, href) {
  const a = el("a", label);
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  return a;
}
