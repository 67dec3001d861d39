// A streamed Server-Sent Events parser for a fetch() response body. EventSource cannot send a
// POST, so the page reads the stream itself: events are separated by a blank line, and each has
// `event:` and `data:` fields; comment lines (":", the server's keep-alives) are skipped.

/** Yields `{event, data}` for each event of `body` (a ReadableStream of bytes), in order. */
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      // A "\r" at the very end may be the first half of "\r\n": wait for the next chunk.
      const settled = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
      const text = buffer.slice(0, settled).replace(/\r\n?/g, "\n");
      const end = text.lastIndexOf("\n\n");
      if (end < 0) continue;
      buffer = text.slice(end + 2) + buffer.slice(settled);
      for (const block of text.slice(0, end).split("\n\n")) {
        const event = parseBlock(block);
        if (event) yield event;
      }
    }
    const last = parseBlock(buffer.replace(/\r\n?/g, "\n"));
    if (last) yield last;
  } finally {
    reader.releaseLock();
  }
}

/** One event's lines as `{event, data}`; null for a comment or an empty block. */
export function parseBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: data.join("\n") } : null;
}
