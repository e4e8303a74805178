//! The client of an OpenAI-compatible `/v1/embeddings` endpoint: one request for a list of
//! texts, its outcome classified so the embedder can adapt (a timeout, a throttle with its
//! `Retry-After`, an unreachable provider, a bad answer).

use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use super::vectors::normalize;
use crate::config::DenseSettings;
use crate::net::client;

/// Why an embedding request failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding provider did not answer within {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// 429 or 503: the provider asks for less (and maybe says when to come back).
    #[error("embedding provider is throttling (HTTP {status})")]
    Throttled {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("embedding provider unavailable: {0}")]
    Unavailable(String),
    #[error("embedding provider answered badly: {0}")]
    BadAnswer(String),
}

/// Largest answer read for `texts` vectors: 32 bytes per number of the configured dimension
/// (4096 when any is accepted), at least 16 MiB.
fn answer_limit(texts: usize, dimension: usize) -> u64 {
    let dim = if dimension == 0 { 4096 } else { dimension };
    (texts.max(1) as u64 * dim as u64 * 32).max(16 << 20)
}

/// A provider's answer: the vectors in input order, and the input tokens it reports
/// (`usage.prompt_tokens`, else `usage.total_tokens`; `None` when it reports none).
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: Option<u64>,
}

/// Input tokens of `text` when the provider reports none: about four bytes a token (the
/// usual rule of thumb for BPE models on English text), at least one. An estimate, marked as
/// such in the docs; a provider's own count always wins.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

pub struct Provider {
    cfg: DenseSettings,
    /// Built on first use, on the blocking thread that needs it.
    http: OnceLock<reqwest::blocking::Client>,
}

impl Provider {
    pub fn new(cfg: &DenseSettings) -> Provider {
        Provider {
            cfg: cfg.clone(),
            http: OnceLock::new(),
        }
    }

    fn http(&self) -> Result<&reqwest::blocking::Client, EmbedError> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let built = client::blocking_builder(Duration::from_secs(3))
            .build()
            .map_err(|e| {
                EmbedError::Unavailable(format!("HTTP client: {}", client::describe(&e)))
            })?;
        Ok(self.http.get_or_init(|| built))
    }

    /// One request for `texts`, abandoned after `timeout`.
    pub fn embed(&self, texts: &[String], timeout: Duration) -> Result<Embedded, EmbedError> {
        let url = format!("{}/embeddings", self.cfg.api_base.trim_end_matches('/'));
        let body = json!({"model": self.cfg.model, "input": texts});
        let mut req = self
            .http()?
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(key) = self.cfg.api_key.as_deref().filter(|k| !k.is_empty()) {
            req = req.bearer_auth(key);
        }
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                EmbedError::TimedOut(timeout)
            } else {
                EmbedError::Unavailable(client::describe(&e))
            }
        };
        let resp = req.send().map_err(failed)?;
        let status = resp.status().as_u16();
        if status == 429 || status == 503 {
            return Err(EmbedError::Throttled {
                status,
                retry_after: client::retry_after(resp.headers()),
            });
        }
        if !resp.status().is_success() {
            let mut head = Vec::new();
            let _ = resp.take(800).read_to_end(&mut head);
            let short: String = String::from_utf8_lossy(&head).chars().take(200).collect();
            return Err(EmbedError::Unavailable(format!("HTTP {status}: {short}")));
        }
        let limit = answer_limit(texts.len(), self.cfg.dimension);
        let mut body = Vec::new();
        resp.take(limit + 1).read_to_end(&mut body).map_err(|e| {
            match e.get_ref().and_then(|e| e.downcast_ref::<reqwest::Error>()) {
                Some(re) if re.is_timeout() => EmbedError::TimedOut(timeout),
                _ => EmbedError::Unavailable(e.to_string()),
            }
        })?;
        if body.len() as u64 > limit {
            return Err(EmbedError::BadAnswer(format!(
                "answer larger than {limit} bytes"
            )));
        }
        self.parse(&body, texts.len())
    }

    /// The vectors of an answer, in input order, normalised, and its reported token usage.
    fn parse(&self, body: &[u8], inputs: usize) -> Result<Embedded, EmbedError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| EmbedError::BadAnswer(e.to_string()))?;
        let prompt_tokens = v["usage"]["prompt_tokens"]
            .as_u64()
            .or_else(|| v["usage"]["total_tokens"].as_u64());
        let data = v["data"]
            .as_array()
            .ok_or_else(|| EmbedError::BadAnswer("no data array".into()))?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; inputs];
        for (n, item) in data.iter().enumerate() {
            let i = item["index"].as_u64().map(|i| i as usize).unwrap_or(n);
            let emb = item["embedding"]
                .as_array()
                .ok_or_else(|| EmbedError::BadAnswer("no embedding".into()))?;
            let v: Vec<f32> = emb
                .iter()
                .filter_map(|x| x.as_f64())
                .map(|x| x as f32)
                .collect();
            if v.len() != emb.len() || v.is_empty() {
                return Err(EmbedError::BadAnswer("non-numeric embedding".into()));
            }
            if self.cfg.dimension != 0 && v.len() != self.cfg.dimension {
                return Err(EmbedError::BadAnswer(format!(
                    "model returned {} dimensions, embedding.dense.dimension is {}",
                    v.len(),
                    self.cfg.dimension
                )));
            }
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(normalize(v));
            }
        }
        let vectors = out
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| EmbedError::BadAnswer("fewer embeddings than inputs".into()))?;
        Ok(Embedded {
            vectors,
            prompt_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(dimension: usize) -> Provider {
        Provider::new(&DenseSettings {
            dimension,
            ..DenseSettings::default()
        })
    }

    #[test]
    fn answers_are_put_in_input_order_and_checked() {
        let p = provider(2);
        let body = br#"{"data":[{"index":1,"embedding":[0,2]},{"index":0,"embedding":[3,4]}]}"#;
        let v = p.parse(body, 2).unwrap();
        assert_eq!(v.prompt_tokens, None);
        let v = v.vectors;
        assert_eq!(v[1], vec![0.0, 1.0]);
        assert!((v[0][0] - 0.6).abs() < 1e-6);
        let counted =
            br#"{"data":[{"embedding":[1,0]}],"usage":{"prompt_tokens":7,"total_tokens":7}}"#;
        assert_eq!(p.parse(counted, 1).unwrap().prompt_tokens, Some(7));
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens(""), 1);
        assert!(matches!(
            p.parse(br#"{"data":[{"index":0,"embedding":[1,2]}]}"#, 2),
            Err(EmbedError::BadAnswer(_))
        ));
        assert!(matches!(
            p.parse(br#"{"data":[{"index":0,"embedding":[1,2,3]}]}"#, 1),
            Err(EmbedError::BadAnswer(_))
        ));
        assert!(matches!(
            p.parse(b"<html>", 1),
            Err(EmbedError::BadAnswer(_))
        ));
    }
}
