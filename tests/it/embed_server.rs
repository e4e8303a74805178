#![allow(dead_code)]
//! A small deterministic OpenAI-compatible embedding server on loopback. In the tests it
//! stands for a real provider (OpenAI, Ollama, vLLM…): `POST /v1/embeddings` with
//! `{"model", "input": [..]}` answers `{"data": [{"index", "embedding"}]}`.
//!
//! The embedding is a hashed bag of words (64 dimensions) in which a few synonyms share a
//! bucket (car / automobile / vehicle), so a query can match a document by meaning without
//! sharing a word with it — which is what the hybrid tests need to tell the vector signal
//! from the keyword one. It can be taken down (connections refused) and brought back on the
//! same port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub const DIM: usize = 64;

pub struct EmbedServer {
    pub port: u16,
    /// Texts embedded so far (documents and queries).
    pub inputs: Arc<AtomicU64>,
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
        Self::serve(listener, port, Arc::new(AtomicU64::new(0)))
    }

    fn serve(listener: TcpListener, port: u16, inputs: Arc<AtomicU64>) -> EmbedServer {
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, inputs2) = (stop.clone(), inputs.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Acquire) {
                    return;
                }
                if let Ok(stream) = conn {
                    let (inputs, stop) = (inputs2.clone(), stop2.clone());
                    std::thread::spawn(move || handle(stream, &inputs, &stop));
                }
            }
        });
        EmbedServer {
            port,
            inputs,
            stop,
            thread: Some(thread),
        }
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
        let fresh = Self::serve(listener, self.port, self.inputs.clone());
        self.take_down();
        *self = fresh;
    }
}

impl Drop for EmbedServer {
    fn drop(&mut self) {
        self.take_down();
    }
}

fn handle(stream: TcpStream, inputs: &AtomicU64, stop: &AtomicBool) {
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
        let (status, out) = if line.starts_with("POST") && line.contains("/embeddings") {
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(req) => {
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
                        serde_json::json!({"object": "list", "data": data, "model": req["model"]}),
                    )
                }
                Err(e) => (400, serde_json::json!({"error": e.to_string()})),
            }
        } else {
            (404, serde_json::json!({"error": "not found"}))
        };
        let text = out.to_string();
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            text.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(text.as_bytes()).is_err()
        {
            return;
        }
    }
}
