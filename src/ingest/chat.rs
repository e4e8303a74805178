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
    /// One completion of `prompt` (with a system message); the reply's text.
    pub fn complete(&self, system: &str, prompt: &str) -> Result<String, String> {
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
                        Some(text) if !text.trim().is_empty() => return Ok(text.to_string()),
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
