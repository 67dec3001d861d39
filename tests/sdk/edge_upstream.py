"""An OpenAI-compatible upstream for the SDK tests' edge cases, which the built-in demo model
cannot show in a release binary: a stream cut before `[DONE]` (the question holds "cut"), and a
long slow stream (anything else: 400 chunks, 50 ms apart) whose client may leave. It counts open
streams, so a test can see the proxy abort one: GET /stats gives
{"requests", "in_flight", "aborted"}.

    python3 edge_upstream.py     prints "listening on PORT", serves on 127.0.0.1 until killed
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
stats = {"requests": 0, "in_flight": 0, "aborted": 0}


def count(name, delta):
    with lock:
        stats[name] += delta


def last_user_text(body):
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/stats":
            self.send_error(404)
            return
        with lock:
            payload = json.dumps(stats).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        question = last_user_text(body)
        count("requests", 1)
        count("in_flight", 1)
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            cut = "cut" in question
            pieces = 2 if cut else 400
            for i in range(pieces):
                chunk = {
                    "id": "edge", "object": "chat.completion.chunk", "model": body.get("model"),
                    "choices": [{"index": 0, "delta": {"content": f"piece{i} "}, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                if not cut:
                    time.sleep(0.05)
            if not cut:
                self.wfile.write(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            count("aborted", 1)
        finally:
            count("in_flight", -1)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()
