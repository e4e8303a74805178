//! Pack routes (0.5.2, docs/API.md, Pack): `POST /api/v1/pack/export` and `/backup` stream a
//! .ovpack ZIP while the tree is read (a job on the ingest pool writes it into a bounded
//! channel this response drains); `/import` and `/restore` take a temp upload, and answer
//! `{"uri": …}` once the tree is published (indexing follows).

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::error::ServiceError;
use crate::ingest::pack::export::PackSource;
use crate::ingest::pack::import::{Destination, ImportRequest, OnConflict, VectorMode};
use crate::jobs::pack::{CheckExport, ExportPack, ImportPack};
use crate::storage::uri::{self, Access, VikingUri};

use super::auth::{AnyKey, Caller, RootOrAdmin};
use super::envelope::{ApiOk, ApiResult};
use super::extract::{flexible_bool, ApiJson, OptionalJson};
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/pack/export").post(export))
        .add(at("/api/v1/pack/backup").post(backup))
        .add(at("/api/v1/pack/import").post(import))
        .add(at("/api/v1/pack/restore").post(restore));
}

/// Chunks buffered between the exporting job and the response.
const CHANNEL_CHUNKS: usize = 4;
/// A client that takes no bytes for this long while the export has some ready is cut off, so
/// a stalled reader cannot hold an ingest thread for ever.
const STALL: Duration = Duration::from_secs(120);

/// 0.5.2 `ExportRequest` (extra fields forbidden).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportBody {
    uri: String,
    /// Carry the stored vectors of the packed files (0.5.2's dense snapshot, with the model
    /// that made them); nothing to carry without an embedder.
    #[serde(default, deserialize_with = "flexible_bool")]
    include_vectors: bool,
}

/// 0.5.2 `BackupRequest`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct BackupBody {
    /// As for export.
    #[serde(default, deserialize_with = "flexible_bool")]
    include_vectors: bool,
}

/// 0.5.2 `ImportRequest`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportBody {
    /// Id returned by `/api/v1/resources/temp_upload`.
    temp_file_id: String,
    /// Parent URI the pack's root is placed under (`viking://` for a top-level scope pack).
    parent: String,
    /// `fail` (default), `overwrite` or `skip`, for the whole imported root.
    on_conflict: Option<String>,
    /// `auto` (default), `recompute` or `require`.
    vector_mode: Option<String>,
}

/// 0.5.2 `RestoreRequest`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PackRestoreBody)]
pub(super) struct RestoreBody {
    temp_file_id: String,
    on_conflict: Option<String>,
    vector_mode: Option<String>,
}

/// The response body: the channel's chunks. Remembers whether the last poll found the
/// channel empty (the export is working) or handed out a chunk (the client must take it).
struct PackStream {
    rx: Rc<std::cell::RefCell<mpsc::Receiver<Bytes>>>,
    last_handed: Rc<Cell<Option<Instant>>>,
}

impl Stream for PackStream {
    type Item = Result<Bytes, actix_web::Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.rx.borrow_mut().poll_recv(cx);
        match polled {
            Poll::Ready(Some(chunk)) => {
                self.last_handed.set(Some(Instant::now()));
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                self.last_handed.set(None);
                Poll::Pending
            }
        }
    }
}

