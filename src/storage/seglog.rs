//! A sequenced segment log: O(1) appends on a store without appends (S3), shared by any
//! domain that keeps a growing log (session messages; usable for per-writer change logs).
//!
//! The log's state ([`LogState`]) is not stored here: the caller keeps it inside a document it
//! already replaces by compare-and-swap (its *manifest*, e.g. a session's `.meta.json`), so a
//! log change and the caller's own bookkeeping commit together or not at all.
//!
//! - **Append**: take the sequence number `next` by compare-and-swap on the manifest
//!   ([`LogState::reserve`]), then write the segment `seg-<seq>` create-only
//!   ([`write_segment`], `If-None-Match: *`). Two writers never get the same number, and never
//!   overwrite each other's segment. Numbers come from the manifest, never from a clock.
//! - **Read**: compacted chunks in manifest order, then segments `from..next` in sequence order,
//!   fetched with bounded parallelism ([`Storage::read_many`]). A reserved number whose segment
//!   is missing is a *hole*: its writer has not written yet (or crashed); readers skip it.
//! - **Seal**: a writer that must see a final state (compaction, a session commit) writes an
//!   empty tombstone into each hole, create-only. Either the late writer's segment or the
//!   tombstone exists, never both: a writer that loses to a tombstone fails its append (it was
//!   never acknowledged) instead of adding a message after the log was cut.
//! - **Compact / rewrite**: new content goes to a new, uniquely named chunk (create-only); the
//!   manifest swap that references it is the commit point; objects it stops referencing are
//!   garbage, deleted afterwards ([`collect_garbage`]). Nothing a manifest references is ever
//!   overwritten or deleted, so deletions need no fencing: a crash or a lost lock leaves at
//!   worst unreferenced objects.
//!
//! Order: by sequence number. Concurrent appends are ordered by when each took its number; an
//! append acknowledged before another one started always comes first.

use serde::{Deserialize, Serialize};

use super::{Storage, StorageError, StorageResult, StorePath};

/// Folder of segments and chunks inside the log's directory. Names starting with
/// `.longship-` are the backend's own and are hidden from listings.
pub const LOG_DIR: &str = ".longship-log";

/// Compaction folds segments into the last chunk until it reaches this size, then starts a
/// new chunk: a compaction rewrites at most this much, whatever the size of the log.
pub const CHUNK_TARGET_BYTES: u64 = 1 << 20;

/// The log's state, kept in the caller's manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogState {
    /// Compacted content, oldest first.
    #[serde(default)]
    pub chunks: Vec<Chunk>,
    /// Segments `from..next` are live (missing ones are holes).
    #[serde(default)]
    pub from: u64,
    #[serde(default)]
    pub next: u64,
}

/// One compacted piece of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Path relative to the log's directory.
    pub name: String,
    pub bytes: u64,
}

impl LogState {
    /// Take the next sequence number. The caller must store the changed state by
    /// compare-and-swap before writing the segment.
    pub fn reserve(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        seq
    }

    /// Segments not yet compacted.
    pub fn segments(&self) -> u64 {
        self.next - self.from
    }
}

fn segment_name(seq: u64) -> String {
    format!("{LOG_DIR}/seg-{seq:020}")
}

fn path_of(dir: &StorePath, name: &str) -> StorageResult<StorePath> {
    dir.join_path(name)
}

/// Write the segment for a reserved number, create-only. `Conflict` means the number was
/// sealed by a compaction or commit that gave up waiting (or was taken by a writer holding a
/// lock it had lost): the append did not happen and must not be acknowledged.
pub fn write_segment(
    storage: &dyn Storage,
    dir: &StorePath,
    seq: u64,
    data: &[u8],
) -> StorageResult<()> {
    debug_assert!(!data.is_empty(), "an empty segment is a tombstone");
    storage
        .write_if(&path_of(dir, &segment_name(seq))?, data, None)
        .map(drop)
}

