// Calls to the proxy's API with the saved key, and HTTP failures put into words.

const KEY_ITEM = "chat-proxy.api-key";

/** The client key, kept in this browser's localStorage. */
export const keyStore = {
  get() {
    try {
      return localStorage.getItem(KEY_ITEM) || "";
    } catch {
      return "";
    }
  },
  set(key) {
    localStorage.setItem(KEY_ITEM, key);
  },
  forget() {
    localStorage.removeItem(KEY_ITEM);
  },
};

/** A request the server refused or could not answer: `status` 0 when it was not reached. */
export class ApiFailure extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/**
 * fetch() with the key; resolves with the response when it is a success, else throws an
 * ApiFailure (an abort is thrown as it is). `json` is sent as a JSON body, `form` as multipart.
 */
export async function call(path, { method = "GET", json, form, signal, key } = {}) {
  const headers = {};
  const token = key ?? keyStore.get();
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiFailure(0, "network", "The server could not be reached. Is it running?", null);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

/** The ApiFailure for an error response, from its `{"error": {code, message}}` body. */
export async function failure(response) {
  let code = `http_${response.status}`;
  let detail = "";
  try {
    const body = await response.json();
    code = body?.error?.code ?? code;
    detail = body?.error?.message ?? "";
  } catch {
    // Not JSON (a proxy in front, say): the status says enough.
  }
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10) || null;
  const message = explain(response.status, code, detail, retryAfter);
  return new ApiFailure(response.status, code, message, retryAfter);
}

/** What an HTTP failure means for the person at the page. */
export function explain(status, code, detail, retryAfter) {
  const later = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again in a moment.";
  const why = detail ? ` (${detail})` : "";
  switch (status) {
    case 401:
      return "The server did not accept the API key. Enter a valid key to go on.";
    case 403:
      return `The server refused this request${why}.`;
    case 408:
      return `The server stopped waiting for this request${why}.`;
    case 413:
      return `This is too large for the server${why}. Try a smaller screenshot, or start a new chat.`;
    case 429:
      if (code === "queue_full") return `The server is busy: every slot is taken and its queue is full.${later}`;
      if (code === "client_rate_limit") return `This key has sent too many requests this minute.${later}`;
      if (code === "client_concurrency_limit") return `This key already has as many requests open as it may.${later}`;
      return `Too many requests${why}.${later}`;
    case 503:
      if (code === "shutting_down") return `The server is shutting down.${later}`;
      return `The service is unavailable right now${why}.${later}`;
    default:
      return detail ? `${detail} (HTTP ${status})` : `The server answered HTTP ${status}.`;
  }
}
