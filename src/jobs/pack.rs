//! Pack export/import/backup/restore as pool jobs (docs/API.md, Pack). Export writes the ZIP
//! into a bounded channel the HTTP response drains; import checks, stages and publishes on
//! the ingest pool and records what it published for search.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::ingest::archive::ArchiveLimits;
use crate::ingest::pack::export::{self, PackSource, PackStats};
use crate::ingest::pack::import::{self, ImportRequest, Imported};
use crate::ingest::scratch::Scratch;
use crate::ingest::{active, uploads};
use crate::search::changes::{ChangeKind, Recorder};
use crate::search::embed::Embedder;
use crate::storage::uri::VikingUri;

use super::{BlockingJob, JobContext};

/// Bytes handed to the response per message (the channel holds a few of these).
const CHUNK_BYTES: usize = 256 * 1024;

/// A `Write` into the response channel: full chunks are sent, waiting while the client is
/// slower than the export; a closed channel (client gone) fails the write.
pub struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Check an export's source before the response starts (a 4xx is still possible then).
pub struct CheckExport {
    pub uri: VikingUri,
}

impl BlockingJob for CheckExport {
    type Output = ServiceResult<()>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        export::check_export_source(ctx.storage, &self.uri)
    }
}

/// Write one pack into `out`; runs until the pack is complete or the client went away.
pub struct ExportPack {
    pub who: Identity,
    pub source: PackSource,
    pub out: mpsc::Sender<Bytes>,
    /// `include_vectors` with an embedder configured: its stored vectors travel.
    pub vectors: Option<Arc<Embedder>>,
}

impl BlockingJob for ExportPack {
    type Output = ServiceResult<PackStats>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let started = std::time::Instant::now();
        let closed = self.out.clone();
        let keep_going = || !closed.is_closed();
        let out = export::write_pack(
            ctx.storage,
            &self.who,
            &self.source,
            ChannelWriter::new(self.out),
            self.vectors.as_deref(),
            &keep_going,
        );
        match &out {
            Ok(stats) => tracing::info!(
                files = stats.files,
                bytes = stats.bytes,
                ms = started.elapsed().as_millis() as u64,
                "pack exported"
            ),
            // The response already started: all the client sees is a cut-off body.
            Err(e) => tracing::warn!(error = %e, "pack export ended early"),
        }
        out
    }
}

/// One import or restore, start to end, on the ingest pool.
pub struct ImportPack {
    pub req: ImportRequest,
    pub settings: Arc<Settings>,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for ImportPack {
    type Output = ServiceResult<Imported>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let ImportPack {
            req,
            settings,
            recorder,
        } = self;
        let res = &settings.resources;
        let stale_after = Duration::from_secs(res.stale_after_secs);
        let account = req.who.account.clone();
        let out = (|| {
            let scratch = Scratch::create(res, &req.work_id).map_err(|e| {
                tracing::error!(error = %e, "cannot create the import scratch directory");
                ServiceError::unavailable("ingest", "no local scratch space for the import")
            })?;
            // The marker keeps the staging tree from the sweep while this lives; after a crash
            // the sweep removes it (nothing was published).
            active::touch(ctx.storage, &account, &req.who.user, &req.work_id)?;
            let mut beat = active::Heartbeat::new(
                ctx.storage,
                &account,
                &req.who.user,
                &req.work_id,
                stale_after,
            );
            let limits = ArchiveLimits {
                max_entries: res.archive_max_entries,
                max_total_bytes: res.archive_max_total_bytes,
                max_ratio: res.archive_max_ratio,
                max_depth: res.archive_max_depth,
            };
            let done = import::import(
                ctx.storage,
                &req,
                limits,
                scratch.path(),
                &settings.quota,
                &mut || beat.beat(),
            );
            let _ = active::clear(ctx.storage, &account, &req.work_id);
            done
        })();
        // 0.5.2 consumes the upload whatever the outcome.
        let _ = uploads::remove(ctx.storage, &account, &req.upload_id);
        if let Ok(imported) = &out {
            let paths: Vec<_> = imported
                .units
                .iter()
                .map(|u| u.store_path().clone())
                .collect();
            if !paths.is_empty() {
                recorder.record_store_paths(ctx.storage, &paths, ChangeKind::Ingest);
            }
            tracing::info!(uri = %imported.uri, files = imported.files, bytes = imported.bytes, "pack imported");
        }
        out
    }
}
