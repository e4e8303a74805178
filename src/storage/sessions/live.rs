//! The JSON-lines files of a session: live messages and archived copies.
//!
//! Large sessions (50k messages, tens of MB) are handled without quadratic work: messages are
//! appended with the backend's `append`, counters live in the meta (checked against the file
//! size), and only the bytes a step needs are parsed — ids and roles with a borrowed "light"
//! parse, full JSON only where tokens or content are needed.
//!
//! Where the backend has no true append (S3), the live messages are a segment log
//! ([`crate::storage::seglog`]) whose state lives in the session meta: an add writes one small
//! segment object under a sequence number taken by compare-and-swap on the meta, so it costs
//! the same at message 50,000 as at message 1. Its "live file" is the log's content: chunks,
//! then segments in sequence order. The `*_live` functions below hide the difference.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ServiceError, ServiceResult};
use crate::storage::seglog::{self, Chunk, LogState};
use crate::storage::{Storage, StorageError, StorePath};

use super::meta::SessionMeta;
use super::{tokens, SessionRef};

/// Long loops give the CPU away this often so HTTP workers are never starved on small machines.
pub const YIELD_EVERY: usize = 512;

/// What a commit needs to know about a message, borrowed from the file's bytes.
#[derive(Debug, Deserialize)]
pub struct LightMsg<'a> {
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub role: Cow<'a, str>,
    #[serde(borrow, default)]
    pub message_kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub parts: Vec<LightPart<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct LightPart<'a> {
    #[serde(borrow, rename = "type", default)]
    pub kind: Cow<'a, str>,
}

impl LightMsg<'_> {
    /// A user message that only carries tool parts back to the model.
    pub fn is_tool_transport(&self) -> bool {
        self.message_kind.as_deref() == Some("tool_transport")
            || (!self.parts.is_empty() && self.parts.iter().all(|p| p.kind == "tool"))
    }

    /// A turn starts at each user-query message (spec SE7 step 3).
    pub fn starts_turn(&self) -> bool {
        match self.message_kind.as_deref() {
            Some("user_query") => true,
            Some("tool_transport") => false,
            _ => self.role == "user" && !self.is_tool_transport(),
        }
    }
}

/// One complete line: byte range without its `\n`.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// Complete lines of a JSON-lines buffer, and the length they cover. Bytes after the last
/// `\n` are a torn append (a crash mid-write) and are not a message.
pub fn lines(bytes: &[u8]) -> (Vec<Span>, usize) {
    let mut out = Vec::new();
    let mut start = 0;
    // memchr scans tens of megabytes in a few milliseconds, a byte loop takes ten times longer.
    for nl in memchr::memchr_iter(b'\n', bytes) {
        if nl > start {
            out.push(Span { start, end: nl });
        }
        start = nl + 1;
    }
    (out, start)
}

pub fn light(line: &[u8]) -> ServiceResult<LightMsg<'_>> {
    serde_json::from_slice(line).map_err(|e| super::damaged(format!("message line: {e}")))
}

pub fn full(line: &[u8]) -> ServiceResult<Value> {
    serde_json::from_slice(line).map_err(|e| super::damaged(format!("message line: {e}")))
}

