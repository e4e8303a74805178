//! Settings of find/search: the local index (`[search]`) and the optional embedding model
//! (`[embedding]`, named as OpenViking names it).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSettings {
    /// Directory of this instance's index (a derived cache on local disk). Absent: one
    /// claimed under `<storage.data_dir>/.longship/search/` (see `search::index_dirs`),
    /// kept across restarts on any port, distinct per live process on one host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_dir: Option<PathBuf>,
    /// Longest time a change made on another instance stays invisible here.
    pub refresh_interval_ms: u64,
    /// Period of the full reconcile that repairs changes whose writer died before recording
    /// them (also the bound on that repair).
    pub reconcile_interval_secs: u64,
    /// Change records older than this are pruned; an instance away longer reconciles fully.
    pub change_retention_secs: u64,
    /// Memory budget of the index writer in MiB.
    pub writer_memory_mb: usize,
    /// Largest file (bytes) whose text is indexed; larger files are indexed by name and their
    /// first bytes only.
    pub max_indexed_bytes: usize,
    /// Most bytes of one hit's file a find with `read_content` attaches; longer content is cut
    /// and marked.
    pub find_content_max_bytes_per_hit: usize,
    /// Most content bytes one find answer attaches over all its hits; hits past it carry only
    /// the marker.
    pub find_content_max_bytes: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            index_dir: None,
            refresh_interval_ms: 1000,
            reconcile_interval_secs: 300,
            change_retention_secs: 3600,
            writer_memory_mb: 32,
            max_indexed_bytes: 1024 * 1024,
            find_content_max_bytes_per_hit: 64 * 1024,
            find_content_max_bytes: 4 * 1024 * 1024,
        }
    }
}

impl SearchSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.refresh_interval_ms < 10 {
            return bad("search.refresh_interval_ms must be at least 10");
        }
        if self.reconcile_interval_secs < 10 {
            return bad("search.reconcile_interval_secs must be at least 10");
        }
        if self.change_retention_secs < 60 {
            return bad("search.change_retention_secs must be at least 60");
        }
        if !(16..=1024).contains(&self.writer_memory_mb) {
            return bad("search.writer_memory_mb must be between 16 and 1024");
        }
        if self.max_indexed_bytes < 1024 {
            return bad("search.max_indexed_bytes must be at least 1024");
        }
        if self.find_content_max_bytes_per_hit < 1024
            || self.find_content_max_bytes < self.find_content_max_bytes_per_hit
        {
            return bad(
                "search.find_content_max_bytes_per_hit must be at least 1024 and at most \
                 search.find_content_max_bytes",
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingSettings {
    pub dense: DenseSettings,
    /// Ceiling of embedding requests in flight at once (embedder threads: this, at most 4);
    /// the embedder starts at one and adapts (`search::embed::pace`).
    pub max_concurrent: usize,
    /// Attempts of one batch at an unreachable or erroring provider before it waits for the
    /// next background retry (timeouts and 429/503 adapt the pace instead).
    pub max_retries: usize,
    /// Age a stored vector object must reach before the garbage-collection sweep may delete
    /// it when no indexed document references it (or it belongs to another model), so a
    /// vector another instance just stored for a change this index has not tailed yet is kept.
    pub vector_gc_grace_secs: u64,
}

impl Default for EmbeddingSettings {
    fn default() -> Self {
        EmbeddingSettings {
            dense: DenseSettings::default(),
            max_concurrent: 10,
            max_retries: 3,
            vector_gc_grace_secs: 3600,
        }
    }
}

/// An OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, Ollama, vLLM, LM Studio…).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenseSettings {
    /// `"openai"` (any OpenAI-compatible endpoint); absent = no dense retrieval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Base URL, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    pub api_base: String,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Vector length the model returns (0 = accept what it returns).
    pub dimension: usize,
    /// OpenViking 0.5.2's `embedding.dense.input` (`"text"` or `"multimodal"`, its default).
    /// Longship embeds text, for which both give the same vectors; the value is what .ovpack
    /// vector snapshots declare and must match for vectors to be reused across servers.
    pub input: String,
    /// Ceiling of texts per request (the batch adapts below it).
    pub batch_size: usize,
    /// Milliseconds allowed per text: a request of n texts times out after n × this (raised
    /// while one text alone times out; `search::embed::pace`).
    pub timeout_ms: u64,
}

impl Default for DenseSettings {
    fn default() -> Self {
        DenseSettings {
            provider: None,
            api_base: String::new(),
            model: String::new(),
            api_key: None,
            dimension: 0,
            input: "multimodal".into(),
            batch_size: 32,
            timeout_ms: 2_000,
        }
    }
}

/// Never prints the key.
impl std::fmt::Debug for DenseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenseSettings")
            .field("provider", &self.provider)
            .field("api_base", &self.api_base)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "********"))
            .field("dimension", &self.dimension)
            .field("input", &self.input)
            .field("batch_size", &self.batch_size)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl EmbeddingSettings {
    /// True when a dense model is configured.
    pub fn enabled(&self) -> bool {
        self.dense.provider.is_some()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let Some(provider) = self.dense.provider.as_deref() else {
            return Ok(());
        };
        if provider != "openai" {
            return bad(format!(
                "embedding.dense.provider {provider:?} is not supported; use \"openai\" (any OpenAI-compatible endpoint)"
            ));
        }
        let base = self.dense.api_base.to_ascii_lowercase();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return bad("embedding.dense.api_base must start with http:// or https://".into());
        }
        if self.dense.model.trim().is_empty() {
            return bad("embedding.dense.model is required with a provider".into());
        }
        if !(1..=2048).contains(&self.dense.batch_size) {
            return bad("embedding.dense.batch_size must be between 1 and 2048".into());
        }
        if !(1..=600_000).contains(&self.dense.timeout_ms) {
            return bad("embedding.dense.timeout_ms must be between 1 and 600000".into());
        }
        if !matches!(self.dense.input.as_str(), "text" | "multimodal") {
            return bad("embedding.dense.input must be \"text\" or \"multimodal\"".into());
        }
        if self.dense.dimension > 65_536 {
            return bad("embedding.dense.dimension must be at most 65536".into());
        }
        if self.max_concurrent == 0 || self.max_retries == 0 {
            return bad(
                "embedding.max_concurrent and embedding.max_retries must be at least 1".into(),
            );
        }
        Ok(())
    }
}
