//! Content jobs (spec §7 C1–C5) over `storage::fs::{read, write}`, and large-body decoding.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::QuotaSettings;
use crate::decode::parse_json;
use crate::error::{ServiceError, ServiceResult};
use crate::search::changes::{ChangeKind, Recorder};
use crate::storage::fs::read::{self, Sidecar};
use crate::storage::fs::write::{self, WriteMode};
use crate::storage::tags::{self, TagMode};
use crate::storage::uri::VikingUri;

use super::search::{record_outcome, RecordWhen};
use super::{BlockingJob, JobContext};

/// C1: lines `[offset, offset+limit)` of a file, already JSON-encoded as a string.
pub struct ReadFile {
    pub uri: VikingUri,
    pub offset: usize,
    /// `None` = to the end.
    pub limit: Option<usize>,
}

impl BlockingJob for ReadFile {
    type Output = ServiceResult<Vec<u8>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        read::read_lines(ctx.storage, &self.uri, self.offset, self.limit)
    }
}

/// C2/C3: a directory's abstract or overview body.
pub struct ReadSidecar {
    pub uri: VikingUri,
    pub which: Sidecar,
}

impl BlockingJob for ReadSidecar {
    type Output = ServiceResult<String>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        read::read_sidecar(ctx.storage, &self.uri, self.which)
    }
}

/// C4: the raw bytes of a file.
pub struct DownloadFile {
    pub uri: VikingUri,
}

impl BlockingJob for DownloadFile {
    type Output = ServiceResult<Vec<u8>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        read::download(ctx.storage, &self.uri)
    }
}

/// C5: write `content` to a file.
pub struct WriteFile {
    pub uri: VikingUri,
    pub content: String,
    pub mode: WriteMode,
    /// The account's content quota (`[quota]`).
    pub quota: QuotaSettings,
    /// Tags to apply after the write (normalised, no reserved keys) and how.
    pub tags: Option<(Vec<String>, TagMode)>,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for WriteFile {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = write::write_file(
            ctx.storage,
            &self.uri,
            &self.content,
            self.mode,
            &self.quota,
        );
        // Tags after the content (the file exists then); recorded once, after both, whether
        // or not the tags could be written (the content changed either way).
        let tagged = match (&out, &self.tags) {
            // 0.5.2: replacing with no tags leaves the tags as they are.
            (Ok(_), Some((tags, mode))) if !(*mode == TagMode::Replace && tags.is_empty()) => {
                tags::set_user_tags(ctx.storage, self.uri.store_path(), tags, *mode).map(drop)
            }
            _ => Ok(()),
        };
        let changed = [self.uri.store_path().clone()];
        let kind = ChangeKind::Write;
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            kind,
            RecordWhen::OnSuccess,
        );
        tagged?;
        out
    }
}

/// Decode a large JSON request body on a pool thread (serde on a 100 MB body would stall
/// every connection of the HTTP worker running it).
pub struct DecodeJson<T> {
    pub body: Bytes,
    _into: PhantomData<fn() -> T>,
}

impl<T> DecodeJson<T> {
    pub fn new(body: Bytes) -> Self {
        DecodeJson {
            body,
            _into: PhantomData,
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> BlockingJob for DecodeJson<T> {
    type Output = Result<T, ServiceError>;

    fn run(self, _ctx: &JobContext<'_>) -> Self::Output {
        parse_json(&self.body)
    }
}
