"""A small deterministic OpenAI-compatible embedding server on loopback.

It stands for a real embedding provider in the .ovpack compatibility script
(tests/compat/pack_0_5_2.py), so that both servers compute the same vector for the same text
and nothing is downloaded: every input text maps to a fixed-dimension unit vector derived
from the sha256 of its UTF-8 bytes (not a language model; equal texts give equal vectors).
Answers `POST /v1/embeddings` with `encoding_format` "float" (default) or "base64" (the
`openai` Python client asks for base64 by default).
"""
import base64
import hashlib
import json
import math
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def text_vector(text: str, dimension: int) -> list[float]:
    """A unit vector of `dimension` floats derived from `text` alone."""
    values: list[float] = []
    counter = 0
    while len(values) < dimension:
        block = hashlib.sha256(f"{counter}:{text}".encode("utf-8")).digest()
        for i in range(0, len(block), 4):
            (raw,) = struct.unpack("<I", block[i:i + 4])
            values.append(raw / 2**31 - 1.0)
        counter += 1
    values = values[:dimension]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Rounded through float32 so a vector that travels as float32 compares equal.
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


class EmbedStandIn:
    """Serves POST /v1/embeddings on 127.0.0.1 until `stop()`; counts the texts embedded."""

    def __init__(self, dimension: int, model: str):
        self.dimension = dimension
        self.model = model
        self.texts = 0
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null") or {}
                except ValueError:
                    body = None
                if not self.path.rstrip("/").endswith("/embeddings") or not isinstance(body, dict):
                    self.send_error(404 if isinstance(body, dict) else 400)
                    return
                inputs = body.get("input")
                if isinstance(inputs, str):
                    inputs = [inputs]
                if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
                    self.send_error(400, "input must be a string or a list of strings")
                    return
                with standin._lock:
                    standin.texts += len(inputs)
                b64 = body.get("encoding_format") == "base64"
                data = []
                for i, text in enumerate(inputs):
                    vector = text_vector(text, standin.dimension)
                    if b64:
                        packed = struct.pack(f"<{len(vector)}f", *vector)
                        embedding = base64.b64encode(packed).decode("ascii")
                    else:
                        embedding = vector
                    data.append({"object": "embedding", "index": i, "embedding": embedding})
                payload = json.dumps({
                    "object": "list",
                    "data": data,
                    "model": body.get("model") or standin.model,
                    "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.api_base = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
