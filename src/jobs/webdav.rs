//! WebDAV jobs (issue #24) over `storage::webdav`; each records what it changed for search
//! (which also marks the parents' summaries for refresh, as every recorded change does).

use std::sync::Arc;

use bytes::Bytes;

use super::search::{record_outcome, RecordWhen};
use super::{BlockingJob, JobContext};
use crate::config::QuotaSettings;
use crate::error::ServiceResult;
use crate::identity::Identity;
use crate::ingest::uploads;
use crate::search::changes::{ChangeKind, Recorder};
use crate::storage::fs::{read, rm, stat};
use crate::storage::uri::VikingUri;
use crate::storage::webdav::locks::{self, Lock, LockRequest, Touched, WriteCheck};
use crate::storage::webdav::xml::{PropChange, PropName, PropfindKind};
use crate::storage::webdav::{self, multistatus, props, Outcome};
use crate::storage::{Meta, StorePath, Version};

/// PROPFIND: the multistatus document, or `None` for a missing node.
pub struct Propfind {
    pub who: Identity,
    pub uri: VikingUri,
    pub href_base: String,
    pub children: bool,
    pub limit: usize,
    pub kind: PropfindKind,
}

impl BlockingJob for Propfind {
    type Output = ServiceResult<Option<Vec<u8>>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let req = multistatus::Request {
            uri: &self.uri,
            href_base: &self.href_base,
            children: self.children,
            limit: self.limit,
            kind: &self.kind,
        };
        multistatus::propfind(ctx.storage, &self.who, &req)
    }
}

/// Files up to this size are read whole for a GET; larger ones are streamed in pieces of this
/// size, each read by its own job as the client takes the previous one (`ReadPiece`), so a
/// GET holds one piece however large the file.
pub const GET_PIECE_BYTES: u64 = 4 * 1024 * 1024;

/// What a GET/HEAD sends after the headers.
pub enum FetchBody {
    /// HEAD, or a collection (no body).
    None,
    /// A small file's bytes.
    Whole(Vec<u8>),
    /// A large file: stream it with `ReadPiece` (`Meta::version` pins the version).
    Pieces,
}

/// GET/HEAD: the node's metadata and, for a small file on GET, its bytes.
pub struct FetchFile {
    pub uri: VikingUri,
    pub with_body: bool,
}

impl BlockingJob for FetchFile {
    type Output = ServiceResult<Option<(Meta, FetchBody)>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let Some(meta) = stat(ctx.storage, &self.uri)? else {
            return Ok(None);
        };
        if meta.is_dir() || !self.with_body {
            return Ok(Some((meta, FetchBody::None)));
        }
        if meta.size > GET_PIECE_BYTES {
            return Ok(Some((meta, FetchBody::Pieces)));
        }
        let body = read::download(ctx.storage, &self.uri)?;
        Ok(Some((meta, FetchBody::Whole(body))))
    }
}

/// One piece of a streamed GET (see `read::read_piece`).
pub struct ReadPiece {
    pub uri: VikingUri,
    pub offset: u64,
    pub len: u64,
    pub version: Option<Version>,
}

impl BlockingJob for ReadPiece {
    type Output = ServiceResult<Vec<u8>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        read::read_piece(
            ctx.storage,
            &self.uri,
            self.offset,
            self.len,
            self.version.as_ref(),
        )
    }
}

