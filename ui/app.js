// The chat page: wires the key check, the composer, the conversation and screenshots together.

import { ApiFailure, call, keyStore } from "./api.js";
import { Conversation } from "./chat.js";
import { Attachment, ocrTurn, readScreenshot } from "./ocr.js";

const $ = (id) => document.getElementById(id);
const question = $("question");
const turns = $("turns");

function status(text) {
  $("status").textContent = text;
}

function refreshEmpty() {
  $("empty").hidden = turns.childElementCount > 0;
}

/** Disables what needs a key while the key panel asks for one, or a request runs. */
function refreshControls() {
  const locked = !$("key-panel").hidden;
  const busy = conversation.busy;
  $("send").disabled = locked || busy;
  $("ask-about-it").disabled = locked || busy;
  $("read-it").disabled = locked;
  $("stop").hidden = !busy;
  $("forget-key").hidden = keyStore.get() === "";
}

const conversation = new Conversation(turns, {
  onBusy: () => refreshControls(),
  onUnauthorized: (failure) => askForKey(failure.message),
  onModel: (model) => {
    if (model) $("model").textContent = model;
  },
  onChange: () => refreshEmpty(),
});

const attachment = new Attachment(
  {
    bar: $("attachment"),
    preview: $("attachment-preview"),
    name: $("attachment-name"),
    input: $("file-input"),
  },
  (file) => {
    $("send").textContent = file ? "Ask about it" : "Send";
  },
);

function askForKey(why) {
  $("key-panel").hidden = false;
  $("key-why").textContent = why || "This server needs a client API key. It is kept in this browser only.";
  $("key-error").textContent = "";
  refreshControls();
  $("key-input").focus();
}

/** Asks the API who we are: the model list needs the key when the server has keys. */
async function checkKey(key) {
  const response = await call("/v1/models", { key });
  const models = await response.json();
  $("model").textContent = models.data?.[0]?.id ?? "";
}

/** Whether the server needs a key (asked without one, so no request is refused on the way). */
async function keyRequired() {
  const response = await call("/ui/settings.json", { key: "" });
  return (await response.json()).key_required;
}

async function start() {
  try {
    if ((await keyRequired()) && keyStore.get() === "") {
      askForKey("");
    } else {
      await checkKey();
      $("key-panel").hidden = true;
    }
  } catch (err) {
    if (err instanceof ApiFailure && err.status === 401) {
      askForKey("The saved key was not accepted. Enter another one.");
    } else {
      status(err.message);
    }
  }
  refreshControls();
  refreshEmpty();
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  try {
    await checkKey(key);
  } catch (err) {
    $("key-error").textContent =
      err instanceof ApiFailure && err.status === 401
        ? "That key was not accepted by the server. Check it and try again."
        : err.message;
    return;
  }
  keyStore.set(key);
  $("key-input").value = "";
  $("key-panel").hidden = true;
  status("Key saved in this browser.");
  refreshControls();
  question.focus();
});

$("forget-key").addEventListener("click", () => {
  keyStore.forget();
  status("Key forgotten.");
  start();
});

$("new-chat").addEventListener("click", () => {
  conversation.reset();
  attachment.clear();
  status("");
  question.value = "";
  question.focus();
});

$("stop").addEventListener("click", () => {
  conversation.stop();
  question.focus();
});

question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  if (conversation.busy || !$("key-panel").hidden) return;
  if (attachment.file) {
    askAboutIt();
    return;
  }
  const text = question.value.trim();
  if (!text) return;
  question.value = "";
  status("");
  conversation.send(text);
});

/** Sends the question with the screenshot inline, so the model can call its OCR tool. */
async function askAboutIt() {
  if (conversation.busy || !attachment.file) return;
  const text = question.value.trim() || "Which funds and held shares does this screenshot show?";
  const preview = attachment.previewUrl;
  let url;
  try {
    url = await attachment.inline();
  } catch (err) {
    status(`The image could not be read by the browser: ${err.message ?? err}`);
    return;
  }
  question.value = "";
  attachment.clear();
  conversation.send(
    [
      { type: "text", text },
      { type: "image_url", image_url: { url } },
    ],
    { text, imageUrl: preview },
  );
}

$("ask-about-it").addEventListener("click", () => askAboutIt());

$("read-it").addEventListener("click", async () => {
  const file = attachment.file;
  if (!file) return;
  const name = file.name || "pasted image";
  const turn = ocrTurn(attachment.previewUrl, name);
  attachment.clear();
  turns.append(turn.node);
  refreshEmpty();
  turn.node.scrollIntoView({ block: "nearest" });
  try {
    turn.show(await readScreenshot(file));
  } catch (err) {
    turn.fail(err);
    if (err instanceof ApiFailure && err.status === 401) askForKey(err.message);
  }
});

$("attach").addEventListener("click", () => $("file-input").click());
$("remove-attachment").addEventListener("click", () => {
  attachment.clear();
  question.focus();
});

document.addEventListener("paste", (event) => {
  if (attachment.takeFrom(event.clipboardData)) event.preventDefault();
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  attachment.takeFrom(event.dataTransfer);
});

start();
