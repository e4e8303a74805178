//! Filesystem and grep/glob jobs (spec §6, §8 S1/S2) over `storage::fs`.

use std::sync::Arc;

use serde_json::Value;

use crate::error::ServiceResult;
use crate::identity::Identity;
use crate::storage::fs::entry::Render;
use crate::storage::fs::grep::GrepQuery;
use crate::storage::fs::listing::{Page, PageOpts, SortBy};
use crate::storage::fs::{cp, glob, grep, listing, mkdir, mv, rm, stat};
use crate::storage::tags::TagQuery;
use crate::storage::uri::VikingUri;

use super::search::{record_outcome, RecordWhen};
use super::{BlockingJob, JobContext};
use crate::search::changes::{ChangeKind, Recorder};

/// F1 (non-recursive) ls of one directory.
pub struct ListDir {
    pub who: Identity,
    pub uri: VikingUri,
    pub page: PageOpts,
    pub sort_by: Option<SortBy>,
    pub descending: bool,
}

impl BlockingJob for ListDir {
    type Output = ServiceResult<Page>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        listing::ls(
            ctx.storage,
            &self.who,
            &self.uri,
            &self.page,
            self.sort_by,
            self.descending,
        )
    }
}

/// F2 tree (and F1 with `recursive=true`).
pub struct ListTree {
    pub who: Identity,
    pub uri: VikingUri,
    pub page: PageOpts,
    pub level_limit: usize,
    pub directories_only: bool,
}

impl BlockingJob for ListTree {
    type Output = ServiceResult<Page>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        listing::tree(
            ctx.storage,
            ctx.abandoned(),
            &self.who,
            &self.uri,
            &self.page,
            self.level_limit,
            self.directories_only,
        )
    }
}

/// F3: metadata of one file or directory.
pub struct StatEntry {
    pub uri: VikingUri,
}

impl BlockingJob for StatEntry {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        stat::stat_entry(ctx.storage, &self.uri)
    }
}

/// F4: create a directory (and missing parents) with its abstract sidecar.
pub struct MakeDir {
    pub uri: VikingUri,
    pub description: Option<String>,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for MakeDir {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = mkdir::make_dir(ctx.storage, &self.uri, self.description.as_deref());
        let changed = [self.uri.store_path().clone()];
        let kind = ChangeKind::Mkdir;
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            kind,
            RecordWhen::OnSuccess,
        );
        out
    }
}

/// F5: remove a file or (with `recursive`) a directory tree; missing is success.
pub struct RemoveEntry {
    pub uri: VikingUri,
    pub recursive: bool,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for RemoveEntry {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        self.recursive
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = rm::remove(ctx.storage, ctx.abandoned(), &self.uri, self.recursive);
        // A failed recursive removal may have removed part of the tree.
        let changed = [self.uri.store_path().clone()];
        let kind = ChangeKind::Remove;
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            kind,
            RecordWhen::EvenIfPartial,
        );
        out
    }
}

/// F6: move `from` to `to`; the handler has checked rights, identity and overlap.
pub struct MoveEntry {
    pub from: VikingUri,
    pub to: VikingUri,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for MoveEntry {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = mv::move_entry(ctx.storage, &self.from, &self.to, ctx.yielder());
        let changed = [self.from.store_path().clone(), self.to.store_path().clone()];
        let kind = ChangeKind::Move;
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            kind,
            RecordWhen::OnSuccess,
        );
        out
    }
}

/// R7: copy a file or directory tree (create-only per file).
pub struct CopyFiles {
    pub from: VikingUri,
    pub to: VikingUri,
    pub recursive: bool,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for CopyFiles {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        self.recursive
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = cp::copy_entry(
            ctx.storage,
            &self.from,
            &self.to,
            self.recursive,
            ctx.yielder(),
        );
        // A copy that failed part-way may have written some files.
        let changed = [self.to.store_path().clone()];
        let kind = ChangeKind::Copy;
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            kind,
            RecordWhen::EvenIfPartial,
        );
        out
    }
}

/// S1: grep a file or subtree; the result JSON-encoded.
pub struct GrepFiles {
    pub who: Identity,
    pub uri: VikingUri,
    pub query: GrepQuery,
}

impl BlockingJob for GrepFiles {
    type Output = ServiceResult<Vec<u8>>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        grep::grep(
            ctx.storage,
            ctx.abandoned(),
            &self.who,
            &self.uri,
            &self.query,
        )
    }
}

/// S2: glob below a directory; the result JSON-encoded.
pub struct GlobFiles {
    pub who: Identity,
    pub uri: VikingUri,
    pub pattern: String,
    /// `None` = unlimited.
    pub node_limit: Option<usize>,
    /// `extra_fields` given: stat-like objects instead of URI strings.
    pub render: Option<Render>,
    /// `tags` / `include_tags`.
    pub tags: TagQuery,
}

impl BlockingJob for GlobFiles {
    type Output = ServiceResult<Vec<u8>>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        glob::glob(
            ctx.storage,
            ctx.abandoned(),
            &self.who,
            &self.uri,
            &glob::GlobQuery {
                pattern: &self.pattern,
                node_limit: self.node_limit,
                render_as: self.render.as_ref(),
                tags: &self.tags,
            },
        )
    }
}