/// Seal one slot with a tombstone, create-only. `true`: the tombstone won, so no segment will
/// ever be stored under `seq`; `false`: a segment is there.
pub fn seal(storage: &dyn Storage, dir: &StorePath, seq: u64) -> StorageResult<bool> {
    match storage.write_if(&path_of(dir, &segment_name(seq))?, b"", None) {
        Ok(_) => Ok(true),
        Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The log's content, and the sequence numbers found missing.
#[derive(Debug, Default)]
pub struct Content {
    pub bytes: Vec<u8>,
    pub holes: Vec<u64>,
}

/// Read the whole log in order. Chunks and segments are fetched together with the store's
/// bounded parallelism. `keep_going` stops the read early (the result is then an error).
pub fn read(
    storage: &dyn Storage,
    dir: &StorePath,
    state: &LogState,
    keep_going: &dyn Fn() -> bool,
) -> StorageResult<Content> {
    let mut paths = Vec::with_capacity(state.chunks.len() + state.segments() as usize);
    for c in &state.chunks {
        paths.push(path_of(dir, &c.name)?);
    }
    for seq in state.from..state.next {
        paths.push(path_of(dir, &segment_name(seq))?);
    }
    let n_chunks = state.chunks.len();
    let mut out = Content::default();
    for (i, got) in storage
        .read_many(&paths, keep_going)
        .into_iter()
        .enumerate()
    {
        match got {
            Ok(data) => out.bytes.extend_from_slice(&data),
            // A segment not written yet (or whose writer crashed): not part of the log (yet).
            Err(StorageError::NotFound(_)) if i >= n_chunks => {
                out.holes.push(state.from + (i - n_chunks) as u64)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Read the log and seal every hole, so the content returned is final: no append with a
/// number below `state.next` can succeed afterwards. A writer that was merely slow wins the
/// race for its slot or loses it to the tombstone; either way the result is consistent.
pub fn read_sealed(
    storage: &dyn Storage,
    dir: &StorePath,
    state: &LogState,
) -> StorageResult<Content> {
    let first = read(storage, dir, state, &|| true)?;
    if first.holes.is_empty() {
        return Ok(first);
    }
    let mut late = false;
    let mut sealed = Vec::new();
    for &seq in &first.holes {
        if seal(storage, dir, seq)? {
            sealed.push(seq);
        } else {
            late = true;
        }
    }
    if !sealed.is_empty() {
        tracing::warn!(dir = %dir, ?sealed, "sealed log slots whose writers never wrote");
    }
    if !late {
        return Ok(Content {
            bytes: first.bytes,
            holes: sealed,
        });
    }
    // A late writer filled a hole meanwhile: read again (in order), every slot is now final.
    let again = read(storage, dir, state, &|| true)?;
    Ok(Content {
        bytes: again.bytes,
        holes: sealed,
    })
}

/// Everything a manifest swap made unreferenced.
#[derive(Debug, Default)]
pub struct Garbage {
    pub paths: Vec<StorePath>,
}

fn chunk_name(from: u64) -> String {
    format!(
        "{LOG_DIR}/chunk-{from:020}-{}",
        uuid::Uuid::new_v4().simple()
    )
}

/// Fold the segments into the last chunk (or a new one when the last is full). `content` is
/// [`read_sealed`]'s result for `state`. Returns the new state to store by compare-and-swap,
/// and the objects that become garbage once it is stored.
pub fn compact(
    storage: &dyn Storage,
    dir: &StorePath,
    state: &LogState,
    segments_bytes: &[u8],
) -> StorageResult<(LogState, Garbage)> {
    let mut garbage = Garbage::default();
    for seq in state.from..state.next {
        garbage.paths.push(path_of(dir, &segment_name(seq))?);
    }
    let mut next_state = state.clone();
    next_state.from = state.next;
    if segments_bytes.is_empty() {
        return Ok((next_state, garbage));
    }
    let mut data = Vec::new();
    let extend_last = state
        .chunks
        .last()
        .is_some_and(|c| c.bytes + segments_bytes.len() as u64 <= CHUNK_TARGET_BYTES);
    if extend_last {
        if let Some(last) = next_state.chunks.pop() {
            data = storage.read(&path_of(dir, &last.name)?)?;
            garbage.paths.push(path_of(dir, &last.name)?);
        }
    }
    data.extend_from_slice(segments_bytes);
    let name = chunk_name(state.from);
    storage.write_if(&path_of(dir, &name)?, &data, None)?;
    next_state.chunks.push(Chunk {
        name,
        bytes: data.len() as u64,
    });
    Ok((next_state, garbage))
}

/// Replace the whole content by `data` (a commit keeping only recent messages): one new chunk,
/// every segment below `state.next` retired. The caller stores the new state by
/// compare-and-swap; that swap is the point of no return.
pub fn rewrite(
    storage: &dyn Storage,
    dir: &StorePath,
    state: &LogState,
    data: &[u8],
) -> StorageResult<(LogState, Garbage)> {
    let mut garbage = Garbage::default();
    for c in &state.chunks {
        garbage.paths.push(path_of(dir, &c.name)?);
    }
    for seq in state.from..state.next {
        garbage.paths.push(path_of(dir, &segment_name(seq))?);
    }
    let mut next_state = LogState {
        chunks: Vec::new(),
        from: state.next,
        next: state.next,
    };
    if !data.is_empty() {
        let name = chunk_name(state.next);
        storage.write_if(&path_of(dir, &name)?, data, None)?;
        next_state.chunks.push(Chunk {
            name,
            bytes: data.len() as u64,
        });
    }
    Ok((next_state, garbage))
}

/// Delete objects a stored manifest no longer references. Failures only leave garbage.
pub fn collect_garbage(storage: &dyn Storage, garbage: Garbage) {
    if let Err(e) = storage.remove_files(&garbage.paths) {
        tracing::debug!(error = %e, objects = garbage.paths.len(), "log garbage left behind");
    }
}

/// The log's pieces newest first (segments, then chunks), for reading only its tail.
pub fn tail_paths(dir: &StorePath, state: &LogState) -> StorageResult<Vec<StorePath>> {
    let mut out = Vec::new();
    for seq in (state.from..state.next).rev() {
        out.push(path_of(dir, &segment_name(seq))?);
    }
    for c in state.chunks.iter().rev() {
        out.push(path_of(dir, &c.name)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    fn setup() -> (tempfile::TempDir, LocalStorage, StorePath) {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(dir.path()).unwrap();
        (dir, st, StorePath::parse("a/log").unwrap())
    }

    #[test]
    fn appends_read_back_in_sequence_order_with_holes_sealed() {
        let (_d, st, dir) = setup();
        let mut state = LogState::default();
        let seqs: Vec<u64> = (0..5).map(|_| state.reserve()).collect();
        // Written out of order, one never written.
        for &i in &[3u64, 0, 4, 1] {
            write_segment(&st, &dir, seqs[i as usize], format!("m{i}\n").as_bytes()).unwrap();
        }
        let got = read(&st, &dir, &state, &|| true).unwrap();
        assert_eq!(got.bytes, b"m0\nm1\nm3\nm4\n");
        assert_eq!(got.holes, vec![2]);
        let sealed = read_sealed(&st, &dir, &state).unwrap();
        assert_eq!(sealed.holes, vec![2]);
        // The late writer loses to the tombstone: its append never happened.
        assert!(matches!(
            write_segment(&st, &dir, 2, b"m2\n"),
            Err(StorageError::Conflict(_))
        ));
        assert!(
            write_segment(&st, &dir, 0, b"again\n").is_err(),
            "no overwrite"
        );
        assert_eq!(
            read(&st, &dir, &state, &|| true).unwrap().bytes,
            b"m0\nm1\nm3\nm4\n"
        );
    }

    #[test]
    fn compaction_and_rewrite_keep_content_and_order() {
        let (_d, st, dir) = setup();
        let mut state = LogState::default();
        let mut expect = Vec::new();
        for round in 0..3 {
            for i in 0..4 {
                let line = format!("r{round}m{i}\n");
                let seq = state.reserve();
                write_segment(&st, &dir, seq, line.as_bytes()).unwrap();
                expect.extend_from_slice(line.as_bytes());
            }
            let seg_state = LogState {
                chunks: Vec::new(),
                ..state.clone()
            };
            let segs = read_sealed(&st, &dir, &seg_state).unwrap();
            let (next, garbage) = compact(&st, &dir, &state, &segs.bytes).unwrap();
            state = next;
            collect_garbage(&st, garbage);
            assert_eq!(state.segments(), 0);
            assert_eq!(state.chunks.len(), 1, "small chunks are extended");
            assert_eq!(read(&st, &dir, &state, &|| true).unwrap().bytes, expect);
        }
        let seq = state.reserve();
        write_segment(&st, &dir, seq, b"tail\n").unwrap();
        let (next, garbage) = rewrite(&st, &dir, &state, b"kept\n").unwrap();
        collect_garbage(&st, garbage);
        assert_eq!(read(&st, &dir, &next, &|| true).unwrap().bytes, b"kept\n");
        assert_eq!(next.from, next.next);
        // Only the new chunk remains on disk.
        let left = st.list(&dir.join(LOG_DIR).unwrap()).unwrap();
        assert_eq!(left.len(), 1);
    }
}
