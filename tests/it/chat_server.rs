#![allow(dead_code)]
//! A small deterministic OpenAI-compatible chat server on loopback. In the memory tests it
//! stands for a real provider (OpenAI, Ollama, vLLM, llama.cpp's server): `POST
//! /v1/chat/completions` answers `{"choices": [{"message": {"content": ...}}], "usage": ...}`.
//!
//! Its "model" is a script, not a language model: every conversation line of the form
//! `remember <kind> <key> = <text>` (`pref <topic>`, `entity <category>/<name>`,
//! `event <name>`, `profile -`, `identity <field>`, `soul <field>`) becomes one memory
//! operation — of a type the request lists, and about the peer who wrote the line, if one
//! did — so a test knows exactly what a correct extraction writes. Misbehaviour is scripted per request ([`Answer`]): prose,
//! truncated JSON, a wrong schema, HTTP 500, a slow answer, or refusing `json_schema`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

/// How the next request is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The scripted operations as JSON.
    Good,
    /// Plain prose, no JSON.
    Prose,
    /// The JSON cut in the middle.
    Truncated,
    /// Valid JSON of the wrong shape.
    WrongSchema,
    /// HTTP 500.
    Error500,
    /// The good answer after this delay.
    Slow(Duration),
}

#[derive(Default)]
pub struct Script {
    /// Answers for the next requests, in order; `Good` when empty (or `default` if set).
    pub next: Mutex<VecDeque<Answer>>,
    pub default: Mutex<Option<Answer>>,
    /// Refuse `response_format: json_schema` with 400 (a provider that only has JSON mode).
    pub refuse_schema: AtomicBool,
    /// Every memory-extraction request body received.
    pub bodies: Mutex<Vec<Value>>,
}

pub struct ChatServer {
    pub port: u16,
    pub requests: Arc<AtomicU64>,
    pub script: Arc<Script>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ChatServer {
    pub fn start() -> ChatServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let script = Arc::new(Script::default());
        let (flag, count, sc) = (stop.clone(), requests.clone(), script.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (count, sc) = (count.clone(), sc.clone());
                std::thread::spawn(move || serve(stream, &count, &sc));
            }
        });
        ChatServer {
            port,
            requests,
            script,
            stop,
            thread: Some(thread),
        }
    }

    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn push(&self, answers: &[Answer]) {
        self.script
            .next
            .lock()
            .unwrap()
            .extend(answers.iter().cloned());
    }

    pub fn set_default(&self, a: Option<Answer>) {
        *self.script.default.lock().unwrap() = a;
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The operations the script extracts from a prompt's conversation lines (every type when
/// `system` is empty, else the types it lists as `## <type>`).
pub fn scripted_operations(system: &str, prompt: &str) -> Value {
    let listed = |t: &str| system.is_empty() || system.contains(&format!("\n## {t}\n"));
    let mut ops = Vec::new();
    for line in prompt.lines() {
        // "[3] user: remember pref coffee = Drinks oat milk flat whites"
        let Some((head, rest)) = line.split_once("remember ") else {
            continue;
        };
        if !head.starts_with('[') || !(head.contains("] user:") || head.contains("] user (peer")) {
            continue;
        }
        let index = head
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("0");
        let Some((spec, text)) = rest.split_once(" = ") else {
            continue;
        };
        let text = text.trim();
        let peer = head
            .split_once("(peer ")
            .and_then(|(_, p)| p.split(')').next())
            .map(str::to_string);
        let who = peer.clone().unwrap_or_else(|| "alice".into());
        let mut words = spec.split_whitespace();
        let kind = words.next().unwrap_or("");
        let key = words.next().unwrap_or("");
        let mut op = match kind {
            "pref" => json!({"op": "add", "memory_type": "preferences",
                "fields": {"user": who, "topic": key, "content": format!("- {text}")}}),
            "entity" => {
                let (cat, name) = key.split_once('/').unwrap_or(("thing", key));
                json!({"op": "add", "memory_type": "entities",
                    "fields": {"category": cat, "name": name, "content": format!("# {name}\n- {text}")}})
            }
            "event" => json!({"op": "add", "memory_type": "events",
                "fields": {"event_name": key, "goal": "planned", "summary": text, "ranges": index}}),
            "profile" => json!({"op": "add", "memory_type": "profile",
                "fields": {"content": format!("# {who}\n- {text}")}}),
            "identity" => json!({"op": "update", "memory_type": "identity",
                "fields": {key: text}}),
            "soul" => json!({"op": "update", "memory_type": "soul", "fields": {key: text}}),
            _ => continue,
        };
        if !listed(op["memory_type"].as_str().unwrap_or("")) {
            continue;
        }
        if let (Some(p), false) = (&peer, op["fields"]["ranges"].is_string()) {
            op["peer_id"] = json!(p);
        }
        ops.push(op);
    }
    json!({"operations": ops})
}

fn serve(stream: TcpStream, count: &AtomicU64, script: &Script) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    let _ = reader.read_exact(&mut body);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Directory summaries use the same model: they get a fixed summary and neither consume
    // the script nor count as memory requests.
    let is_memory = v["messages"][0]["content"]
        .as_str()
        .is_some_and(|s| s.contains("long-term memory"));
    let (status, out) = if is_memory {
        count.fetch_add(1, Ordering::Relaxed);
        script.bodies.lock().unwrap().push(v.clone());
        answer(&v, script)
    } else {
        let reply =
            "ABSTRACT: A directory of memories.\nOVERVIEW:\n# Memories\n\nA directory of memories.";
        let out = json!({"choices": [{"message": {"role": "assistant", "content": reply}}]});
        (200, out.to_string())
    };
    let mut w = stream;
    let head = format!(
        "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        out.len()
    );
    let _ = w.write_all(head.as_bytes());
    let _ = w.write_all(out.as_bytes());
}

fn answer(v: &Value, script: &Script) -> (u16, String) {
    if script.refuse_schema.load(Ordering::Relaxed) && v["response_format"]["type"] == "json_schema"
    {
        return (
            400,
            json!({"error": {"message": "response_format json_schema unsupported"}}).to_string(),
        );
    }
    let mode = script
        .next
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| script.default.lock().unwrap().clone())
        .unwrap_or(Answer::Good);
    // The first user message holds the conversation (repair turns come later).
    let system = v["messages"][0]["content"].as_str().unwrap_or("");
    let prompt = v["messages"][1]["content"].as_str().unwrap_or("");
    let good = scripted_operations(system, prompt).to_string();
    let content = match mode {
        Answer::Good => good,
        Answer::Slow(d) => {
            std::thread::sleep(d);
            good
        }
        Answer::Prose => "The user seems to like coffee and mentioned a trip.".to_string(),
        Answer::Truncated => good[..good.len() / 2].to_string(),
        Answer::WrongSchema => json!({"memories": [{"text": "likes coffee"}]}).to_string(),
        Answer::Error500 => return (500, json!({"error": "boom"}).to_string()),
    };
    let out = json!({
        "choices": [{"message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    });
    (200, out.to_string())
}
