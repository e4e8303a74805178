#![allow(dead_code)]
//! A small deterministic OpenAI-compatible embedding server on loopback. In the tests it
//! stands for a real provider (OpenAI, Ollama, vLLM…): `POST /v1/embeddings` with
//! `{"model", "input": [..]}` answers `{"data": [{"index", "embedding"}], "usage"}`.
//!
//! The embedding is a hashed bag of words (64 dimensions) in which a few synonyms share a
//! bucket (car / automobile / vehicle), so a query can match a document by meaning without
//! sharing a word with it — which is what the hybrid tests need to tell the vector signal
//! from the keyword one. It can be taken down (connections refused) and brought back on the
//! same port.
//!
//! It can also stand for a slow or busy provider ([`Behaviour`]): a delay per text computed
//! one request at a time, as one CPU-bound model does (requests queue behind each other, and
//! an abandoned request is still computed), an extra stall of the first request, and
//! throttle answers (429/503 with `Retry-After`) for the next requests. Every request is
//! logged with its arrival and answer times.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const DIM: usize = 64;

/// How the provider behaves; changeable while it runs.
#[derive(Default)]
pub struct Behaviour {
    /// Time to compute one text; requests are computed one at a time.
    pub per_text: Mutex<Duration>,
    /// Extra time the next embeddings request takes (once).
    pub stall_next: Mutex<Option<Duration>>,
    /// Answers (status, `Retry-After` seconds) for the next embeddings requests, in order.
    pub throttle: Mutex<VecDeque<(u16, u64)>>,
    /// Every embeddings request: arrival, answer, status, texts.
    pub log: Mutex<Vec<Logged>>,
    /// The model: held while a request is computed.
    model: Mutex<()>,
}

#[derive(Debug, Clone, Copy)]
pub struct Logged {
    pub arrived: Instant,
    pub answered: Instant,
    pub status: u16,
    pub texts: usize,
}

pub struct EmbedServer {
    pub port: u16,
    /// Texts embedded so far (documents and queries).
    pub inputs: Arc<AtomicU64>,
    pub behaviour: Arc<Behaviour>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn canonical(word: &str) -> &str {
    match word {
        "car" | "cars" | "automobile" | "automobiles" | "vehicle" | "vehicles" => "automobile",
        "banana" | "bananas" | "fruit" => "fruit",
        w => w,
    }
}

/// The input tokens the stand-in reports per text (`usage.prompt_tokens`, as OpenAI does).
pub const TOKENS_PER_TEXT: u64 = 7;

pub fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIM];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let lower = word.to_lowercase();
        let w = canonical(&lower);
        let h = w.bytes().fold(2166136261u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(16777619)
        });
        v[(h as usize) % DIM] += 1.0;
    }
    v
}

impl EmbedServer {
    pub fn start() -> EmbedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind embed server");
        let port = listener.local_addr().unwrap().port();
        Self::serve(
            listener,
            port,
            Arc::new(AtomicU64::new(0)),
            Arc::new(Behaviour::default()),
        )
    }

    fn serve(
        listener: TcpListener,
        port: u16,
        inputs: Arc<AtomicU64>,
        behaviour: Arc<Behaviour>,
    ) -> EmbedServer {
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, inputs2, behaviour2) = (stop.clone(), inputs.clone(), behaviour.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Acquire) {
                    return;
                }
                if let Ok(stream) = conn {
                    let (inputs, stop, b) = (inputs2.clone(), stop2.clone(), behaviour2.clone());
                    std::thread::spawn(move || handle(stream, &inputs, &stop, &b));
                }
            }
        });
        EmbedServer {
            port,
            inputs,
            behaviour,
            stop,
            thread: Some(thread),
        }
    }

    /// Every text takes `per_text` to compute, one request at a time.
    pub fn set_per_text(&self, per_text: Duration) {
        *self.behaviour.per_text.lock().unwrap() = per_text;
    }

    /// The next embeddings request takes `extra` longer.
    pub fn stall_next(&self, extra: Duration) {
        *self.behaviour.stall_next.lock().unwrap() = Some(extra);
    }

    /// The next embeddings requests are answered `status` with `Retry-After: secs`.
    pub fn throttle_next(&self, answers: &[(u16, u64)]) {
        self.behaviour
            .throttle
            .lock()
            .unwrap()
            .extend(answers.iter().copied());
    }

    pub fn log(&self) -> Vec<Logged> {
        self.behaviour.log.lock().unwrap().clone()
    }

    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Stop accepting: later connections are refused (the provider is down).
    pub fn take_down(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Serve again on the same port.
    pub fn bring_back(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("rebind embed server");
        let fresh = Self::serve(
            listener,
            self.port,
            self.inputs.clone(),
            self.behaviour.clone(),
        );
        self.take_down();
        *self = fresh;
    }
}

