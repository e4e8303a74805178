//! The one tree walker behind tree, recursive ls, grep, glob and rm's count.
//!
//! Pre-order depth-first with an explicit stack (no recursion depth limit to hit), children
//! sorted per directory, access and hiding rules applied to every child, and two ways to stop
//! early: the visitor says so (node_limit reached) or the client has gone away.

use std::cmp::Ordering;

use crate::error::ServiceResult;
use crate::identity::Identity;
use crate::storage::uri::{child_visible, is_hidden_name, VikingUri};
use crate::storage::{DirEntry, Meta, Storage, StorageError};

use super::StorageFail;

/// Sibling order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Directories first, then files; names case-insensitively (F1/F2).
    DirsFirst,
    /// Plain byte order of names, files and directories mixed: pre-order then yields paths
    /// sorted component-wise (S2).
    ByName,
}

/// What the visitor wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Do not descend into this directory.
    SkipChildren,
    Stop,
}

/// How the walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Complete,
    /// The visitor stopped it.
    Stopped,
    /// Nobody waits for the answer any more.
    Abandoned,
}

pub struct Walker<'a> {
    pub who: &'a Identity,
    /// Show dot-files (dot-directories are always walked, as tree lists them).
    pub show_hidden_files: bool,
    /// Deepest level visited; children of the start are level 1.
    pub max_depth: usize,
    pub order: Order,
    /// A subtree to leave out entirely (grep's `exclude_uri`).
    pub exclude: Option<&'a VikingUri>,
}

/// Sort siblings in `order`.
pub fn sort_entries(entries: &mut [DirEntry], order: Order) {
    entries.sort_by(|a, b| compare(a, b, order));
}

pub fn compare(a: &DirEntry, b: &DirEntry, order: Order) -> Ordering {
    match order {
        Order::ByName => a.name.cmp(&b.name),
        Order::DirsFirst => b
            .meta
            .is_dir()
            .cmp(&a.meta.is_dir())
            .then_with(|| caseless(&a.name, &b.name))
            .then_with(|| a.name.cmp(&b.name)),
    }
}

/// Case-insensitive name order without allocating.
pub fn caseless(a: &str, b: &str) -> Ordering {
    a.chars()
        .flat_map(char::to_lowercase)
        .cmp(b.chars().flat_map(char::to_lowercase))
}

impl Walker<'_> {
    /// The visible children of `dir` for this walk, unsorted. A directory that vanished
    /// meanwhile has no children.
    pub fn children(&self, storage: &dyn Storage, dir: &VikingUri) -> ServiceResult<Vec<DirEntry>> {
        let mut entries = match storage.list(dir.store_path()) {
            Ok(e) => e,
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Vec::new(),
            Err(e) => return Err(StorageFail(dir).map(e)),
        };
        entries.retain(|e| {
            child_visible(dir, &e.name, self.who)
                && (e.meta.is_dir() || self.show_hidden_files || !is_hidden_name(&e.name))
        });
        Ok(entries)
    }

    /// Walk below `start` (not visiting `start` itself), calling `visit(uri, meta, depth)`;
    /// stops early once `abandoned()` says nobody waits for the answer.
    pub fn run(
        &self,
        storage: &dyn Storage,
        abandoned: &dyn Fn() -> bool,
        start: &VikingUri,
        mut visit: impl FnMut(&VikingUri, &Meta, usize) -> ServiceResult<Flow>,
    ) -> ServiceResult<Ended> {
        // Each frame: a directory's children in reverse order, so `pop` yields them in order.
        let mut stack: Vec<(VikingUri, usize, Vec<DirEntry>)> = Vec::new();
        if self.max_depth == 0 {
            return Ok(Ended::Complete);
        }
        stack.push((start.clone(), 1, self.sorted_children(storage, start)?));
        let mut visited: u64 = 0;
        while let Some((dir, depth, children)) = stack.last_mut() {
            let Some(entry) = children.pop() else {
                stack.pop();
                continue;
            };
            visited += 1;
            // The client may be gone: checked every 64 entries (cheap, but not free).
            if visited.is_multiple_of(64) && abandoned() {
                return Ok(Ended::Abandoned);
            }
            let depth = *depth;
            let uri = match dir.child(&entry.name) {
                Ok(u) => u,
                Err(_) => continue, // a name no URI can address
            };
            if self.exclude.is_some_and(|ex| uri.starts_with(ex)) {
                continue;
            }
            match visit(&uri, &entry.meta, depth)? {
                Flow::Stop => return Ok(Ended::Stopped),
                Flow::SkipChildren => {}
                Flow::Continue => {
                    if entry.meta.is_dir() && depth < self.max_depth {
                        let kids = self.sorted_children(storage, &uri)?;
                        stack.push((uri, depth + 1, kids));
                    }
                }
            }
        }
        Ok(Ended::Complete)
    }

    fn sorted_children(
        &self,
        storage: &dyn Storage,
        dir: &VikingUri,
    ) -> ServiceResult<Vec<DirEntry>> {
        let mut kids = self.children(storage, dir)?;
        sort_entries(&mut kids, self.order);
        kids.reverse();
        Ok(kids)
    }
}
