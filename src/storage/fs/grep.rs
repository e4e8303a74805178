//! S1 grep: a regex over the lines of one file or of every visible file of a subtree.
//!
//! The regex is compiled here, on the pool, before any storage access, with a size limit: a
//! pathological pattern is a 400, never a hang, and never CPU spent on an HTTP worker. The walk stops at `node_limit` matches and when the client has
//! gone; the pool runs it at a lower CPU priority than the HTTP workers.

use regex::{Regex, RegexBuilder};
use serde::Serialize;

use super::walk::{Ended, Flow, Order, Walker};
use super::{file_not_found, lossy_string, stat, StorageFail};
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::storage::tags::{TagCache, TagQuery};
use crate::storage::uri::VikingUri;
use crate::storage::{Storage, StorageError};

/// What to look for, and how much of it.
pub struct GrepQuery {
    pub pattern: String,
    pub case_insensitive: bool,
    /// `None` = unlimited.
    pub node_limit: Option<usize>,
    pub level_limit: usize,
    pub exclude: Option<VikingUri>,
    pub before_context: usize,
    pub after_context: usize,
    /// `tags` / `include_tags`: only files carrying the tags; each match with its file's tags.
    pub tags: TagQuery,
}

/// Compiled-program budget of a grep regex: generous for real patterns, and a pattern such as
/// `(a{1000}){1000}` fails to compile (400) instead of eating memory and CPU.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Lazy-DFA cache per search; larger patterns fall back to slower but bounded engines.
const REGEX_DFA_LIMIT: usize = 4 << 20;

/// Longest grep pattern accepted, in bytes. `size_limit` bounds the compiled program but not
/// what is built before and beside it (the parsed syntax tree, literal prefilters for long
/// alternations): an 18 MB alternation of literals peaked at 3 GB. Real patterns are short.
pub const MAX_PATTERN_BYTES: usize = 8192;

/// 400 for a pattern over [`MAX_PATTERN_BYTES`]; checked before any other work.
pub fn check_pattern_size(pattern: &str) -> ServiceResult<()> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(ServiceError::invalid_argument(format!(
            "invalid operation: Invalid regex pattern: longer than {MAX_PATTERN_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Compile a grep pattern (Rust `regex` syntax, unanchored) within the size limits.
pub fn compile(pattern: &str, case_insensitive: bool, uri: &VikingUri) -> ServiceResult<Regex> {
    check_pattern_size(pattern)?;
    RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_LIMIT)
        .build()
        .map_err(|e| {
            ServiceError::invalid_argument(format!("invalid operation: Invalid regex pattern: {e}"))
                .detail("resource", uri.uri())
        })
}

/// One neighbouring line of a match.
#[derive(Serialize)]
struct Around<'a> {
    line: usize,
    content: &'a str,
}

/// One match, serialized straight into the answer (an unlimited grep can produce hundreds of
/// thousands; no intermediate JSON tree is built for them).
#[derive(Serialize)]
struct Match<'a> {
    uri: &'a str,
    line: usize,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    before_context: Option<Vec<Around<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after_context: Option<Vec<Around<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a [String]>,
}

/// The `matches` array being written, with its counters.
struct Hits {
    json: Vec<u8>,
    count: usize,
    files_scanned: u64,
    limit: Option<usize>,
}

impl Hits {
    fn full(&self) -> bool {
        self.limit.is_some_and(|l| self.count >= l)
    }

    fn push(&mut self, m: &Match<'_>) -> ServiceResult<()> {
        self.json.push(if self.count == 0 { b'[' } else { b',' });
        serde_json::to_writer(&mut self.json, m).map_err(ServiceError::internal)?;
        self.count += 1;
        Ok(())
    }
}

/// Files read together by one [`Storage::read_many`]: an object store fetches them with
/// bounded parallelism from this one pool thread. Matches are still taken file by file in walk
/// order, so `node_limit` cuts at the same place as a one-by-one scan (at most one batch is
/// read beyond it).
const READ_BATCH: usize = 128;

impl GrepQuery {
    /// `None`: the file lacks a required tag (skipped); else its tags when they are reported.
    #[allow(clippy::option_option)]
    fn file_tags(
        &self,
        storage: &dyn Storage,
        cache: &mut TagCache,
        file: &VikingUri,
    ) -> ServiceResult<Option<Option<Vec<String>>>> {
        if !self.tags.active() {
            return Ok(Some(None));
        }
        let tags = cache
            .tags_of(storage, file.store_path())
            .map_err(|e| StorageFail(file).map(e))?;
        if !self.tags.keeps(&tags) {
            return Ok(None);
        }
        Ok(Some(Some(tags)))
    }

    /// Read and grep `files` (in order) until the limit is reached or the client has gone.
    fn grep_batch(
        &self,
        regex: &Regex,
        storage: &dyn Storage,
        abandoned: &dyn Fn() -> bool,
        files: &[(VikingUri, Option<Vec<String>>)],
        hits: &mut Hits,
    ) -> ServiceResult<()> {
        let paths: Vec<_> = files.iter().map(|(u, _)| u.store_path().clone()).collect();
        let read = storage.read_many(&paths, &|| !abandoned());
        for ((uri, tags), got) in files.iter().zip(read) {
            if hits.full() || abandoned() {
                break;
            }
            match got {
                Ok(bytes) => self.grep_bytes(regex, uri, tags.as_deref(), bytes, hits)?,
                // Removed or replaced by a directory since it was listed.
                Err(StorageError::NotFound(_)) | Err(StorageError::IsADirectory(_)) => {}
                Err(e) => return Err(StorageFail(uri).map(e)),
            }
        }
        Ok(())
    }

