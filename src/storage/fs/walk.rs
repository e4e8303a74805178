//! The one tree walker behind tree, recursive ls, grep, glob and rm's count.
//!
//! Pre-order depth-first with an explicit stack (no recursion depth limit to hit), children
//! sorted per directory, access and hiding rules applied to every child, and two ways to stop
//! early: the visitor says so (node_limit reached) or the client has gone away.
//!
//! Listings fan out ([`Storage::listing_fan_out`]): on the way into a directory the walk also
//! lists the next sibling directories it will enter, in one [`Storage::list_many`] — on an
//! object store that many round trips in flight instead of one at a time. The visit order is
//! unchanged, and an early stop wastes at most one batch of listings.

use std::cmp::Ordering;

use crate::error::ServiceResult;
use crate::identity::Identity;
use crate::storage::acl::{AclView, Shown};
use crate::storage::uri::{child_visible, is_hidden_name, VikingUri};
use crate::storage::{DirEntry, Meta, Storage, StorageError, StorageResult};

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

/// A child waiting on the stack, with its own listing once a batch fetched it.
struct Pending {
    entry: DirEntry,
    listing: Option<StorageResult<Vec<DirEntry>>>,
}

/// One directory being walked: its children still to visit, in reverse order (`pop` yields
/// them in order).
struct Frame {
    dir: VikingUri,
    depth: usize,
    children: Vec<Pending>,
}