/// Start `source`'s export job and answer with its stream.
fn stream_pack(
    state: &AppState,
    who: crate::identity::Identity,
    source: PackSource,
    include_vectors: bool,
) -> Result<HttpResponse, ServiceError> {
    let filename = format!("{}.ovpack", source.base_name());
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    // The job runs to the end of the pack or until the channel closes; its result is only
    // logged (the response has started by then).
    drop(state.pools.ingest().submit(ExportPack {
        who,
        source,
        out: tx,
        vectors: state.search.embedder.clone().filter(|_| include_vectors),
    })?);
    let rx = Rc::new(std::cell::RefCell::new(rx));
    let last_handed: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
    let watch_rx = Rc::downgrade(&rx);
    let watch_last = last_handed.clone();
    actix_web::rt::spawn(async move {
        loop {
            actix_web::rt::time::sleep(STALL / 4).await;
            let Some(rx) = watch_rx.upgrade() else { break };
            if watch_last.get().is_some_and(|t| t.elapsed() > STALL) {
                tracing::warn!("pack export: the client took nothing for {STALL:?}; cut off");
                rx.borrow_mut().close();
                break;
            }
        }
    });
    // The filename is the pack's base name (a URI segment: no quotes or controls).
    let disposition = format!(
        "attachment; filename=\"{}\"",
        filename.replace(['"', '\\'], "_")
    );
    Ok(HttpResponse::Ok()
        .content_type("application/zip")
        .insert_header(("Content-Disposition", disposition))
        .streaming(PackStream { rx, last_handed }))
}

async fn export(
    state: web::Data<AppState>,
    caller: Caller<AnyKey>,
    ApiJson(body): ApiJson<ExportBody>,
) -> Result<HttpResponse, ServiceError> {
    let uri = uri::parse(&body.uri, &caller.identity)?;
    uri::authorize(&uri, &caller.identity, Access::Read)?;
    state
        .pools
        .storage()
        .run(CheckExport { uri: uri.clone() })
        .await??;
    stream_pack(
        &state,
        caller.identity,
        PackSource::Tree(uri),
        body.include_vectors,
    )
}

async fn backup(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    OptionalJson(body): OptionalJson<BackupBody>,
) -> Result<HttpResponse, ServiceError> {
    let account_root = VikingUri::root(&caller.identity.account)?;
    let who = account_maintenance(caller.identity);
    let include_vectors = body.include_vectors;
    stream_pack(
        &state,
        who,
        PackSource::Backup { account_root },
        include_vectors,
    )
}

/// 0.5.2 backs up and restores with account-wide authority (ROOT within the caller's
/// account, every user's space, no resource ACL), whether the caller is ROOT or ADMIN;
/// export and import keep the caller's own view.
fn account_maintenance(who: crate::identity::Identity) -> crate::identity::Identity {
    crate::identity::Identity {
        role: crate::identity::Role::Root,
        ..who
    }
}

fn work_id() -> String {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
    format!("pack_{}", hex::encode(id))
}

async fn run_import(
    state: &AppState,
    who: crate::identity::Identity,
    temp_file_id: String,
    destination: Destination,
    on_conflict: Option<&str>,
    vector_mode: Option<&str>,
) -> ApiResult {
    let req = ImportRequest {
        who,
        upload_id: temp_file_id,
        destination,
        on_conflict: OnConflict::parse(on_conflict)?,
        vector_mode: VectorMode::parse(vector_mode)?,
        work_id: work_id(),
        embedder: state.search.embedder.clone(),
    };
    let job = ImportPack {
        req,
        settings: state.settings.clone(),
        recorder: state.search.recorder.clone(),
    };
    let imported = state.pools.ingest().run(job).await??;
    Ok(ApiOk::new(json!({"uri": imported.uri})))
}

async fn import(
    state: web::Data<AppState>,
    caller: Caller<AnyKey>,
    ApiJson(body): ApiJson<ImportBody>,
) -> ApiResult {
    let parent = if body.parent.trim().trim_end_matches('/') == "viking:" {
        VikingUri::root(&caller.identity.account)?
    } else {
        uri::parse(&body.parent, &caller.identity)?
    };
    let dest = Destination::Under(parent);
    run_import(
        &state,
        caller.identity,
        body.temp_file_id,
        dest,
        body.on_conflict.as_deref(),
        body.vector_mode.as_deref(),
    )
    .await
}

async fn restore(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    ApiJson(body): ApiJson<RestoreBody>,
) -> ApiResult {
    run_import(
        &state,
        account_maintenance(caller.identity),
        body.temp_file_id,
        Destination::Restore,
        body.on_conflict.as_deref(),
        body.vector_mode.as_deref(),
    )
    .await
}