    fn grep_file(
        &self,
        regex: &Regex,
        storage: &dyn Storage,
        uri: &VikingUri,
        tags: Option<&[String]>,
        hits: &mut Hits,
    ) -> ServiceResult<()> {
        let bytes = match storage.read(uri.store_path()) {
            Ok(b) => b,
            // Removed or replaced by a directory since it was listed.
            Err(StorageError::NotFound(_)) | Err(StorageError::IsADirectory(_)) => return Ok(()),
            Err(e) => return Err(StorageFail(uri).map(e)),
        };
        self.grep_bytes(regex, uri, tags, bytes, hits)
    }

    fn grep_bytes(
        &self,
        regex: &Regex,
        uri: &VikingUri,
        tags: Option<&[String]>,
        bytes: Vec<u8>,
        hits: &mut Hits,
    ) -> ServiceResult<()> {
        hits.files_scanned += 1;
        let text = lossy_string(bytes);
        let shown = uri.uri();
        if self.before_context == 0 && self.after_context == 0 {
            for (i, line) in text.split('\n').enumerate() {
                if hits.full() {
                    break;
                }
                if regex.is_match(line) {
                    hits.push(&Match {
                        uri: &shown,
                        line: i + 1,
                        content: line,
                        before_context: None,
                        after_context: None,
                        tags,
                    })?;
                }
            }
            return Ok(());
        }
        // Context needs random access to neighbouring lines.
        let lines: Vec<&str> = text.split('\n').collect();
        let around = |from: usize, to: usize| -> Vec<Around<'_>> {
            (from..to)
                .map(|j| Around {
                    line: j + 1,
                    content: lines[j],
                })
                .collect()
        };
        for (i, line) in lines.iter().enumerate() {
            if hits.full() {
                break;
            }
            if !regex.is_match(line) {
                continue;
            }
            let to = (i + 1 + self.after_context).min(lines.len());
            hits.push(&Match {
                uri: &shown,
                line: i + 1,
                content: line,
                before_context: Some(around(i.saturating_sub(self.before_context), i)),
                after_context: Some(around(i + 1, to)),
                tags,
            })?;
        }
        Ok(())
    }
}

/// S1: grep `uri` (a file or a subtree) as `who` sees it. The result is JSON-encoded here: an
/// unlimited grep can answer megabytes.
pub fn grep(
    storage: &dyn Storage,
    abandoned: &dyn Fn() -> bool,
    who: &Identity,
    uri: &VikingUri,
    query: &GrepQuery,
) -> ServiceResult<Vec<u8>> {
    let regex = compile(&query.pattern, query.case_insensitive, uri)?;
    let meta = stat(storage, uri)?.ok_or_else(|| file_not_found(uri))?;
    let mut hits = Hits {
        json: br#"{"matches":"#.to_vec(),
        count: 0,
        files_scanned: 0,
        limit: query.node_limit,
    };
    let excluded = query.exclude.as_ref().is_some_and(|ex| uri.starts_with(ex));
    if excluded || hits.full() {
        // nothing to scan
    } else if !meta.is_dir() {
        let mut cache = TagCache::default();
        if let Some(tags) = query.file_tags(storage, &mut cache, uri)? {
            query.grep_file(&regex, storage, uri, tags.as_deref(), &mut hits)?;
        }
    } else {
        let mut cache = TagCache::default();
        let walker = Walker {
            who,
            show_hidden_files: false,
            max_depth: query.level_limit,
            order: Order::ByName,
            exclude: query.exclude.as_ref(),
        };
        let mut batch: Vec<(VikingUri, Option<Vec<String>>)> = Vec::with_capacity(READ_BATCH);
        let ended = walker.run(storage, abandoned, uri, |file, meta, _| {
            if meta.is_dir() {
                return Ok(Flow::Continue);
            }
            if abandoned() {
                return Ok(Flow::Stop);
            }
            let Some(tags) = query.file_tags(storage, &mut cache, file)? else {
                return Ok(Flow::Continue);
            };
            batch.push((file.clone(), tags));
            if batch.len() < READ_BATCH {
                return Ok(Flow::Continue);
            }
            query.grep_batch(&regex, storage, abandoned, &batch, &mut hits)?;
            batch.clear();
            Ok(if hits.full() {
                Flow::Stop
            } else {
                Flow::Continue
            })
        })?;
        if ended != Ended::Abandoned && !hits.full() && !abandoned() {
            query.grep_batch(&regex, storage, abandoned, &batch, &mut hits)?;
        }
    }
    let Hits {
        mut json,
        count,
        files_scanned,
        ..
    } = hits;
    json.extend_from_slice(if count == 0 { b"[]" } else { b"]" });
    json.extend_from_slice(
        format!(r#","count":{count},"match_count":{count},"files_scanned":{files_scanned}}}"#)
            .as_bytes(),
    );
    Ok(json)
}
