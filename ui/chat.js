// The conversation: its history as sent in `messages`, and one turn on the page per message.
// An answer streams in from POST /answer; its events set the turn's queue line, tool line,
// text, timings, or failure.

import { ApiFailure, call } from "./api.js";
import { el } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { fundsTable } from "./ocr.js";
import { readEvents } from "./sse.js";

/** The words for a queue position (1: the next to be served). */
export function queueText(position) {
  const ahead = Math.max(0, position - 1);
  return ahead === 0
    ? "waiting for a free slot: next in line"
    : `waiting for a free slot: ${ahead} ahead`;
}

/** The user's turn: their text, and the screenshot they sent with it. */
export function userTurn(text, imageUrl) {
  const turn = el("li", "turn user", el("div", "who", "You"));
  if (imageUrl) {
    const image = el("img", "thumbnail");
    image.src = imageUrl;
    image.alt = "The screenshot sent with this question";
    turn.append(image);
  }
  if (text) turn.append(el("div", "body plain", text));
  return turn;
}

/** One answer as it streams in. */
class AnswerTurn {
  constructor() {
    this.text = "";
    this.queue = el("p", "queue");
    this.tool = el("p", "tool");
    this.body = el("div", "body markdown");
    this.results = el("div", "tool-results");
    this.failure = el("div", "failure");
    this.meta = el("p", "meta");
    this.copy = el("button", "quiet", "Copy");
    this.copy.type = "button";
    this.copy.addEventListener("click", () => this.copyText());
    this.queue.hidden = this.tool.hidden = this.failure.hidden = this.copy.hidden = true;
    this.node = el(
      "li",
      "turn assistant streaming",
      el("div", "who", "Model"),
      this.queue,
      this.tool,
      this.body,
      this.results,
      this.failure,
      this.meta,
      el("div", "turn-actions", this.copy),
    );
    this.node.setAttribute("aria-busy", "true");
    this.pending = false;
  }

  /** Follows the events to the end: `{kind: "done"}`, or `{kind: "failed", code, message}`. */
  async follow(events, hooks) {
    for await (const { event, data } of events) {
      let value;
      try {
        value = JSON.parse(data);
      } catch {
        continue;
      }
      switch (event) {
        case "meta":
          this.node.dataset.requestId = value.request_id ?? "";
          hooks.onModel?.(value.model);
          break;
        case "queued":
          this.queue.hidden = false;
          this.queue.textContent = queueText(value.position);
          break;
        case "delta":
          this.queue.hidden = true;
          this.text += value.content ?? "";
          this.schedule();
          break;
        case "tool_call":
          this.queue.hidden = true;
          this.tool.hidden = false;
          this.tool.classList.add("running");
          this.tool.textContent =
            value.name === "ocr_image" ? "reading the screenshot…" : `running the tool ${value.name}…`;
          break;
        case "tool_result":
          this.tool.classList.remove("running");
          this.showToolResult(value);
          break;
        case "done":
          this.render();
          this.showDone(value);
          return { kind: "done" };
        case "error":
          this.render();
          return { kind: "failed", code: value.code, message: value.message };
        default:
          break;
      }
    }
    this.render();
    return { kind: "failed", code: "stream_cut", message: "The answer stopped before its end: the connection was closed." };
  }

  showToolResult(value) {
    if (value.ok) {
      const funds = value.funds ?? [];
      this.tool.textContent = `read the screenshot: ${funds.length} fund${funds.length === 1 ? "" : "s"} found`;
      if (value.ocr_id) this.results.append(fundsTable(value.ocr_id, funds));
    } else {
      this.tool.classList.add("failed");
      this.tool.textContent = `could not read the screenshot: ${value.error?.code} (${value.error?.message})`;
    }
  }

  /** Re-renders the text at the next frame, not once per delta. */
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  render() {
    this.body.replaceChildren(renderMarkdown(this.text));
    this.copy.hidden = this.text === "";
  }

