// The official `openai` npm package against the running chat-proxy binary (scripts/sdk-tests.sh
// starts it and installs the package under target/): the same cases as tests/sdk/python.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";
import test from "node:test";

const require = createRequire(`${process.env.SDK_NODE_MODULES}/`);
const sdk = require("openai");
const OpenAI = sdk.OpenAI ?? sdk.default ?? sdk;
const errors = {
  APIError: sdk.APIError ?? OpenAI.APIError,
  AuthenticationError: sdk.AuthenticationError ?? OpenAI.AuthenticationError,
  BadRequestError: sdk.BadRequestError ?? OpenAI.BadRequestError,
  NotFoundError: sdk.NotFoundError ?? OpenAI.NotFoundError,
  RateLimitError: sdk.RateLimitError ?? OpenAI.RateLimitError,
};

const { MAIN_URL, EDGE_URL, EDGE_UPSTREAM, API_KEY } = process.env;
const TOOLS = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { question: { type: "string" } } },
  },
}];

// No retries: a refusal must surface as the SDK's typed error at once.
const client = (url = MAIN_URL, apiKey = API_KEY) =>
  new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });
const ask = (text) => [{ role: "user", content: text }];

async function getJson(url) {
  const response = await fetch(url, { headers: { authorization: `Bearer ${API_KEY}` } });
  return response.json();
}

async function eventually(what, check, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    const [ok, value] = await check();
    last = value;
    if (ok) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.fail(`${what}: still ${JSON.stringify(last)} after ${timeoutMs} ms`);
}

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

const textOf = (chunks) =>
  chunks.filter((c) => c.choices.length).map((c) => c.choices[0].delta.content ?? "").join("");

test("models.list and retrieve", async () => {
  const page = await client().models.list();
  assert.deepEqual(page.data.map((m) => m.id), ["demo"]);
  assert.equal((await client().models.retrieve("demo")).owned_by, "chat-proxy");
});

test("a non-streamed completion has usage", async () => {
  const reply = await client().chat.completions.create({ model: "demo", messages: ask("js-plain") });
  assert.equal(reply.object, "chat.completion");
  assert.match(reply.choices[0].message.content, /js-plain/);
  assert.equal(reply.choices[0].finish_reason, "stop");
  assert.ok(reply.usage.total_tokens > 0);
});

test("a streamed completion with include_usage", async () => {
  const stream = await client().chat.completions.create({
    model: "demo", messages: ask("js-stream"), stream: true,
    stream_options: { include_usage: true }, temperature: 0.2,
  });
  const chunks = await collect(stream);
  assert.match(textOf(chunks), /js-stream/);
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
  const finish = chunks.filter((c) => c.choices.length && c.choices[0].finish_reason);
  assert.deepEqual(finish.map((c) => c.choices[0].finish_reason), ["stop"]);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.total_tokens > 0);
});

test("a client tool round trip", async () => {
  const messages = ask("please call get_weather for Paris");
  const first = await client().chat.completions.create({ model: "demo", messages, tools: TOOLS });
  assert.equal(first.choices[0].finish_reason, "tool_calls");
  const call = first.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, "get_weather");
  messages.push(first.choices[0].message);
  messages.push({ role: "tool", tool_call_id: call.id, content: "rain, 12 C" });
  const second = await client().chat.completions.create({ model: "demo", messages, tools: TOOLS });
  assert.match(second.choices[0].message.content, /rain, 12 C/);
  // The SDK's stream helper assembles the streamed call.
  const runner = client().chat.completions.stream({
    model: "demo", messages: ask("call get_weather in Rome"), tools: TOOLS,
  });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.tool_calls[0].function.name, "get_weather");
  assert.equal(final.choices[0].finish_reason, "tool_calls");
});

test("errors are the SDK's typed errors", async () => {
  await assert.rejects(
    client(MAIN_URL, "not-a-valid-key").chat.completions.create({ model: "demo", messages: ask("x") }),
    errors.AuthenticationError,
  );
  await assert.rejects(
    client().chat.completions.create({ model: "gpt-nonexistent", messages: ask("x") }),
    (err) => err instanceof errors.NotFoundError && err.code === "model_not_found",
  );
  await assert.rejects(
    client().chat.completions.create({ model: "demo", messages: ask("x"), n: 2 }),
    (err) => err instanceof errors.BadRequestError && err.param === "n",
  );
});

test("an error mid-stream raises APIError", async () => {
  const stream = await client(EDGE_URL).chat.completions.create({
    model: "edge", messages: ask("cut please"), stream: true,
  });
  let text = "";
  await assert.rejects(async () => {
    for await (const chunk of stream) {
      if (chunk.choices.length) {
        assert.equal(chunk.choices[0].finish_reason, null);
        text += chunk.choices[0].delta.content ?? "";
      }
    }
  }, errors.APIError);
  assert.equal(text, "piece0 piece1 ");
});

test("a full queue is RateLimitError and an aborted stream frees the permit", async () => {
  const edge = client(EDGE_URL);
  const before = (await getJson(`${EDGE_UPSTREAM}/stats`)).aborted;
  const holder = await edge.chat.completions.create({ model: "edge", messages: ask("hold"), stream: true });
  const iterator = holder[Symbol.asyncIterator]();
  const first = await iterator.next();
  assert.equal(first.value.choices[0].delta.content, "piece0 ");
  const waiting = await edge.chat.completions.create({ model: "edge", messages: ask("wait"), stream: true });
  await eventually("one waiting", async () => {
    const upstream = (await getJson(`${EDGE_URL}/health`)).upstream;
    return [upstream.queue_length === 1, upstream];
  });
  await assert.rejects(
    edge.chat.completions.create({ model: "edge", messages: ask("one too many") }),
    (err) => err instanceof errors.RateLimitError && Boolean(err.headers?.get?.("retry-after") ?? err.headers?.["retry-after"]),
  );
  waiting.controller.abort();
  holder.controller.abort();
  await eventually("the upstream streams aborted", async () => {
    const stats = await getJson(`${EDGE_UPSTREAM}/stats`);
    return [stats.in_flight === 0 && stats.aborted > before, stats];
  });
  await eventually("the permit back", async () => {
    const upstream = (await getJson(`${EDGE_URL}/health`)).upstream;
    return [upstream.permits_in_use === 0, upstream];
  });
});

test("200 concurrent streams never cross", async () => {
  const sdk = client();
  const nonces = Array.from({ length: 200 }, () => `nonce-${randomUUID()}`);
  const texts = await Promise.all(nonces.map(async (nonce) => {
    const stream = await sdk.chat.completions.create({ model: "demo", messages: ask(nonce), stream: true });
    return textOf(await collect(stream));
  }));
  texts.forEach((text, i) => {
    assert.match(text, new RegExp(nonces[i]));
    const others = nonces.filter((n, j) => j !== i && text.includes(n));
    assert.deepEqual(others, []);
  });
});
