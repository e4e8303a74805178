"""A small deterministic OpenAI-compatible chat server on loopback.

In the session tests it stands for a real chat provider (OpenAI, Ollama, vLLM, llama.cpp's
server) so that a commit's memory extraction is exact and repeatable. It is a script, not a
language model (the Rust integration suite's tests/it/chat_server.rs follows the same rule):
every user line of the conversation of the form

    remember pref <topic> = <text>          -> a preferences memory of <user>
    remember entity <category>/<name> = <text> -> an entities memory
    remember event <name> = <text>          -> an events memory

becomes one `add` operation of a type the request lists. Requests that are not memory
extraction (directory summaries) get a fixed summary.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def scripted_operations(system: str, prompt: str, user: str) -> dict:
    """The operations a correct extraction of `prompt` holds (types the system text lists)."""

    def listed(memory_type: str) -> bool:
        return f"\n## {memory_type}\n" in system

    ops = []
    for line in prompt.splitlines():
        # "[3] user: remember pref coffee = Drinks oat milk flat whites"
        head, sep, rest = line.partition("remember ")
        if not sep or not head.startswith("[") or "] user:" not in head:
            continue
        spec, sep, text = rest.partition(" = ")
        if not sep:
            continue
        index = head[1:].split("]", 1)[0]
        words = spec.split()
        if len(words) != 2:
            continue
        kind, key = words
        text = text.strip()
        if kind == "pref":
            op = {"op": "add", "memory_type": "preferences",
                  "fields": {"user": user, "topic": key, "content": f"- {text}"}}
        elif kind == "entity":
            category, _, name = key.partition("/")
            op = {"op": "add", "memory_type": "entities",
                  "fields": {"category": category or "thing", "name": name or key,
                             "content": f"# {name or key}\n- {text}"}}
        elif kind == "event":
            op = {"op": "add", "memory_type": "events",
                  "fields": {"event_name": key, "goal": "planned", "summary": text,
                             "ranges": index}}
        else:
            continue
        if listed(op["memory_type"]):
            ops.append(op)
    return {"operations": ops}


class ChatStandIn:
    """Serves POST /v1/chat/completions on 127.0.0.1 until `stop()`."""

    def __init__(self, user: str):
        self.user = user
        self.memory_requests = 0
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null") or {}
                messages = body.get("messages") or [{}]
                system = messages[0].get("content") or ""
                if "long-term memory" in system:
                    with standin._lock:
                        standin.memory_requests += 1
                    # The first user message holds the conversation (repair turns come later).
                    prompt = (messages[1].get("content") or "") if len(messages) > 1 else ""
                    content = json.dumps(scripted_operations(system, prompt, standin.user))
                else:
                    content = ("ABSTRACT: A directory of memories.\nOVERVIEW:\n# Memories\n\n"
                               "A directory of memories.")
                out = json.dumps({
                    "choices": [{"message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 20,
                              "total_tokens": 120},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.api_base = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
