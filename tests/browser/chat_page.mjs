// The chat page in Debian's Chromium, driven by playwright-core: what a person at the page sees.
// Started by tests/browser.rs, which runs the chat-proxy binary against the test mock and passes:
//   BASE_URL       the proxy                COUNTERS_URL  the mock's counters (JSON)
//   API_KEY        the proxy's client key   CHROMIUM      the browser binary
//   PLAYWRIGHT     playwright-core's folder SCREENSHOTS   where PNGs are saved
//   FIXTURE_IMAGE  a fund screenshot        FIXTURE_CODE  its fund code
//   FIXTURE_AVAILABLE  a screenshot with only 可用份额, FIXTURE_AVAILABLE_CODE  its fund code
// Each check prints a line; the first failure ends the run with a non-zero status.

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is set`);
  return value;
};
const base = env("BASE_URL");
const countersUrl = env("COUNTERS_URL");
const key = env("API_KEY");
const shots = env("SCREENSHOTS");
const fixture = env("FIXTURE_IMAGE");
const fixtureCode = env("FIXTURE_CODE");
const availableOnly = env("FIXTURE_AVAILABLE");
const availableCode = env("FIXTURE_AVAILABLE_CODE");
const { chromium } = createRequire(import.meta.url)(env("PLAYWRIGHT"));

const step = (text) => console.log(`- ${text}`);
const counters = async () => (await fetch(countersUrl)).json();
const api = (p, init = {}) =>
  fetch(base + p, { ...init, headers: { Authorization: `Bearer ${key}`, ...(init.headers ?? {}) } });

/** Polls `check` (async, truthy when done) for up to `ms`. */
async function until(what, check, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

// Every console error and uncaught exception of every page fails the run, except the refusal a
// step provokes on purpose (Chrome logs each refused request): a wrong key's 401, a 413.
const consoleErrors = [];
let provoked = null;
function watch(page) {
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    const text = message.text();
    if (provoked && text.includes(`status of ${provoked}`)) return;
    consoleErrors.push(`${page.url()}: ${text}`);
  });
  page.on("pageerror", (err) => consoleErrors.push(`${page.url()}: uncaught ${err.message}`));
  return page;
}

async function newPage(context) {
  const page = watch(await context.newPage());
  const response = await page.goto(base + "/");
  assert.equal(response.status(), 200);
  return { page, response };
}

/** Sends `text` with Enter and waits for the answer turn it starts to end; returns that turn. */
async function ask(page, text) {
  const before = await page.locator(".turn.assistant").count();
  await page.fill("#question", text);
  await page.press("#question", "Enter");
  const turn = page.locator(".turn.assistant").nth(before);
  await turn.waitFor();
  await page.waitForFunction(
    (i) => !document.querySelectorAll(".turn.assistant")[i].classList.contains("streaming"),
    before,
    { timeout: 20000 },
  );
  return turn;
}

async function signIn(page) {
  await page.locator("#key-panel").waitFor({ state: "visible" });
  await page.fill("#key-input", key);
  await page.press("#key-input", "Enter");
  await page.locator("#key-panel").waitFor({ state: "hidden" });
}

try {
  const context = await browser.newContext({
    viewport: { width: 1100, height: 900 },
    colorScheme: "light",
    permissions: ["clipboard-read", "clipboard-write"],
  });
  const { page, response } = await newPage(context);

  // The page and its headers.
  const headers = response.headers();
  assert.match(headers["content-security-policy"], /script-src 'self'/);
  assert.match(headers["content-security-policy"], /connect-src 'self'/);
  assert.doesNotMatch(headers["content-security-policy"], /unsafe-inline/);
  assert.equal(headers["x-content-type-options"], "nosniff");
  step("the page is sent with a strict Content-Security-Policy and nosniff");

  // Keys: asked once, a wrong one explained, the right one kept, nothing without one.
  await page.locator("#key-panel").waitFor({ state: "visible" });
  assert.equal((await api("/ocr/anything", { headers: { Authorization: "" } })).status, 401);
  assert.ok(await page.locator("#send").isDisabled(), "nothing is sent before a key is given");
  provoked = 401;
  await page.fill("#key-input", "not-the-key-0000000000");
  await page.click("#key-form button[type=submit]");
  await page.locator("#key-error").filter({ hasText: "not accepted" }).waitFor();
  provoked = null;
  await page.screenshot({ path: path.join(shots, "key.png") });
  await signIn(page);
  assert.equal(await page.evaluate(() => localStorage.getItem("chat-proxy.api-key")), key);
  step("the page asks for the key, explains a wrong one, and keeps the right one in localStorage");

  // A question streams in its own answer, rendered as it arrives.
  const scripts = await page.evaluate(() => document.scripts.length);
  await page.fill("#question", "stream-nonce-A1 tokens:30");
  await page.press("#question", "Enter");
  await page.waitForFunction(() => {
    const turn = document.querySelector(".turn.assistant");
    return turn?.classList.contains("streaming") && turn.querySelector(".body").textContent.length > 0;
  });
  const partial = await page.locator(".turn.assistant .body").first().textContent();
  await page.waitForFunction(() => !document.querySelector(".turn.assistant").classList.contains("streaming"));
  const first = page.locator(".turn.assistant").first();
  const answer = await first.locator(".body").textContent();
  assert.ok(answer.includes("stream-nonce-A1 tokens:30#0") && answer.includes("stream-nonce-A1 tokens:30#29"), answer);
  assert.ok(partial.length < answer.length, "the answer was shown while it streamed");
  assert.match(await first.locator(".meta").textContent(), /queue \d+ ms · first token \d+ ms · total \d+ ms/);
  assert.equal(await page.locator(".turn.user").first().textContent(), "Youstream-nonce-A1 tokens:30");
  step(`a question streams in its own answer (${partial.length} of ${answer.length} characters seen mid-stream), timings under it`);

  // Copying an answer.
  await first.locator("button", { hasText: "Copy" }).click();
  assert.equal((await page.evaluate(() => navigator.clipboard.readText())).trim(), answer.trim());
  step("an answer can be copied");

  // Markup in a reply runs nothing and adds no element; Markdown is rendered.
  const attack =
    'xss-nonce <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> **bold-word** `code-word` [link](javascript:window.__pwned=3)';
  const xss = await ask(page, attack);
  const xssBody = xss.locator(".body");
  assert.equal(await xssBody.locator("img, script, iframe, [onerror]").count(), 0);
  assert.ok((await xssBody.textContent()).includes('<img src=x onerror="window.__pwned=1">'));
  assert.equal(await xssBody.locator("strong").first().textContent(), "bold-word");
  assert.equal(await xssBody.locator("code").first().textContent(), "code-word");
  assert.equal(await xssBody.locator("a").count(), 0, "no javascript: link");
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.equal(await page.evaluate(() => document.scripts.length), scripts);
  step("a reply holding <img onerror> and <script> runs nothing and adds no element; Markdown renders");

  // An `error` event is a failed answer, with its code and a retry button.
  const failed = await ask(page, "please fail fault:malformed:2");
  assert.ok(await failed.evaluate((node) => node.classList.contains("failed")));
  assert.equal(await failed.locator(".failure .code").textContent(), "upstream_malformed");
  await failed.locator("button.retry").click();
  await page.waitForFunction(() => document.querySelectorAll(".turn.assistant.streaming").length === 0);
  assert.equal(await page.locator(".turn.assistant.failed").count(), 1, "the retry replaced the failed turn");
  assert.equal(await page.locator(".turn.assistant.failed .failure .code").textContent(), "upstream_malformed");
  step("an error event shows as a failed answer with its code, and Retry asks again");

  // An HTTP refusal is explained in words.
  provoked = 413;
  const huge = await ask(page, "x".repeat(1_100_000));
  provoked = null;
  assert.ok(await huge.evaluate((node) => node.classList.contains("failed")));
  assert.equal(await huge.locator(".failure .code").textContent(), "body_too_large");
  assert.match(await huge.locator(".failure .message").textContent(), /too large for the server/);
  await page.click("#new-chat");
  step("a 413 is explained in words");

  // Stop: the request ends, the upstream is cancelled and the permit is free again.
  const before = await counters();
  await page.fill("#question", "hold on fault:stall:1");
  await page.press("#question", "Enter");
  await until("the upstream request", async () => (await counters()).in_flight === 1);
  await page.locator("#stop").click();
  const after = await until("the upstream to be cancelled", async () => {
    const now = await counters();
    return now.in_flight === 0 && now.aborted > before.aborted ? now : null;
  });
  await until("the permit to be given back", async () => {
    const health = await (await api("/health")).json();
    return health.upstream.permits_in_use === 0;
  });
  assert.ok(await page.locator(".turn.assistant.stopped").isVisible());
  assert.ok(await page.locator("#stop").isHidden());
  step(`stop cancels the upstream (mock aborted ${before.aborted} -> ${after.aborted}) and frees the permit`);

  // Eight tabs at once on five permits: the waiting ones show their place in the queue.
  // Chrome opens at most 6 HTTP/1.1 connections to one host per profile, so 8 tabs of one
  // profile would leave 2 waiting in the browser, not in the proxy's queue: each tab gets a
  // profile of its own, signed in with the same key.
  const signedIn = await context.storageState();
  const tabContexts = [];
  const tabs = [];
  for (let i = 0; i < 8; i += 1) {
    tabContexts.push(await browser.newContext({ storageState: signedIn }));
    tabs.push((await newPage(tabContexts[i])).page);
  }
  await Promise.all(tabs.map((tab) => tab.locator("#send:not([disabled])").waitFor()));
  await Promise.all(
    tabs.map(async (tab, i) => {
      await tab.fill("#question", `tab-nonce-${i} tokens:60`);
      await tab.press("#question", "Enter");
    }),
  );
  // Three wait: their lines read "next in line", "1 ahead" and "2 ahead".
  const queued = await until("a tab to show how many are ahead of it", async () => {
    for (const tab of tabs) {
      const line = tab.locator(".queue:visible");
      const text = (await line.count()) > 0 ? await line.first().textContent() : "";
      if (/ahead/.test(text)) return { tab, text };
    }
    return null;
  });
  assert.match(queued.text, /^waiting for a free slot: [12] ahead$/);
  await queued.tab.screenshot({ path: path.join(shots, "queue.png") });
  for (const [i, tab] of tabs.entries()) {
    await tab.waitForFunction(() => !document.querySelector(".turn.assistant").classList.contains("streaming"), null, {
      timeout: 30000,
    });
    const text = await tab.locator(".turn.assistant .body").textContent();
    const nonces = new Set(text.match(/tab-nonce-\d+/g));
    assert.deepEqual([...nonces], [`tab-nonce-${i}`], `tab ${i} saw only its own answer: ${text}`);
    assert.ok(text.includes(`tab-nonce-${i} tokens:60#59`), `tab ${i}'s answer is whole`);
  }
  assert.ok((await counters()).max_in_flight <= 5, "never more than 5 upstream requests");
  for (const tabContext of tabContexts) await tabContext.close();
  step(`eight tabs on five permits: one showed "${queued.text}", each got its own whole answer`);

  // HTTP refusals in words (the page's own wording, run in the page).
  const words = await page.evaluate(async () => {
    const { explain } = await import("/ui/api.js");
    return {
      full: explain(429, "queue_full", "the queue is full", 7),
      rate: explain(429, "client_rate_limit", "", 30),
      down: explain(503, "upstream_unavailable", "the model API cannot be reached", 2),
      key: explain(401, "unauthorized", "", null),
    };
  });
  assert.match(words.full, /queue is full.*Try again in 7 s\./);
  assert.match(words.rate, /too many requests this minute.*Try again in 30 s\./);
  assert.match(words.down, /unavailable right now \(the model API cannot be reached\)\. Try again in 2 s\./);
  assert.match(words.key, /did not accept the API key/);
  step("429 (with its Retry-After), 503 and 401 are put in words");

  // A pasted image is attached.
  await page.evaluate(() => {
    const data = new DataTransfer();
    data.items.add(new File([new Uint8Array([137, 80, 78, 71])], "pasted.png", { type: "image/png" }));
    document.getElementById("question").dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true }));
  });
  await page.locator("#attachment").waitFor({ state: "visible" });
  assert.match(await page.locator("#attachment-name").textContent(), /^pasted\.png/);
  assert.equal(await page.locator("#send").textContent(), "Ask about it");
  await page.click("#remove-attachment");
  await page.locator("#attachment").waitFor({ state: "hidden" });
  step("a pasted image is attached, and can be removed");

  // A screenshot read into a table, corrected, and the correction read back.
  await page.click("#new-chat");
  await page.setInputFiles("#file-input", fixture);
  await page.locator("#attachment").waitFor({ state: "visible" });
  await page.click("#read-it");
  const ocr = page.locator(".turn.ocr").last();
  const codeField = ocr.locator("table.funds tbody tr").first().locator("input").first();
  await codeField.waitFor({ timeout: 30000 });
  assert.equal(await codeField.inputValue(), fixtureCode);
  const ocrId = await ocr.locator("table.funds").getAttribute("data-ocr-id");
  const shareField = ocr.locator("table.funds tbody tr").first().locator("input").nth(1);
  await shareField.fill("4321.5");
  await ocr.locator("button", { hasText: "Save corrections" }).click();
  await ocr.locator(".save-status.ok").waitFor({ timeout: 20000 });
  const stored = await (await api(`/ocr/${ocrId}`)).json();
  assert.deepEqual(stored.update_funds, [{ fund_code: fixtureCode, hold_share: "4321.5" }]);
  assert.equal(stored.update_hold_share, "4321.5");
  assert.equal(stored.update_fund_code, fixtureCode);
  await page.screenshot({ path: path.join(shots, "ocr.png") });
  step(`an uploaded screenshot shows fund ${fixtureCode}; the correction is read back by GET /ocr/${ocrId}`);

  // A page with only the available share: no share, and the empty field says why.
  await page.click("#new-chat");
  await page.setInputFiles("#file-input", availableOnly);
  await page.locator("#attachment").waitFor({ state: "visible" });
  await page.click("#read-it");
  const unread = page.locator(".turn.ocr").last().locator("table.funds tbody tr").first().locator("input");
  await unread.first().waitFor({ timeout: 30000 });
  assert.equal(await unread.first().inputValue(), availableCode);
  assert.equal(await unread.nth(1).inputValue(), "");
  assert.equal(await unread.nth(1).getAttribute("placeholder"), "only 可用份额 shown");
  await page.screenshot({ path: path.join(shots, "ocr-available-only.png") });
  step(`a screenshot with only 可用份额 gives fund ${availableCode} no share, and the field says why`);

  // "Ask about it": the image goes with the question, and the page shows the tool at work.
  await page.evaluate(() => {
    window.__toolTexts = [];
    new MutationObserver(() => {
      for (const line of document.querySelectorAll(".turn.assistant .tool")) {
        if (!window.__toolTexts.includes(line.textContent)) window.__toolTexts.push(line.textContent);
      }
    }).observe(document.getElementById("turns"), { subtree: true, childList: true, characterData: true });
  });
  const answers = await page.locator(".turn.assistant").count();
  await page.setInputFiles("#file-input", fixture);
  await page.fill("#question", "what is in this screenshot?");
  await page.click("#ask-about-it");
  await page.waitForFunction(
    (n) => {
      const turns = document.querySelectorAll(".turn.assistant");
      return turns.length > n && !turns[n].classList.contains("streaming");
    },
    answers,
    { timeout: 30000 },
  );
  const asked = page.locator(".turn.assistant").nth(answers);
  const toolTexts = await page.evaluate(() => window.__toolTexts);
  assert.ok(toolTexts.includes("reading the screenshot…"), JSON.stringify(toolTexts));
  assert.match(await asked.locator(".tool").textContent(), /read the screenshot: 1 fund found/);
  assert.ok((await asked.locator(".body").textContent()).includes(fixtureCode));
  assert.equal(await asked.locator("table.funds tbody tr input").first().inputValue(), fixtureCode);
  await page.setViewportSize({ width: 1000, height: 880 });
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await page.screenshot({ path: path.join(shots, "chat-page.png") });
  step(`"Ask about it" sends the image; the page shows "reading the screenshot…", then fund ${fixtureCode}`);

  // Keyboard only: every control is reached with Tab and shows its focus.
  await page.click("#new-chat");
  // Tab order starts from a click on the title, as a person's would.
  await page.click("h1");
  const reached = [];
  for (let i = 0; i < 6; i += 1) {
    await page.keyboard.press("Tab");
    reached.push(
      await page.evaluate(() => {
        const el = document.activeElement;
        return { id: el.id, outline: getComputedStyle(el).outlineStyle };
      }),
    );
  }
  for (const id of ["new-chat", "forget-key", "question", "attach", "send"]) {
    const hit = reached.find((r) => r.id === id);
    assert.ok(hit, `Tab reaches #${id}: ${JSON.stringify(reached)}`);
    assert.notEqual(hit.outline, "none", `#${id} shows its focus`);
  }
  await page.focus("#question");
  await page.keyboard.type("first line");
  await page.keyboard.press("Shift+Enter");
  await page.keyboard.type("second line tokens:3");
  assert.equal(await page.inputValue("#question"), "first line\nsecond line tokens:3");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector(".turn.assistant") && !document.querySelector(".turn.assistant").classList.contains("streaming"));
  assert.match(await page.locator(".turn.user").first().textContent(), /first line\nsecond line/);
  step("by keyboard: Tab reaches every control with a visible focus; Shift+Enter is a new line, Enter sends");

  // Forgetting the key brings the question back.
  await page.click("#forget-key");
  await page.locator("#key-panel").waitFor({ state: "visible" });
  assert.equal(await page.evaluate(() => localStorage.getItem("chat-proxy.api-key")), null);
  step("Forget key removes it and asks again");
  await context.close();

  // A phone: 380 px wide, dark as its system.
  const phone = await browser.newContext({ viewport: { width: 380, height: 800 }, colorScheme: "dark" });
  const mobile = (await newPage(phone)).page;
  await signIn(mobile);
  await ask(mobile, "phone question with a long word Donaudampfschifffahrtsgesellschaftskapitän tokens:5");
  const overflow = await mobile.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(overflow <= 380, `no sideways scrolling at 380 px (${overflow})`);
  const background = await mobile.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const [r, g, b] = background.match(/\d+/g).map(Number);
  assert.ok(r + g + b < 150, `dark mode follows the system: ${background}`);
  await mobile.screenshot({ path: path.join(shots, "phone-dark.png") });
  step(`at 380 px nothing overflows, and dark mode follows the system (${background})`);
  await phone.close();

  assert.deepEqual(consoleErrors, [], "no console errors");
  step("no page logged a console error");
} finally {
  await browser.close();
}
