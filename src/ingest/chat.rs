//! A small client for an OpenAI-compatible `/chat/completions` endpoint (the `vlm` settings):
//! bounded concurrency per instance, a timeout per request, retries with backoff. The API key
//! is sent as a bearer token and never logged or echoed in errors.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::VlmSettings;
use crate::net::client;
use crate::slots::Slots;

/// Shared by every ingestion of the instance.
#[derive(Clone)]
pub struct ChatClient {
    settings: Arc<VlmSettings>,
    /// Requests in flight on this instance (`vlm.max_concurrent`).
    slots: Arc<Slots>,
    /// The structured-output mode this provider accepted last (see `MODE_*`).
    mode: Arc<std::sync::atomic::AtomicU8>,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("settings", &self.settings)
            .finish()
    }
}

impl ChatClient {
    /// `None` when no model is configured.
    pub fn from_settings(settings: &VlmSettings) -> Option<ChatClient> {
        if !settings.enabled() {
            return None;
        }
        Some(ChatClient {
            settings: Arc::new(settings.clone()),
            slots: Arc::new(Slots::new(settings.max_concurrent, settings.max_concurrent)),
            mode: Arc::new(std::sync::atomic::AtomicU8::new(MODE_SCHEMA)),
        })
    }

    pub fn model(&self) -> &str {
        self.settings.model.as_deref().unwrap_or("")
    }

    fn endpoint(&self) -> String {
        let base = self
            .settings
            .api_base
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('/');
        if base.ends_with("/chat/completions") {
            base.to_string()
        } else {
            format!("{base}/chat/completions")
        }
    }

    /// An HTTP session for one ingestion. Built and dropped on the pool thread that uses it:
    /// a blocking client owns a runtime, which must never be dropped on an async thread.
    pub fn session(&self) -> Result<ChatSession<'_>, String> {
        let http =
            client::blocking_builder(Duration::from_secs_f64(self.settings.timeout.min(10.0)))
                .timeout(Duration::from_secs_f64(self.settings.timeout))
                .build()
                .map_err(|e| format!("chat client: {}", client::describe(&e)))?;
        Ok(ChatSession { chat: self, http })
    }
}

/// A [`ChatClient`] with its HTTP client, for one job.
pub struct ChatSession<'a> {
    chat: &'a ChatClient,
    http: reqwest::blocking::Client,
}

impl ChatSession<'_> {
    pub fn model(&self) -> &str {
        self.chat.model()
    }

    /// One completion of `prompt` (with a system message); the reply's text.
    pub fn complete(&self, system: &str, prompt: &str) -> Result<String, String> {
        self.complete_counted(system, prompt).map(|(text, _)| text)
    }

    /// [`ChatSession::complete`] with the tokens spent: (input, output) as the provider
    /// reported them, estimated (4 bytes a token) when it reported none.
    pub fn complete_counted(
        &self,
        system: &str,
        prompt: &str,
    ) -> Result<(String, (u64, u64)), String> {
        let chat = self.chat;
        let body = json!({
            "model": chat.model(),
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": prompt}
            ],
            "temperature": chat.settings.temperature,
            "max_tokens": chat.settings.max_tokens,
        });
        let mut last = String::new();
        for attempt in 0..=chat.settings.max_retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 * (1 << attempt.min(5))));
            }
            let _slot = chat.slots.acquire();
            let mut req = self
                .http
                .post(chat.endpoint())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            if let Some(key) = chat.settings.api_key.as_deref().filter(|k| !k.is_empty()) {
                req = req.bearer_auth(key);
            }
            match req.send() {
                Ok(resp) if resp.status().is_success() => {
                    let v: Value = match resp
                        .bytes()
                        .map_err(|e| client::describe(&e))
                        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                    {
                        Ok(v) => v,
                        Err(e) => {
                            last = format!("unreadable answer: {e}");
                            continue;
                        }
                    };
                    match v["choices"][0]["message"]["content"].as_str() {
                        Some(text) if !text.trim().is_empty() => {
                            let input = v["usage"]["prompt_tokens"]
                                .as_u64()
                                .unwrap_or((system.len() + prompt.len()) as u64 / 4);
                            let output = v["usage"]["completion_tokens"]
                                .as_u64()
                                .unwrap_or(text.len() as u64 / 4);
                            return Ok((text.to_string(), (input, output)));
                        }
                        _ => last = "the answer had no message content".into(),
                    }
                }
                Ok(resp) => {
                    last = format!("HTTP {}", resp.status().as_u16());
                    // Client errors other than rate limits will not improve with a retry.
                    let s = resp.status().as_u16();
                    if (400..500).contains(&s) && s != 429 && s != 408 {
                        break;
                    }
                }
                Err(e) if e.is_timeout() => last = "timed out".into(),
                Err(e) => last = client::describe(&e),
            }
        }
        Err(format!("chat model {} failed: {last}", chat.model()))
    }
}

