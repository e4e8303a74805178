//! S1 grep: a regex over the lines of one file or of every visible file of a subtree.
//!
//! The regex is compiled by the handler with a size limit (a pathological pattern is a 400
//! there, never a hang here). The walk stops at `node_limit` matches and when the client has
//! gone; the pool runs it at a lower CPU priority than the HTTP workers.

use regex::Regex;
use serde_json::{json, Map, Value};

use super::walk::{Flow, Order, Walker};
use super::{file_not_found, lossy_string, stat, StorageFail};
use crate::actors::{BlockingJob, JobContext};
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::storage::uri::VikingUri;
use crate::storage::StorageError;

pub struct GrepJob {
    pub who: Identity,
    pub uri: VikingUri,
    pub regex: Regex,
    /// `None` = unlimited.
    pub node_limit: Option<usize>,
    pub level_limit: usize,
    pub exclude: Option<VikingUri>,
    pub before_context: usize,
    pub after_context: usize,
}

struct Hits {
    matches: Vec<Value>,
    files_scanned: u64,
    limit: Option<usize>,
}

impl Hits {
    fn full(&self) -> bool {
        self.limit.is_some_and(|l| self.matches.len() >= l)
    }
}

impl GrepJob {
    fn grep_file(
        &self,
        ctx: &JobContext<'_>,
        uri: &VikingUri,
        hits: &mut Hits,
    ) -> ServiceResult<()> {
        let bytes = match ctx.storage.read(uri.store_path()) {
            Ok(b) => b,
            // Removed or replaced by a directory since it was listed.
            Err(StorageError::NotFound(_)) | Err(StorageError::IsADirectory(_)) => return Ok(()),
            Err(e) => return Err(StorageFail(uri).map(e)),
        };
        hits.files_scanned += 1;
        let text = lossy_string(bytes);
        let with_context = self.before_context > 0 || self.after_context > 0;
        let lines: Vec<&str> = text.split('\n').collect();
        let shown = uri.uri();
        for (i, line) in lines.iter().enumerate() {
            if hits.full() {
                break;
            }
            if !self.regex.is_match(line) {
                continue;
            }
            let mut m = Map::new();
            m.insert("uri".into(), shown.clone().into());
            m.insert("line".into(), (i + 1).into());
            m.insert("content".into(), (*line).into());
            if with_context {
                let ctx_lines = |from: usize, to: usize| -> Value {
                    (from..to)
                        .map(|j| json!({"line": j + 1, "content": lines[j]}))
                        .collect()
                };
                let from = i.saturating_sub(self.before_context);
                let to = (i + 1 + self.after_context).min(lines.len());
                m.insert("before_context".into(), ctx_lines(from, i));
                m.insert("after_context".into(), ctx_lines(i + 1, to));
            }
            hits.matches.push(Value::Object(m));
        }
        Ok(())
    }
}

impl BlockingJob for GrepJob {
    /// The result, JSON-encoded here: an unlimited grep can answer megabytes.
    type Output = ServiceResult<Vec<u8>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let meta = if self.uri.has_internal_segment() {
            None
        } else {
            stat(ctx.storage, &self.uri)?
        };
        let meta = meta.ok_or_else(|| file_not_found(&self.uri))?;
        let mut hits = Hits {
            matches: Vec::new(),
            files_scanned: 0,
            limit: self.node_limit,
        };
        let excluded = self
            .exclude
            .as_ref()
            .is_some_and(|ex| self.uri.starts_with(ex));
        if excluded || hits.full() {
            // nothing to scan
        } else if !meta.is_dir() {
            self.grep_file(ctx, &self.uri, &mut hits)?;
        } else {
            let walker = Walker {
                who: &self.who,
                show_hidden_files: false,
                max_depth: self.level_limit,
                order: Order::ByName,
                exclude: self.exclude.as_ref(),
            };
            walker.run(ctx, &self.uri, |uri, meta, _| {
                if meta.is_dir() {
                    return Ok(Flow::Continue);
                }
                if ctx.is_abandoned() {
                    return Ok(Flow::Stop);
                }
                self.grep_file(ctx, uri, &mut hits)?;
                Ok(if hits.full() {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            })?;
        }
        let n = hits.matches.len();
        let result = json!({
            "matches": hits.matches,
            "count": n,
            "match_count": n,
            "files_scanned": hits.files_scanned,
        });
        serde_json::to_vec(&result).map_err(ServiceError::internal)
    }
}
