// Screenshots: attaching one (button, paste or drop), reading it with POST /ocr, and the table
// of funds found, whose codes and shares can be corrected with PATCH /ocr/{id}.

import { ApiFailure, call } from "./api.js";
import { el } from "./dom.js";

/** The largest inline image "Ask about it" sends as it is; a larger one is re-encoded. */
const MAX_INLINE_CHARS = 700_000;

/** The screenshot waiting to be read or asked about. */
export class Attachment {
  /** `parts`: the bar, preview, name and file input; `onChange(file|null)`. */
  constructor(parts, onChange) {
    this.parts = parts;
    this.onChange = onChange;
    this.file = null;
    this.previewUrl = null;
    parts.input.addEventListener("change", () => {
      if (parts.input.files?.[0]) this.set(parts.input.files[0]);
      parts.input.value = "";
    });
  }

  /** Takes the first image of a paste or a drop; true if there was one. */
  takeFrom(dataTransfer) {
    const file = [...(dataTransfer?.files ?? [])].find((f) => f.type.startsWith("image/"));
    if (!file) return false;
    this.set(file);
    return true;
  }

  set(file) {
    this.clear();
    this.file = file;
    this.previewUrl = URL.createObjectURL(file);
    this.parts.preview.src = this.previewUrl;
    this.parts.name.textContent = `${file.name || "pasted image"} · ${Math.round(file.size / 1024)} KiB`;
    this.parts.bar.hidden = false;
    this.onChange(file);
  }

  /** Forgets the file; its preview URL stays valid for the turns that show it. */
  clear() {
    this.file = null;
    this.previewUrl = null;
    this.parts.bar.hidden = true;
    this.parts.preview.removeAttribute("src");
    this.onChange(null);
  }

  /** The image as a data URL small enough to send inside a question. */
  async inline() {
    const url = await readAsDataUrl(this.file);
    if (url.length <= MAX_INLINE_CHARS) return url;
    return reencode(this.previewUrl);
  }
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** A large image as a JPEG, scaled down until it fits. */
async function reencode(src) {
  const image = new Image();
  image.src = src;
  await image.decode();
  let scale = 1;
  for (;;) {
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(image.naturalWidth * scale);
    canvas.height = Math.round(image.naturalHeight * scale);
    canvas.getContext("2d").drawImage(image, 0, 0, canvas.width, canvas.height);
    const url = canvas.toDataURL("image/jpeg", 0.92);
    if (url.length <= MAX_INLINE_CHARS || scale < 0.3) return url;
    scale *= 0.8;
  }
}

/** Reads `file` with POST /ocr; resolves with the result (`{id, data, elapsed_ms}`). */
export async function readScreenshot(file) {
  const form = new FormData();
  form.append("image", file, file.name || "screenshot.png");
  const response = await call("/ocr", { method: "POST", form });
  return response.json();
}

/** A turn showing a screenshot being read, then its funds (or why it could not be read). */
export function ocrTurn(previewUrl, name) {
  const image = el("img", "thumbnail");
  image.src = previewUrl;
  image.alt = `The screenshot ${name}`;
  const status = el("p", "tool running", "reading the screenshot…");
  const results = el("div", "tool-results");
  const node = el("li", "turn ocr", el("div", "who", "Screenshot"), image, status, results);
  return {
    node,
    show(result) {
      status.classList.remove("running");
      const funds = result.data?.funds ?? [];
      status.textContent = `read in ${result.elapsed_ms} ms: ${funds.length} fund${funds.length === 1 ? "" : "s"} found`;
      results.append(fundsTable(result.id, funds));
      const text = el("details", "ocr-text", el("summary", null, "Text read"), el("pre", null, result.data?.text ?? ""));
      results.append(text);
    },
    fail(failure) {
      status.classList.remove("running");
      status.classList.add("failed");
      status.textContent = `could not read the screenshot: ${failure.message}`;
      node.classList.add("failed");
    },
  };
}

/** Why a fund's share is empty (the `warnings` of POST /ocr), in words. */
const SHARE_WARNINGS = {
  only_available_share: "only 可用份额 shown",
  no_share_label: "no share label on the page",
  share_not_found: "not found",
  share_unreadable: "unclear: please check",
};

/**
 * The funds of OCR result `id` as a table whose codes and shares can be corrected: "Save"
 * sends every row with PATCH /ocr/{id} (`update_funds`; the first row is also the result's own
 * `fund_code` and `hold_share`).
 */
export function fundsTable(id, funds) {
  const body = el("tbody");
  const fields = funds.map((fund) => {
    const code = input(fund.fund_code ?? "", "Fund code", "\\d{6}", "numeric");
    const share = input(fund.hold_share ?? "", "Held shares", "[0-9.]*", "decimal");
    // A share not reported says why, in the empty field, for the user to fill in.
    const why = (fund.warnings ?? []).map((w) => SHARE_WARNINGS[w] ?? w).join("; ");
    if (fund.hold_share == null && why) share.placeholder = share.title = why;
    const row = el("tr", null, el("td", null, code), el("td", null, share), el("td", null, fund.name ?? ""));
    row.dataset.fundCode = fund.fund_code ?? "";
    body.append(row);
    return { code, share };
  });
  if (funds.length === 0) {
    body.append(el("tr", null, el("td", "muted", "No fund code was found on this screenshot.")));
    body.lastChild.firstChild.colSpan = 3;
  }
  const head = el("tr", null, el("th", null, "Fund code"), el("th", null, "Held shares"), el("th", null, "Name"));
  const table = el("table", "funds", el("caption", null, `OCR result ${id}`), el("thead", null, head), body);
  table.dataset.ocrId = id;
  const box = el("div", "funds-box", el("div", "table-scroll", table));
  if (funds.length > 0) {
    const save = el("button", null, "Save corrections");
    save.type = "button";
    const note = el("span", "save-status");
    note.setAttribute("role", "status");
    save.addEventListener("click", () => saveCorrection(id, fields, save, note));
    for (const { code, share } of fields) {
      for (const field of [code, share]) {
        field.addEventListener("keydown", (event) => {
          if (event.key === "Enter") save.click();
        });
      }
    }
    box.append(el("div", "save-row", save, note));
  }
  return box;
}

function input(value, label, pattern, mode) {
  const field = el("input");
  field.value = value;
  field.setAttribute("aria-label", label);
  field.pattern = pattern;
  field.inputMode = mode;
  field.size = 12;
  return field;
}

/** Saves every row; retries while the result is still on its way to the database. */
async function saveCorrection(id, fields, button, note) {
  const body = {
    update_funds: fields.map(({ code, share }) => ({
      fund_code: code.value.trim(),
      hold_share: share.value.trim() || null,
    })),
  };
  button.disabled = true;
  note.className = "save-status";
  note.textContent = "saving…";
  try {
    for (let attempt = 0; ; attempt += 1) {
      try {
        const response = await call(`/ocr/${encodeURIComponent(id)}`, { method: "PATCH", json: body });
        const saved = await response.json();
        const count = saved.update_funds?.length ?? 0;
        note.textContent = `saved ${count} fund${count === 1 ? "" : "s"}`;
        note.classList.add("ok");
        return;
      } catch (err) {
        if (err instanceof ApiFailure && err.status === 409 && attempt < 10) {
          await new Promise((resolve) => setTimeout(resolve, (err.retryAfter ?? 1) * 1000));
          continue;
        }
        throw err;
      }
    }
  } catch (err) {
    note.textContent = err.message;
    note.classList.add("error-text");
  } finally {
    button.disabled = false;
  }
}