/// How a [`ChatSession::complete_structured`] call failed, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatFailure {
    /// Every attempt timed out.
    Timeout(String),
    /// The provider answered errors, unreadable bodies, or could not be reached.
    Provider(String),
}

impl ChatFailure {
    pub fn message(&self) -> &str {
        match self {
            ChatFailure::Timeout(m) | ChatFailure::Provider(m) => m,
        }
    }
}

/// One structured answer: its text and the tokens the provider reported (estimated when it
/// reports none).
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    pub total_tokens: u64,
    /// The input and output parts (the console's token view).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Structured-output modes, strongest first; a provider refusing one (HTTP 400/422) is asked
/// again with the next, and the instance remembers where it got to.
const MODE_SCHEMA: u8 = 0;
const MODE_JSON_OBJECT: u8 = 1;
const MODE_TEXT: u8 = 2;

impl ChatClient {
    fn structured_mode(&self) -> u8 {
        self.mode.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lower_mode(&self, from: u8) {
        let _ = self.mode.compare_exchange(
            from,
            (from + 1).min(MODE_TEXT),
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl ChatSession<'_> {
    /// One completion of `messages` asking for JSON matching `schema` (named `name`): as a JSON
    /// schema where the provider takes one, else JSON mode, else plain text. The caller
    /// validates the answer; this only reports transport-level failures, by kind.
    pub fn complete_structured(
        &self,
        messages: &[Value],
        name: &str,
        schema: &Value,
    ) -> Result<Completion, ChatFailure> {
        let chat = self.chat;
        let mut last = ChatFailure::Provider("no attempt made".into());
        let mut attempt = 0;
        while attempt <= chat.settings.max_retries {
            let mode = chat.structured_mode();
            let mut body = json!({
                "model": chat.model(),
                "messages": messages,
                "temperature": chat.settings.temperature,
                "max_tokens": chat.settings.max_tokens,
            });
            match mode {
                MODE_SCHEMA => {
                    body["response_format"] = json!({"type": "json_schema",
                        "json_schema": {"name": name, "schema": schema, "strict": false}});
                }
                MODE_JSON_OBJECT => body["response_format"] = json!({"type": "json_object"}),
                _ => {}
            }
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 * (1 << attempt.min(5))));
            }
            let _slot = chat.slots.acquire();
            let mut req = self
                .http
                .post(chat.endpoint())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            if let Some(key) = chat.settings.api_key.as_deref().filter(|k| !k.is_empty()) {
                req = req.bearer_auth(key);
            }
            match req.send() {
                Ok(resp) if resp.status().is_success() => {
                    let v: Result<Value, String> = resp
                        .bytes()
                        .map_err(|e| client::describe(&e))
                        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
                    match v {
                        Ok(v) => {
                            let text = v["choices"][0]["message"]["content"]
                                .as_str()
                                .unwrap_or("")
                                .to_string();
                            let prompt_tokens = v["usage"]["prompt_tokens"]
                                .as_u64()
                                .unwrap_or(body["messages"].to_string().len() as u64 / 4);
                            let completion_tokens = v["usage"]["completion_tokens"]
                                .as_u64()
                                .unwrap_or(text.len() as u64 / 4);
                            let total_tokens = v["usage"]["total_tokens"]
                                .as_u64()
                                .unwrap_or(prompt_tokens + completion_tokens);
                            return Ok(Completion {
                                text,
                                total_tokens,
                                prompt_tokens,
                                completion_tokens,
                            });
                        }
                        Err(e) => last = ChatFailure::Provider(format!("unreadable answer: {e}")),
                    }
                }
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    if (s == 400 || s == 422) && mode < MODE_TEXT {
                        // Most likely the structured-output option: ask again without it, at
                        // no cost to the retry budget.
                        chat.lower_mode(mode);
                        continue;
                    }
                    last = ChatFailure::Provider(format!("HTTP {s}"));
                    if (400..500).contains(&s) && s != 429 && s != 408 {
                        break;
                    }
                }
                Err(e) if e.is_timeout() => last = ChatFailure::Timeout("timed out".into()),
                Err(e) => last = ChatFailure::Provider(client::describe(&e)),
            }
            attempt += 1;
        }
        Err(match last {
            ChatFailure::Timeout(m) => {
                ChatFailure::Timeout(format!("chat model {} {m}", chat.model()))
            }
            ChatFailure::Provider(m) => {
                ChatFailure::Provider(format!("chat model {} failed: {m}", chat.model()))
            }
        })
    }
}