/// PUT: store the body byte-exact.
pub struct PutFile {
    pub uri: VikingUri,
    pub data: Bytes,
    pub check: WriteCheck,
    pub quota: QuotaSettings,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for PutFile {
    type Output = ServiceResult<Outcome>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let exists = stat(ctx.storage, &self.uri)?.is_some();
        self.check.enforce(
            ctx.storage,
            &[Touched {
                node: self.uri.store_path(),
                subtree: false,
                membership: !exists,
            }],
        )?;
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
    pub check: WriteCheck,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for MakeCollection {
    type Output = ServiceResult<()>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        self.check.enforce(
            ctx.storage,
            &[Touched {
                node: self.uri.store_path(),
                subtree: false,
                membership: true,
            }],
        )?;
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
    pub check: WriteCheck,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for MoveNode {
    type Output = ServiceResult<Outcome>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let touched = [&self.from, &self.to].map(|uri| Touched {
            node: uri.store_path(),
            subtree: true,
            membership: true,
        });
        self.check.enforce(ctx.storage, &touched)?;
        let out = webdav::move_to(
            ctx.storage,
            &self.from,
            &self.to,
            self.overwrite,
            ctx.yielder(),
        );
        if out.is_ok() {
            // Locks stay where they were taken (RFC 4918 §9.9.4): the moved nodes lose theirs.
            locks::forget(ctx.storage, self.from.store_path())?;
        }
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
    pub check: WriteCheck,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for CopyNode {
    type Output = ServiceResult<Outcome>;

    fn runs_in_steps(&self) -> bool {
        self.deep
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        self.check.enforce(
            ctx.storage,
            &[Touched {
                node: self.to.store_path(),
                subtree: true,
                membership: true,
            }],
        )?;
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

/// DELETE of a file or a whole collection, after the lock checks; its locks go with it.
pub struct DeleteNode {
    pub uri: VikingUri,
    pub check: WriteCheck,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for DeleteNode {
    /// `None`: nothing there.
    type Output = ServiceResult<Option<()>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let Some(meta) = stat(ctx.storage, &self.uri)? else {
            return Ok(None);
        };
        let node = self.uri.store_path();
        self.check.enforce(
            ctx.storage,
            &[Touched {
                node,
                subtree: meta.is_dir(),
                membership: true,
            }],
        )?;
        let out = rm::remove(ctx.storage, &|| false, &self.uri, meta.is_dir()).map(drop);
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            std::slice::from_ref(node),
            ChangeKind::Remove,
            RecordWhen::EvenIfPartial,
        );
        out?;
        locks::forget(ctx.storage, node)?;
        Ok(Some(()))
    }
}

/// What LOCK does: a new lock (creating an empty resource at an unmapped URL, RFC 4918
/// §7.3) or a refresh of one the caller holds.
pub enum LockAction {
    Take(LockRequest),
    Refresh {
        tokens: Vec<String>,
        timeout_secs: u64,
    },
}

/// LOCK.
pub struct LockNode {
    pub uri: VikingUri,
    pub action: LockAction,
    pub check: WriteCheck,
    pub quota: QuotaSettings,
    pub recorder: Arc<Recorder>,
}

/// A granted or refreshed lock: whether an empty resource was created, the lock's root, the
/// lock.
pub type Granted = (bool, StorePath, Lock);

impl BlockingJob for LockNode {
    type Output = ServiceResult<Granted>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let req = match self.action {
            LockAction::Refresh {
                tokens,
                timeout_secs,
            } => {
                let (root, lock) = locks::refresh(
                    ctx.storage,
                    &self.uri,
                    &tokens,
                    &self.check.user,
                    timeout_secs,
                )?;
                return Ok((false, root, lock));
            }
            LockAction::Take(req) => req,
        };
        let node = self.uri.store_path();
        let mut created = false;
        if stat(ctx.storage, &self.uri)?.is_none() {
            // A lock-null resource: an empty file, created under the same checks as a PUT.
            self.check.enforce(
                ctx.storage,
                &[Touched {
                    node,
                    subtree: false,
                    membership: true,
                }],
            )?;
            let out = webdav::put_file(ctx.storage, &self.uri, b"", &self.quota);
            record_outcome(
                &self.recorder,
                ctx,
                &out,
                std::slice::from_ref(node),
                ChangeKind::Write,
                RecordWhen::OnSuccess,
            );
            created = out? == Outcome::Created;
        }
        match locks::take(ctx.storage, &self.uri, &req) {
            Ok(lock) => Ok((created, node.clone(), lock)),
            Err(e) => {
                if created {
                    let gone = rm::remove(ctx.storage, &|| false, &self.uri, false).map(drop);
                    record_outcome(
                        &self.recorder,
                        ctx,
                        &gone,
                        std::slice::from_ref(node),
                        ChangeKind::Remove,
                        RecordWhen::OnSuccess,
                    );
                }
                Err(e)
            }
        }
    }
}

/// UNLOCK.
pub struct UnlockNode {
    pub uri: VikingUri,
    pub token: String,
    pub user: String,
}

impl BlockingJob for UnlockNode {
    type Output = ServiceResult<()>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        locks::release(ctx.storage, &self.uri, &self.token, &self.user)
    }
}

/// What a PROPPATCH did: applied, or refused as a whole because these properties are
/// protected (live) ones.
pub enum Patched {
    Applied,
    Protected(Vec<PropName>),
}

/// PROPPATCH: dead properties, all or nothing; live ones are protected.
pub struct PatchProps {
    pub uri: VikingUri,
    pub changes: Vec<PropChange>,
    pub check: WriteCheck,
}

impl BlockingJob for PatchProps {
    /// `None`: nothing there.
    type Output = ServiceResult<Option<Patched>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        if stat(ctx.storage, &self.uri)?.is_none() {
            return Ok(None);
        }
        let node = self.uri.store_path();
        self.check.enforce(
            ctx.storage,
            &[Touched {
                node,
                subtree: false,
                membership: false,
            }],
        )?;
        let protected: Vec<PropName> = self
            .changes
            .iter()
            .map(|c| match c {
                PropChange::Set(n, _) | PropChange::Remove(n) => n,
            })
            .filter(|(ns, name)| ns == "DAV:" && multistatus::LIVE_NAMES.contains(&name.as_str()))
            .cloned()
            .collect();
        if !protected.is_empty() {
            return Ok(Some(Patched::Protected(protected)));
        }
        props::patch(ctx.storage, node, &self.changes)?;
        Ok(Some(Patched::Applied))
    }
}

/// PUT of a body larger than `server.max_body_bytes`, staged as temp-upload pieces
/// (`ingest::uploads`): streamed piece by piece into one atomic write of the target, then the
/// staging is removed (whatever the outcome; the upload sweep removes what a crash left).
pub struct PutStaged {
    pub uri: VikingUri,
    pub upload_id: String,
    pub parts: u32,
    pub size: u64,
    pub check: WriteCheck,
    pub quota: QuotaSettings,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for PutStaged {
    type Output = ServiceResult<Outcome>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let account = self.check.account().to_string();
        let out = (|| {
            let exists = stat(ctx.storage, &self.uri)?.is_some();
            self.check.enforce(
                ctx.storage,
                &[Touched {
                    node: self.uri.store_path(),
                    subtree: false,
                    membership: !exists,
                }],
            )?;
            let mut next = 0u32;
            let mut read_bytes = 0u64;
            let mut next_piece = || -> ServiceResult<Option<Vec<u8>>> {
                if next == self.parts {
                    if read_bytes != self.size {
                        return Err(crate::error::ServiceError::internal(format!(
                            "staged PUT is damaged: {read_bytes} of {} bytes",
                            self.size
                        )));
                    }
                    return Ok(None);
                }
                let piece = uploads::read_part(ctx.storage, &account, &self.upload_id, next)?;
                next += 1;
                read_bytes += piece.len() as u64;
                Ok(Some(piece))
            };
            webdav::put_pieces(
                ctx.storage,
                &self.uri,
                self.size,
                &self.quota,
                &mut next_piece,
            )
        })();
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            std::slice::from_ref(self.uri.store_path()),
            ChangeKind::Write,
            RecordWhen::OnSuccess,
        );
        if let Err(e) = uploads::remove(ctx.storage, &account, &self.upload_id) {
            tracing::warn!(error = %e.message, "staged PUT pieces not removed (the upload sweep will)");
        }
        out
    }
}