/// Read a whole JSON-lines file; a missing file is empty.
pub fn read_all(storage: &dyn Storage, path: &StorePath) -> ServiceResult<Vec<u8>> {
    match storage.read(path) {
        Ok(b) => Ok(b),
        Err(StorageError::NotFound(_)) => Ok(Vec::new()),
        Err(StorageError::IsADirectory(_)) => Err(super::damaged(format!(
            "{path} is a directory, not a messages file"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Every complete message of a file, parsed.
pub fn read_messages(storage: &dyn Storage, path: &StorePath) -> ServiceResult<Vec<Value>> {
    parse_complete(&read_all(storage, path)?)
}

/// Size of a file, 0 when absent.
pub fn size(storage: &dyn Storage, path: &StorePath) -> ServiceResult<u64> {
    Ok(storage.stat(path)?.map(|m| m.size).unwrap_or(0))
}

/// The id of the first message in the live file, reading only its first line.
pub fn first_id(storage: &dyn Storage, path: &StorePath) -> ServiceResult<Option<String>> {
    let mut buf = Vec::new();
    let mut offset = 0u64;
    loop {
        let chunk = match storage.read_range(path, offset, 64 * 1024) {
            Ok(c) => c,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if chunk.is_empty() {
            return Ok(None);
        }
        offset += chunk.len() as u64;
        buf.extend_from_slice(&chunk);
        if let Some(nl) = memchr::memchr(b'\n', &buf) {
            return Ok(Some(light(&buf[..nl])?.id.into_owned()));
        }
    }
}

/// Estimated tokens of the last `k` complete messages of a file of `size` bytes, reading only
/// its tail.
pub fn tail_tokens(
    storage: &dyn Storage,
    path: &StorePath,
    size: u64,
    k: u64,
) -> ServiceResult<u64> {
    if k == 0 || size == 0 {
        return Ok(0);
    }
    const CHUNK: u64 = 256 * 1024;
    // Read backwards chunk by chunk, counting newlines only in each new chunk.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0u64;
    let mut from = size;
    // k complete lines need k+1 newlines before them, unless the file starts there.
    while newlines <= k && from > 0 {
        let start = from.saturating_sub(CHUNK);
        let chunk = storage.read_range(path, start, from - start)?;
        newlines += memchr::memchr_iter(b'\n', &chunk).count() as u64;
        chunks.push(chunk);
        from = start;
    }
    let tail: Vec<u8> = chunks.into_iter().rev().flatten().collect();
    // Drop a torn last line.
    let complete = memchr::memrchr(b'\n', &tail).map_or(0, |i| i + 1);
    let tail = &tail[..complete];
    // The first line is partial unless the file starts here.
    last_lines_tokens(tail, from > 0, k)
}

/// `pending_tokens` (spec §9.1): tokens of live messages the next commit would archive under
/// the remembered `keep_recent_count`.
pub fn pending_tokens(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &SessionMeta,
) -> ServiceResult<u64> {
    let k = meta.keep_recent_count;
    if k == 0 {
        return Ok(meta.internal.live_tokens);
    }
    if meta.message_count <= k {
        return Ok(0);
    }
    let kept = match meta.internal.log.as_ref().filter(|_| segmented(storage)) {
        Some(state) => log_tail_tokens(storage, s, state, k)?,
        None => tail_tokens(storage, &s.live()?, meta.internal.live_bytes, k)?,
    };
    Ok(meta.internal.live_tokens.saturating_sub(kept))
}

/// Make the meta's counters agree with the live file. Cheap when they already do (one stat);
/// otherwise the file is scanned once. With `repair` (caller holds the session lock) a torn
/// trailing line is cut off the file and the caller should save the meta when this returns
/// true.
pub fn reconcile(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &mut SessionMeta,
    repair: bool,
) -> ServiceResult<bool> {
    if segmented(storage) && meta.internal.log.is_some() {
        // Counters change with the log in one compare-and-swap: nothing to reconcile.
        return Ok(false);
    }
    let path = s.live()?;
    let on_disk = size(storage, &path)?;
    if on_disk == meta.internal.live_bytes {
        return Ok(false);
    }
    let bytes = read_all(storage, &path)?;
    let (spans, complete) = lines(&bytes);
    if repair && complete < bytes.len() {
        tracing::warn!(session = %s.uri(), torn = bytes.len() - complete, "cutting a torn message line");
        storage.write(&path, &bytes[..complete])?;
    }
    let mut live_tokens = 0;
    for (i, sp) in spans.iter().enumerate() {
        live_tokens += tokens::estimate_message(&full(&bytes[sp.start..sp.end])?);
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            std::thread::yield_now();
        }
    }
    let count = spans.len() as u64;
    // Messages that reached the file without their meta update still count as added.
    if count > meta.message_count {
        meta.total_message_count += count - meta.message_count;
    }
    meta.message_count = count;
    meta.internal.live_tokens = live_tokens;
    meta.internal.live_bytes = if repair { complete as u64 } else { on_disk };
    meta.pending_tokens = pending_tokens(storage, s, meta)?;
    Ok(true)
}

/// Segments an add may leave before it folds them into a chunk (bounded work: a compaction
/// rewrites at most [`seglog::CHUNK_TARGET_BYTES`] plus these segments).
pub const COMPACT_AFTER_SEGMENTS: u64 = 32;

/// Whether this session's live messages are a segment log (see the module docs).
pub fn segmented(storage: &dyn Storage) -> bool {
    !storage.appends_in_place()
}

/// Give a session on a segmented backend its log state. A session written before the log
/// existed keeps its `messages.jsonl` as the log's first chunk (first reconciled as a file).
pub fn ensure_log(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &mut SessionMeta,
) -> ServiceResult<()> {
    if !segmented(storage) || meta.internal.log.is_some() {
        return Ok(());
    }
    let size = size(storage, &s.live()?)?;
    let chunks = if size > 0 {
        vec![Chunk {
            name: LIVE_FILE.to_string(),
            bytes: size,
        }]
    } else {
        Vec::new()
    };
    meta.internal.log = Some(LogState {
        chunks,
        from: 0,
        next: 0,
    });
    Ok(())
}

/// Name of the live file inside the session directory.
pub const LIVE_FILE: &str = "messages.jsonl";

/// Read a segment log, reloading the meta if a commit retired a chunk between the meta read
/// and the chunk read (bounded retries).
fn read_log(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &SessionMeta,
    seal: bool,
) -> ServiceResult<Vec<u8>> {
    let dir = s.dir()?;
    let mut state = meta.internal.log.clone().unwrap_or_default();
    for _ in 0..5 {
        let got = if seal {
            seglog::read_sealed(storage, &dir, &state)
        } else {
            seglog::read(storage, &dir, &state, &|| true)
        };
        match got {
            Ok(c) => return Ok(c.bytes),
            Err(StorageError::NotFound(_)) => {
                let Some(fresh) = SessionMeta::load(storage, s)? else {
                    return Ok(Vec::new());
                };
                state = fresh.internal.log.unwrap_or_default();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(super::changed_concurrently(s))
}

/// The whole live content (JSON lines). With `seal` (caller holds the lock and is about to
/// cut the log) a segment log's holes are sealed first, so the content is final.
pub fn read_live(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &SessionMeta,
    seal: bool,
) -> ServiceResult<Vec<u8>> {
    match &meta.internal.log {
        Some(_) if segmented(storage) => read_log(storage, s, meta, seal),
        _ => read_all(storage, &s.live()?),
    }
}

/// Every live message, parsed.
pub fn read_live_messages(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &SessionMeta,
) -> ServiceResult<Vec<Value>> {
    parse_complete(&read_live(storage, s, meta, false)?)
}

/// Every complete line of `bytes`, parsed as a message (yielding the CPU now and then).
fn parse_complete(bytes: &[u8]) -> ServiceResult<Vec<Value>> {
    let (spans, _) = lines(bytes);
    let mut out = Vec::with_capacity(spans.len());
    for (i, sp) in spans.iter().enumerate() {
        out.push(full(&bytes[sp.start..sp.end])?);
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            std::thread::yield_now();
        }
    }
    Ok(out)
}

/// The id of the first live message.
pub fn first_live_id(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &SessionMeta,
) -> ServiceResult<Option<String>> {
    let Some(state) = meta.internal.log.as_ref().filter(|_| segmented(storage)) else {
        return first_id(storage, &s.live()?);
    };
    let dir = s.dir()?;
    if let Some(first) = state.chunks.first() {
        return first_id(storage, &dir.join_path(&first.name)?);
    }
    for path in seglog::tail_paths(&dir, state)?.iter().rev() {
        match storage.read(path) {
            Ok(bytes) => {
                if let Some(nl) = memchr::memchr(b'\n', &bytes) {
                    return Ok(Some(light(&bytes[..nl])?.id.into_owned()));
                }
            }
            Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Tokens of the last `k` live messages of a segment log, reading only its newest pieces
/// (a few at a time, in parallel).
fn log_tail_tokens(
    storage: &dyn Storage,
    s: &SessionRef,
    state: &LogState,
    k: u64,
) -> ServiceResult<u64> {
    let paths = seglog::tail_paths(&s.dir()?, state)?;
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut lines_seen = 0u64;
    for batch in paths.chunks(16) {
        for got in storage.read_many(batch, &|| true) {
            match got {
                Ok(bytes) => {
                    lines_seen += memchr::memchr_iter(b'\n', &bytes).count() as u64;
                    pieces.push(bytes);
                }
                Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if lines_seen >= k {
            break;
        }
    }
    let tail: Vec<u8> = pieces.into_iter().rev().flatten().collect();
    last_lines_tokens(&tail, false, k)
}

/// Tokens of the last `k` complete message lines of `tail` (its first line skipped when it is
/// a partial line).
fn last_lines_tokens(tail: &[u8], skip_first: bool, k: u64) -> ServiceResult<u64> {
    let (spans, _) = lines(tail);
    let usable = &spans[usize::from(skip_first).min(spans.len())..];
    let take = usable.len().saturating_sub(k as usize);
    let mut sum = 0;
    for sp in &usable[take..] {
        sum += tokens::estimate_message(&full(&tail[sp.start..sp.end])?);
    }
    Ok(sum)
}

/// Append messages to a segment log: take a sequence number and update the counters in one
/// compare-and-swap of the meta, then write the segment create-only. Returns the meta as
/// stored. A segment that loses its slot (sealed by a writer that held the lock we lost)
/// fails the add: nothing of it is stored.
pub fn append_segment(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &mut SessionMeta,
    messages: &[Value],
    now: &str,
) -> ServiceResult<()> {
    let bytes = to_lines(messages)?;
    let per_message: Vec<u64> = messages.iter().map(tokens::estimate_message).collect();
    let added_tokens: u64 = per_message.iter().sum();
    let n = messages.len() as u64;
    let state = meta.internal.log.get_or_insert_with(LogState::default);
    let k = meta.keep_recent_count;
    let pending = if k == 0 {
        meta.internal.live_tokens + added_tokens
    } else if meta.message_count + n <= k {
        0
    } else {
        let kept_new: u64 = per_message.iter().rev().take(k as usize).sum();
        let kept_old = if n >= k {
            0
        } else {
            log_tail_tokens(storage, s, state, k - n)?
        };
        (meta.internal.live_tokens + added_tokens).saturating_sub(kept_new + kept_old)
    };
    let seq = state.reserve();
    let before = (
        meta.message_count,
        meta.total_message_count,
        meta.internal.live_bytes,
        meta.internal.live_tokens,
        meta.pending_tokens,
    );
    meta.message_count += n;
    meta.total_message_count += n;
    meta.internal.live_bytes += bytes.len() as u64;
    meta.internal.live_tokens += added_tokens;
    meta.pending_tokens = pending;
    meta.last_message_at = now.to_string();
    meta.updated_at = now.to_string();
    meta.save(storage, s)?;
    match seglog::write_segment(storage, &s.dir()?, seq, &bytes) {
        Ok(()) => Ok(()),
        Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {
            tracing::warn!(session = %s.uri(), seq, "a message segment lost its slot to a seal");
            Err(super::changed_concurrently(s))
        }
        Err(e) => {
            // Not stored, or not known to be: seal the slot. If the tombstone wins the add
            // certainly did not happen, and its counts are taken back.
            if seglog::seal(storage, &s.dir()?, seq).unwrap_or(false) {
                (
                    meta.message_count,
                    meta.total_message_count,
                    meta.internal.live_bytes,
                    meta.internal.live_tokens,
                    meta.pending_tokens,
                ) = before;
                if let Err(again) = meta.save(storage, s) {
                    tracing::warn!(session = %s.uri(), error = %again.message, "counts of a failed add stay until the next commit");
                }
            }
            Err(e.into())
        }
    }
}

/// Fold a segment log's segments into a chunk once there are enough of them. Best effort:
/// the add it follows is already stored, so a failure here is only logged.
pub fn compact_if_due(storage: &dyn Storage, s: &SessionRef, meta: &mut SessionMeta) {
    let due = meta
        .internal
        .log
        .as_ref()
        .is_some_and(|l| l.segments() >= COMPACT_AFTER_SEGMENTS);
    if !due {
        return;
    }
    if let Err(e) = compact(storage, s, meta) {
        tracing::warn!(session = %s.uri(), error = %e.message, "session log compaction failed; retried later");
    }
}

fn compact(storage: &dyn Storage, s: &SessionRef, meta: &mut SessionMeta) -> ServiceResult<()> {
    let Some(state) = meta.internal.log.clone() else {
        return Ok(());
    };
    let dir = s.dir()?;
    let segments_only = LogState {
        chunks: Vec::new(),
        ..state.clone()
    };
    let sealed = seglog::read_sealed(storage, &dir, &segments_only)?;
    let (next, garbage) = seglog::compact(storage, &dir, &state, &sealed.bytes)?;
    meta.internal.log = Some(next);
    meta.save(storage, s)?;
    collect_garbage(storage, s, garbage);
    Ok(())
}

/// Replace the live content by `retained` (commit's point of no return), with the counters
/// of what remains, in one compare-and-swap of the meta.
pub fn rewrite_log(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &mut SessionMeta,
    retained: &[u8],
) -> ServiceResult<()> {
    let state = meta.internal.log.clone().unwrap_or_default();
    let (next, garbage) = seglog::rewrite(storage, &s.dir()?, &state, retained)?;
    meta.internal.log = Some(next);
    meta.save(storage, s)?;
    collect_garbage(storage, s, garbage);
    Ok(())
}

/// Delete what a stored meta no longer references. A legacy `messages.jsonl` chunk is emptied
/// rather than removed: the session layout keeps that file.
fn collect_garbage(storage: &dyn Storage, s: &SessionRef, mut garbage: seglog::Garbage) {
    let Ok(live) = s.live() else {
        return;
    };
    let before = garbage.paths.len();
    garbage.paths.retain(|p| *p != live);
    if garbage.paths.len() != before {
        if let Err(e) = storage.write(&live, b"") {
            tracing::debug!(session = %s.uri(), error = %e, "legacy live file left as is");
        }
    }
    seglog::collect_garbage(storage, garbage);
}

/// Serialize messages as JSON lines.
pub fn to_lines(messages: &[Value]) -> ServiceResult<Vec<u8>> {
    let mut out = Vec::new();
    for m in messages {
        serde_json::to_writer(&mut out, m).map_err(ServiceError::internal)?;
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;
    use serde_json::json;

    #[test]
    fn lines_and_light_parse() {
        let data = b"{\"id\":\"a\",\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"text\":\"x\"}]}\n{\"id\":\"b\",\"role\":\"user\",\"parts\":[{\"type\":\"tool\"}]}\n{\"id\":\"c\"";
        let (spans, complete) = lines(data);
        assert_eq!(spans.len(), 2);
        assert!(complete < data.len());
        let a = light(&data[spans[0].start..spans[0].end]).unwrap();
        assert!(a.starts_turn());
        let b = light(&data[spans[1].start..spans[1].end]).unwrap();
        assert!(!b.starts_turn());
    }

    #[test]
    fn tail_tokens_reads_only_what_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(dir.path()).unwrap();
        let p = StorePath::parse("a/m.jsonl").unwrap();
        let msgs: Vec<Value> = (0..2000)
            .map(|i| json!({"id": format!("m{i}"), "role": "user", "parts": [{"type": "text", "text": "x".repeat(i % 50 + 4)}]}))
            .collect();
        let bytes = to_lines(&msgs).unwrap();
        st.write(&p, &bytes).unwrap();
        let size = bytes.len() as u64;
        for k in [1u64, 3, 700, 1999, 2000, 5000] {
            let expect: u64 = msgs
                .iter()
                .rev()
                .take(k as usize)
                .map(tokens::estimate_message)
                .sum();
            assert_eq!(tail_tokens(&st, &p, size, k).unwrap(), expect, "k={k}");
        }
        assert_eq!(first_id(&st, &p).unwrap().as_deref(), Some("m0"));
        assert_eq!(
            first_id(&st, &StorePath::parse("a/none").unwrap()).unwrap(),
            None
        );
    }
}