impl Walker<'_> {
    /// The visible children of `dir` for this walk, unsorted. A directory that vanished
    /// meanwhile has no children.
    pub fn children(&self, storage: &dyn Storage, dir: &VikingUri) -> ServiceResult<Vec<DirEntry>> {
        self.visible(dir, storage.list(dir.store_path()))
    }

    /// What of a listing of `dir` this walk shows.
    fn visible(
        &self,
        dir: &VikingUri,
        listed: StorageResult<Vec<DirEntry>>,
    ) -> ServiceResult<Vec<DirEntry>> {
        let mut entries = match listed {
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

    /// Children in reverse walk order, none listed yet.
    fn frame(&self, dir: VikingUri, depth: usize, listed: Vec<DirEntry>) -> Frame {
        let mut kids = listed;
        sort_entries(&mut kids, self.order);
        let children = kids
            .into_iter()
            .rev()
            .map(|entry| Pending {
                entry,
                listing: None,
            })
            .collect();
        Frame {
            dir,
            depth,
            children,
        }
    }

    /// The listing of `first` (a child of `parent` about to be entered), fetched together
    /// with those of the next sibling directories the walk will enter, up to the backend's
    /// fan-out; theirs are kept in `siblings` (reverse order, as on the stack).
    fn list_ahead(
        &self,
        storage: &dyn Storage,
        abandoned: &dyn Fn() -> bool,
        parent: &VikingUri,
        depth: usize,
        first: &VikingUri,
        siblings: &mut [Pending],
    ) -> StorageResult<Vec<DirEntry>> {
        let width = storage.listing_fan_out().max(1);
        let mut dirs = vec![first.store_path().clone()];
        let mut slots = Vec::new();
        if depth < self.max_depth {
            for (i, sib) in siblings.iter().enumerate().rev() {
                if dirs.len() >= width {
                    break;
                }
                if !sib.entry.meta.is_dir() || sib.listing.is_some() {
                    continue;
                }
                let Ok(uri) = parent.child(&sib.entry.name) else {
                    continue;
                };
                if self.exclude.is_some_and(|ex| uri.starts_with(ex)) {
                    continue;
                }
                dirs.push(uri.store_path().clone());
                slots.push(i);
            }
        }
        let mut listed = storage.list_many(&dirs, &|| !abandoned()).into_iter();
        let own = listed
            .next()
            .unwrap_or_else(|| Err(StorageError::Unavailable("listing missing".into())));
        for (slot, got) in slots.into_iter().zip(listed) {
            siblings[slot].listing = Some(got);
        }
        own
    }

    /// Walk below `start` (not visiting `start` itself), calling `visit(uri, meta, depth)`;
    /// stops early once `abandoned()` says nobody waits for the answer. Nodes the caller's
    /// ACLs deny reading are not visited (a denied directory is still entered when a node
    /// below it has an ACL of its own, which may allow).
    pub fn run(
        &self,
        storage: &dyn Storage,
        abandoned: &dyn Fn() -> bool,
        start: &VikingUri,
        mut visit: impl FnMut(&VikingUri, &Meta, usize) -> ServiceResult<Flow>,
    ) -> ServiceResult<Ended> {
        self.walk(storage, abandoned, start, false, &mut |u, m, d, _| {
            visit(u, m, d)
        })
    }

    /// [`Walker::run`] for listings (tree): a node the caller may not read is visited once
    /// as [`Shown::Denied`] (0.5.2's `access: "denied"` placeholder) and not entered, unless
    /// the account hides denied nodes.
    pub fn run_listing(
        &self,
        storage: &dyn Storage,
        abandoned: &dyn Fn() -> bool,
        start: &VikingUri,
        mut visit: impl FnMut(&VikingUri, &Meta, usize, Shown) -> ServiceResult<Flow>,
    ) -> ServiceResult<Ended> {
        self.walk(storage, abandoned, start, true, &mut visit)
    }

    fn walk(
        &self,
        storage: &dyn Storage,
        abandoned: &dyn Fn() -> bool,
        start: &VikingUri,
        placeholders: bool,
        visit: &mut dyn FnMut(&VikingUri, &Meta, usize, Shown) -> ServiceResult<Flow>,
    ) -> ServiceResult<Ended> {
        let acl = AclView::for_caller(self.who);
        let mut stack: Vec<Frame> = Vec::new();
        if self.max_depth == 0 {
            return Ok(Ended::Complete);
        }
        let top = self.children(storage, start)?;
        stack.push(self.frame(start.clone(), 1, top));
        let mut visited: u64 = 0;
        while let Some(Frame {
            dir,
            depth,
            children,
        }) = stack.last_mut()
        {
            let Some(Pending { entry, listing }) = children.pop() else {
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
            let shown = acl.as_ref().map_or(Shown::Full, |v| v.shown(&uri));
            let flow = match shown {
                Shown::Full => visit(&uri, &entry.meta, depth, Shown::Full)?,
                Shown::Denied if placeholders => {
                    match visit(&uri, &entry.meta, depth, Shown::Denied)? {
                        Flow::Stop => Flow::Stop,
                        _ => Flow::SkipChildren,
                    }
                }
                // Not shown; entered only if a node below has an ACL of its own.
                _ if acl.as_ref().is_some_and(|v| v.has_rows_below(&uri)) => Flow::Continue,
                _ => Flow::SkipChildren,
            };
            match flow {
                Flow::Stop => return Ok(Ended::Stopped),
                Flow::SkipChildren => {}
                Flow::Continue => {
                    if entry.meta.is_dir() && depth < self.max_depth {
                        let listed = match listing {
                            Some(listed) => listed,
                            None => self.list_ahead(storage, abandoned, dir, depth, &uri, children),
                        };
                        // A batch cut short by a departed client reads as a storage error.
                        if listed.is_err() && abandoned() {
                            return Ok(Ended::Abandoned);
                        }
                        let kids = self.visible(&uri, listed)?;
                        stack.push(self.frame(uri, depth + 1, kids));
                    }
                }
            }
        }
        Ok(Ended::Complete)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::identity::Role;
    use crate::storage::backend::local::LocalStorage;
    use crate::storage::{LockGuard, StorePath, Version};

    /// Local disk that claims an object store's fan-out and records every batch it is asked
    /// to list.
    struct FanOut {
        inner: LocalStorage,
        width: usize,
        batches: Mutex<Vec<Vec<String>>>,
    }

    impl Storage for FanOut {
        fn kind(&self) -> &'static str {
            "fan-out"
        }
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn read_versioned(&self, p: &StorePath) -> StorageResult<(Vec<u8>, Version)> {
            self.inner.read_versioned(p)
        }
        fn read_range(&self, p: &StorePath, offset: u64, len: u64) -> StorageResult<Vec<u8>> {
            self.inner.read_range(p, offset, len)
        }
        fn write(&self, p: &StorePath, data: &[u8]) -> StorageResult<Version> {
            self.inner.write(p, data)
        }
        fn write_if(
            &self,
            p: &StorePath,
            data: &[u8],
            expected: Option<&Version>,
        ) -> StorageResult<Version> {
            self.inner.write_if(p, data, expected)
        }
        fn append(&self, p: &StorePath, data: &[u8]) -> StorageResult<Version> {
            self.inner.append(p, data)
        }
        fn stat(&self, p: &StorePath) -> StorageResult<Option<Meta>> {
            self.inner.stat(p)
        }
        fn list(&self, dir: &StorePath) -> StorageResult<Vec<DirEntry>> {
            self.batches
                .lock()
                .unwrap()
                .push(vec![dir.as_str().to_string()]);
            self.inner.list(dir)
        }
        fn mkdir(&self, p: &StorePath) -> StorageResult<()> {
            self.inner.mkdir(p)
        }
        fn remove(&self, p: &StorePath, recursive: bool) -> StorageResult<()> {
            self.inner.remove(p, recursive)
        }
        fn rename(&self, from: &StorePath, to: &StorePath) -> StorageResult<()> {
            self.inner.rename(from, to)
        }
        fn lock(&self, name: &str, timeout: Duration) -> StorageResult<Box<dyn LockGuard>> {
            self.inner.lock(name, timeout)
        }
        fn probe(&self) -> StorageResult<()> {
            self.inner.probe()
        }
        fn listing_fan_out(&self) -> usize {
            self.width
        }
        fn list_many(
            &self,
            dirs: &[StorePath],
            _keep_going: &dyn Fn() -> bool,
        ) -> Vec<StorageResult<Vec<DirEntry>>> {
            self.batches
                .lock()
                .unwrap()
                .push(dirs.iter().map(|d| d.as_str().to_string()).collect());
            dirs.iter().map(|d| self.inner.list(d)).collect()
        }
    }

    fn tree(width: usize) -> (tempfile::TempDir, FanOut) {
        let dir = tempfile::tempdir().unwrap();
        let inner = LocalStorage::open(dir.path()).unwrap();
        for d in 0..6 {
            inner
                .write(
                    &StorePath::parse(&format!("a/t/d{d}/top.md")).unwrap(),
                    b"x",
                )
                .unwrap();
            for s in 0..3 {
                for f in 0..2 {
                    let p = format!("a/t/d{d}/s{s}/f{f}.md");
                    inner.write(&StorePath::parse(&p).unwrap(), b"x").unwrap();
                }
            }
        }
        let st = FanOut {
            inner,
            width,
            batches: Mutex::default(),
        };
        (dir, st)
    }

    fn walk(st: &FanOut, max_depth: usize, stop_after: Option<usize>) -> Vec<String> {
        let who = Identity {
            role: Role::Root,
            account: "a".into(),
            user: "u".into(),
        };
        let walker = Walker {
            who: &who,
            show_hidden_files: false,
            max_depth,
            order: Order::DirsFirst,
            exclude: None,
        };
        let start = VikingUri::root("a").unwrap().child("t").unwrap();
        let mut seen = Vec::new();
        walker
            .run(st, &|| false, &start, |uri, _, _| {
                seen.push(uri.uri());
                Ok(if stop_after.is_some_and(|n| seen.len() >= n) {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            })
            .unwrap();
        seen
    }

    // Issue #19 item 7: directories are listed in batches of the backend's fan-out, the
    // walk's order and result are those of listing one at a time, and each directory is
    // listed once.
    #[test]
    fn listings_fan_out_without_changing_the_walk() {
        let (_d1, one) = tree(1);
        let (_d4, four) = tree(4);
        let expected = walk(&one, usize::MAX, None);
        assert_eq!(expected.len(), 6 * (1 + 1 + 3 * (1 + 2)));
        assert_eq!(walk(&four, usize::MAX, None), expected);
        let batches = four.batches.lock().unwrap().clone();
        assert!(one.batches.lock().unwrap().iter().all(|b| b.len() == 1));
        assert!(batches.iter().all(|b| b.len() <= 4));
        assert!(batches.iter().any(|b| b.len() == 4), "{batches:?}");
        let mut listed: Vec<&String> = batches.iter().flatten().collect();
        let total = listed.len();
        listed.sort();
        listed.dedup();
        assert_eq!(listed.len(), total, "a directory listed twice: {batches:?}");
        assert_eq!(total, 1 + 6 + 6 * 3, "every directory once");
    }

    #[test]
    fn an_early_stop_wastes_at_most_one_batch() {
        let (_d, four) = tree(4);
        // Stop at the third node: t/d0, t/d0/s0, t/d0/s0/f0.md.
        assert_eq!(walk(&four, usize::MAX, Some(3)).len(), 3);
        let listed: usize = four.batches.lock().unwrap().iter().map(Vec::len).sum();
        assert!(listed <= 1 + 4 + 4, "{listed}");
        // A depth-1 walk lists only its start.
        let (_d, four) = tree(4);
        assert_eq!(walk(&four, 1, None).len(), 6);
        assert_eq!(four.batches.lock().unwrap().len(), 1);
    }
}
