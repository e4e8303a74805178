//! WebDAV jobs (issue #24) over `storage::webdav`; each records what it changed for search
//! (which also marks the parents' summaries for refresh, as every recorded change does).

use std::sync::Arc;

use bytes::Bytes;

use super::search::{record_outcome, RecordWhen};
use super::{BlockingJob, JobContext};
use crate::config::QuotaSettings;
use crate::error::ServiceResult;
use crate::identity::Identity;
use crate::search::changes::{ChangeKind, Recorder};
use crate::storage::fs::{read, stat};
use crate::storage::uri::VikingUri;
use crate::storage::webdav::{self, multistatus, Outcome};
use crate::storage::Meta;

/// PROPFIND: the multistatus document, or `None` for a missing node.
pub struct Propfind {
    pub who: Identity,
    pub uri: VikingUri,
    pub href_base: String,
    pub children: bool,
    pub limit: usize,
}

impl BlockingJob for Propfind {
    type Output = ServiceResult<Option<Vec<u8>>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let req = multistatus::Request {
            uri: &self.uri,
            href_base: &self.href_base,
            children: self.children,
            limit: self.limit,
        };
        multistatus::propfind(ctx.storage, &self.who, &req)
    }
}

/// GET/HEAD: the node's metadata and, for a file on GET, its bytes.
pub struct FetchFile {
    pub uri: VikingUri,
    pub with_body: bool,
}

impl BlockingJob for FetchFile {
    type Output = ServiceResult<Option<(Meta, Option<Vec<u8>>)>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let Some(meta) = stat(ctx.storage, &self.uri)? else {
            return Ok(None);
        };
        if meta.is_dir() || !self.with_body {
            return Ok(Some((meta, None)));
        }
        let body = read::download(ctx.storage, &self.uri)?;
        Ok(Some((meta, Some(body))))
    }
}

/// PUT: store the body byte-exact.
pub struct PutFile {
    pub uri: VikingUri,
    pub data: Bytes,
    pub quota: QuotaSettings,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for PutFile {
    type Output = ServiceResult<Outcome>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = webdav::put_file(ctx.storage, &self.uri, &self.data, &self.quota);
        let changed = [self.uri.store_path().clone()];
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            ChangeKind::Write,
            RecordWhen::OnSuccess,
        );
        out
    }
}

/// MKCOL.
pub struct MakeCollection {
    pub uri: VikingUri,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for MakeCollection {
    type Output = ServiceResult<()>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = webdav::make_collection(ctx.storage, &self.uri);
        let changed = [self.uri.store_path().clone()];
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            ChangeKind::Mkdir,
            RecordWhen::OnSuccess,
        );
        out
    }
}

/// MOVE with RFC 4918 `Overwrite`.
pub struct MoveNode {
    pub from: VikingUri,
    pub to: VikingUri,
    pub overwrite: bool,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for MoveNode {
    type Output = ServiceResult<Outcome>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = webdav::move_to(ctx.storage, &self.from, &self.to, self.overwrite);
        let changed = [self.from.store_path().clone(), self.to.store_path().clone()];
        // Replacing removes the old target before the rename: a failure there may leave it
        // half done.
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            ChangeKind::Move,
            RecordWhen::EvenIfPartial,
        );
        out
    }
}

/// COPY with RFC 4918 `Overwrite` and Depth (0: a collection without its members).
pub struct CopyNode {
    pub from: VikingUri,
    pub to: VikingUri,
    pub overwrite: bool,
    pub deep: bool,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for CopyNode {
    type Output = ServiceResult<Outcome>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = webdav::copy_to(
            ctx.storage,
            &self.from,
            &self.to,
            self.overwrite,
            self.deep,
            ctx.yielder(),
        );
        // A copy that failed part-way may have written some files.
        let changed = [self.to.store_path().clone()];
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            ChangeKind::Copy,
            RecordWhen::EvenIfPartial,
        );
        out
    }
}