  showDone(done) {
    const t = done.timings ?? {};
    const parts = [`queue ${t.queue_ms ?? 0} ms`];
    if (t.ttft_ms != null) parts.push(`first token ${t.ttft_ms} ms`);
    parts.push(`total ${t.total_ms ?? 0} ms`);
    if (done.usage) {
      parts.push(`${done.usage.prompt_tokens} + ${done.usage.completion_tokens} = ${done.usage.total_tokens} tokens`);
    }
    this.meta.textContent = parts.join(" · ");
  }

  /** Ends the turn: `kind` done, failed (with a retry button), or stopped. */
  finish(kind, failure, retry) {
    this.node.classList.remove("streaming");
    this.node.removeAttribute("aria-busy");
    this.queue.hidden = true;
    this.tool.classList.remove("running");
    if (kind === "failed") {
      this.node.classList.add("failed");
      const button = el("button", null, "Retry");
      button.type = "button";
      button.className = "retry";
      button.addEventListener("click", retry);
      this.failure.replaceChildren(
        el("strong", "code", failure.code),
        el("span", "message", ` ${failure.message}`),
        el("div", null, button),
      );
      this.failure.hidden = false;
      this.failure.setAttribute("role", "alert");
    } else if (kind === "stopped") {
      this.node.classList.add("stopped");
      this.meta.textContent = "stopped";
    }
  }

  async copyText() {
    try {
      await navigator.clipboard.writeText(this.text);
    } catch {
      const range = document.createRange();
      range.selectNodeContents(this.body);
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("copy");
    }
    this.copy.textContent = "Copied";
    setTimeout(() => {
      this.copy.textContent = "Copy";
    }, 1500);
  }
}

/** A message for the history kept after its exchange: a screenshot sent inline is not sent again. */
function compact(message) {
  if (!Array.isArray(message.content)) return message;
  const content = message.content.map((part) =>
    part.type === "image_url" && part.image_url?.url?.startsWith("data:")
      ? { type: "text", text: "(a screenshot was attached here)" }
      : part,
  );
  return { ...message, content };
}

export class Conversation {
  /** `hooks`: onBusy(bool), onUnauthorized(failure), onModel(name), onChange(). */
  constructor(list, hooks) {
    this.list = list;
    this.hooks = hooks;
    this.messages = [];
    this.running = null;
  }

  get busy() {
    return this.running !== null;
  }

  reset() {
    this.stop();
    this.messages = [];
    this.list.replaceChildren();
    this.hooks.onChange();
  }

  stop() {
    this.running?.abort();
  }

  /** Sends the user's next message: `content` is a string or a list of parts. */
  send(content, { text, imageUrl } = {}) {
    if (this.busy) return;
    this.list.append(userTurn(text ?? (typeof content === "string" ? content : ""), imageUrl));
    this.exchange([...this.messages, { role: "user", content }]);
  }

  async exchange(request) {
    for (const old of this.list.querySelectorAll("button.retry")) old.remove();
    const turn = new AnswerTurn();
    this.list.append(turn.node);
    this.hooks.onChange();
    turn.node.scrollIntoView({ block: "nearest" });
    const controller = new AbortController();
    this.running = controller;
    this.hooks.onBusy(true);
    let outcome;
    try {
      const response = await call("/answer", {
        method: "POST",
        json: { messages: request, stream: true },
        signal: controller.signal,
      });
      outcome = await turn.follow(readEvents(response.body), this.hooks);
    } catch (err) {
      if (err.name === "AbortError") {
        outcome = { kind: "stopped" };
      } else if (err instanceof ApiFailure) {
        outcome = { kind: "failed", code: err.code, message: err.message };
        if (err.status === 401) this.hooks.onUnauthorized(err);
      } else {
        outcome = { kind: "failed", code: "stream_cut", message: `The answer could not be read: ${err.message ?? err}` };
      }
    } finally {
      this.running = null;
      this.hooks.onBusy(false);
    }
    const kept = request.map(compact);
    if (outcome.kind === "done" || (outcome.kind === "stopped" && turn.text !== "")) {
      this.messages = [...kept, { role: "assistant", content: turn.text }];
    } else {
      this.messages = kept;
    }
    // A retry sends the same request again; its outcome sets the history, as this one did.
    turn.finish(outcome.kind, outcome, () => {
      turn.node.remove();
      this.exchange(request);
    });
    this.hooks.onChange();
  }
}