impl Drop for EmbedServer {
    fn drop(&mut self) {
        self.take_down();
    }
}

/// Compute `texts` as the configured model would: one request at a time, `per_text` each,
/// plus a pending stall. Returns a throttle answer instead when one is queued.
fn compute(b: &Behaviour, texts: usize) -> Option<(u16, u64)> {
    if let Some(t) = b.throttle.lock().unwrap().pop_front() {
        return Some(t);
    }
    let _model = b.model.lock().unwrap();
    let stall = b.stall_next.lock().unwrap().take().unwrap_or_default();
    let per_text = *b.per_text.lock().unwrap();
    let busy = stall + per_text * texts as u32;
    if !busy.is_zero() {
        std::thread::sleep(busy);
    }
    None
}

fn handle(stream: TcpStream, inputs: &AtomicU64, stop: &AtomicBool, b: &Behaviour) {
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        // Down: kept-alive connections are dropped too.
        if stop.load(Ordering::Acquire) {
            return;
        }
        let arrived = Instant::now();
        let mut retry_after = None;
        let mut texts_in = 0;
        let (status, out) = if line.starts_with("POST") && line.contains("/embeddings") {
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(req) if req["input"].is_array() || req["input"].is_string() => {
                    texts_in = req["input"].as_array().map_or(1, |a| a.len());
                    if let Some((status, secs)) = compute(b, texts_in) {
                        retry_after = Some(secs);
                        (
                            status,
                            serde_json::json!({"error": {"message": "slow down"}}),
                        )
                    } else {
                        let texts: Vec<String> = match &req["input"] {
                            serde_json::Value::String(s) => vec![s.clone()],
                            serde_json::Value::Array(a) => a
                                .iter()
                                .map(|t| t.as_str().unwrap_or_default().to_string())
                                .collect(),
                            _ => Vec::new(),
                        };
                        inputs.fetch_add(texts.len() as u64, Ordering::Relaxed);
                        let data: Vec<serde_json::Value> = texts
                        .iter()
                        .enumerate()
                        .map(|(i, t)| serde_json::json!({"object": "embedding", "index": i, "embedding": embed(t)}))
                        .collect();
                        (
                            200,
                            serde_json::json!({"object": "list", "data": data, "model": req["model"],
                                "usage": {"prompt_tokens": TOKENS_PER_TEXT * texts.len() as u64,
                                          "total_tokens": TOKENS_PER_TEXT * texts.len() as u64}}),
                        )
                    }
                }
                Ok(_) => (400, serde_json::json!({"error": "no input"})),
                Err(e) => (400, serde_json::json!({"error": e.to_string()})),
            }
        } else {
            (404, serde_json::json!({"error": "not found"}))
        };
        let text = out.to_string();
        let retry_header = retry_after
            .map(|s| format!("retry-after: {s}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{retry_header}content-length: {}\r\n\r\n",
            text.len()
        );
        if texts_in > 0 {
            b.log.lock().unwrap().push(Logged {
                arrived,
                answered: Instant::now(),
                status,
                texts: texts_in,
            });
        }
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(text.as_bytes()).is_err()
        {
            return;
        }
    }
}
