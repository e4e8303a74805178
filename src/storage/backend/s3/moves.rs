//! Directory moves that appear at their destination all at once.
//!
//! S3 has no rename: a tree moves object by object. So that no reader ever sees part of a
//! tree at its destination, a move hides the destination behind a *publishing flag* — the
//! sibling object `<parent>/.longship-pub-<name>` — while it fills it:
//!
//! 1. take a lease `move:<id>` (see [`super::lease`]: renewed while the move runs, taken over
//!    at once when its holder on this machine died, otherwise after a lifetime unrenewed);
//! 2. write the intent `.longship-moves/<id>.json` (from, to), so a crash can be found;
//! 3. create the flag, create-only, holding `<id>` (a second mover of the same name loses);
//! 4. claim `to` by creating its directory marker, create-only, also holding `<id>`;
//! 5. copy every object server-side;
//! 6. delete the flag — **the commit point**: the whole tree appears at once;
//! 7. delete the sources, then the intent, then release the lease.
//!
//! Readers pay nothing for the flag in a parent's listing (it arrives in the same delimiter
//! listing as the child and hides it); a stat, listing or removal of the flagged directory
//! itself costs one HEAD more and answers NotFound. A file deep inside the tree read by a
//! guessed path is not hidden: each object is complete, the tree is what is atomic.
//!
//! Recovery ([`recover`], run periodically on every instance) takes the lease of each intent
//! it finds; if it gets it, the mover is gone, and what is left decides ([`decide`]): a flag
//! still there means the copy may be incomplete, so the partial destination is deleted first
//! and the flag after it — the flag never goes while a partial tree is under it. A flag
//! already gone with the destination still claimed means the move committed: the remaining
//! sources are deleted. Sources are never needed by recovery, so a sweep that removes them
//! (an ingestion's staging tree) cannot race it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode};
use serde::{Deserialize, Serialize};

use super::keys::{Keys, DIR_MARKER, MOVES_DIR};
use super::{lease, Inner, S3Storage, FAN_OUT};
use crate::storage::{LockGuard, StorageError, StorageResult, StorePath};
use crate::time::epoch_millis_now;

/// What a move records before it touches anything.
#[derive(Debug, Serialize, Deserialize)]
pub struct Intent {
    pub id: String,
    pub from: String,
    pub to: String,
    /// Wall-clock start, for people reading the object; staleness is the lease's business.
    pub started_ms: u64,
}

/// What recovery does with a move whose mover is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Flag and claim are ours: the copy may be partial. Delete the destination, then the flag.
    RollBack,
    /// The flag is ours but `to` was never claimed (someone else's name): delete the flag.
    DropFlag,
    /// The flag is gone and `to` is still claimed by us: the move committed. Delete sources.
    RollForward,
    /// Neither is ours: the move never started or was settled already.
    Forget,
}

/// The recovery of a move from what its flag and its claim on `to` hold.
pub fn decide(flag_ours: bool, claim_ours: bool) -> Recovery {
    match (flag_ours, claim_ours) {
        (true, true) => Recovery::RollBack,
        (true, false) => Recovery::DropFlag,
        (false, true) => Recovery::RollForward,
        (false, false) => Recovery::Forget,
    }
}

fn lease_name(id: &str) -> String {
    format!("move:{id}")
}

fn intent_key(inner: &Inner, id: &str) -> StorageResult<Path> {
    inner.keys.internal(&format!("{MOVES_DIR}/{id}.json"))
}

fn already_exists(to: &StorePath) -> impl Fn(StorageError) -> StorageError + '_ {
    move |e| match e {
        StorageError::Conflict(_) => StorageError::AlreadyExists(to.to_string()),
        other => other,
    }
}

/// How a move that did not complete left the store.
enum Failed {
    /// Nothing of it remains but the intent, which can go.
    Settled(StorageError),
    /// Flag, claim or copies may remain: the intent stays for recovery.
    Unsettled(StorageError),
}

/// Objects copied per storage call: each call has the per-operation deadline, so a tree of
/// any size moves as long as the store keeps answering. Also one step of a move: the
/// caller's `between_steps` runs after each batch, so a batch is kept short (a few rounds of
/// [`FAN_OUT`] requests) to let other accounts' jobs in often.
const COPY_BATCH: usize = 128;
/// Sources deleted per step once the move committed (one batched delete request).
const DELETE_BATCH: usize = 1000;

/// Move the directory `from` to `to` (which must not exist), visible at `to` only once whole.
/// Runs on the calling (blocking) thread, one storage call per step, with `between_steps`
/// called between the batches of copies and of deletions (never while a step is in flight;
/// the lease renews on the runtime meanwhile, and is checked before every copy batch).
pub fn move_tree(
    storage: &S3Storage,
    from: &StorePath,
    to: &StorePath,
    between_steps: &dyn Fn(),
) -> StorageResult<()> {
    let inner = &storage.inner;
    let Some(flag) = inner.keys.flag(to)? else {
        return Err(StorageError::InvalidPath("cannot move the root".into()));
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let lease = storage.block_on(lease::acquire(
        inner.clone(),
        storage.handle.clone(),
        &lease_name(&id),
        inner.lease,
    ))?;
    let intent = Intent {
        id: id.clone(),
        from: from.as_str().to_string(),
        to: to.as_str().to_string(),
        started_ms: epoch_millis_now(),
    };
    let key = intent_key(inner, &id)?;
    let body = serde_json::to_vec(&intent)
        .map_err(|e| StorageError::Unavailable(format!("cannot encode a move intent: {e}")))?;
    storage.block_on(inner.put(&key, body.into(), PutMode::Overwrite, to))?;
    let steps = Steps {
        lease: &lease,
        between: between_steps,
    };
    let (result, settled) = match publish(storage, &steps, &id, from, to, &flag) {
        Ok(settled) => (Ok(()), settled),
        Err(Failed::Settled(e)) => (Err(e), true),
        Err(Failed::Unsettled(e)) => (Err(e), false),
    };
    if settled {
        if let Err(e) = storage.block_on(inner.delete_all(vec![key], to)) {
            tracing::warn!(error = %e, %from, %to, "could not remove a finished move's intent; recovery removes it");
        }
    }
    drop(lease);
    result
}

/// What a running move checks and calls between its steps.
struct Steps<'a> {
    lease: &'a lease::Lease,
    between: &'a dyn Fn(),
}

/// Steps 3–7 of the module docs. `Ok(false)`: committed, but sources remain for recovery.
fn publish(
    storage: &S3Storage,
    steps: &Steps<'_>,
    id: &str,
    from: &StorePath,
    to: &StorePath,
    flag: &Path,
) -> Result<bool, Failed> {
    let inner = &storage.inner;
    let tag = Bytes::from(id.to_string());
    storage
        .block_on(inner.put(flag, tag.clone(), PutMode::Create, to))
        .map_err(already_exists(to))
        .map_err(Failed::Settled)?;
    let claim = inner.keys.marker(to).map_err(Failed::Unsettled)?;
    if let Err(e) = storage.block_on(inner.put(&claim, tag, PutMode::Create, to)) {
        return match storage.block_on(inner.delete_all(vec![flag.clone()], to)) {
            Ok(()) => Err(Failed::Settled(already_exists(to)(e))),
            Err(_) => Err(Failed::Unsettled(already_exists(to)(e))),
        };
    }
    let lease = steps.lease;
    let copied = copy_tree(storage, steps, from, to);
    let sources = match copied {
        Ok(sources) => sources,
        // A copy that failed for want of an answer may still land: leave the roll-back to
        // recovery, which comes later (the destination stays hidden meanwhile).
        Err(e @ StorageError::Unavailable(_)) => return Err(Failed::Unsettled(e)),
        Err(e) if lease.held() => {
            return match storage.block_on(roll_back(inner, to, flag)) {
                Ok(()) => Err(Failed::Settled(e)),
                Err(_) => Err(Failed::Unsettled(e)),
            }
        }
        Err(e) => return Err(Failed::Unsettled(e)),
    };
    if !lease.held() {
        // Recovery on another instance may be rolling this move back: do not commit.
        return Err(Failed::Unsettled(StorageError::Unavailable(format!(
            "the move of {from} to {to} stalled past its lease; recovery settles it"
        ))));
    }
    storage
        .block_on(inner.delete_all(vec![flag.clone()], to))
        .map_err(Failed::Unsettled)?;
    // Committed: the move happened, whatever becomes of the sources now.
    match delete_sources(storage, steps.between, from, sources) {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::warn!(error = %e, %from, %to, "moved, but the sources remain; recovery removes them");
            Ok(false)
        }
    }
}

/// Copy every object under `from` (but its own marker: `to` was claimed) to the same place
/// under `to`, [`COPY_BATCH`] per call and per step. Returns the keys copied, for deletion
/// after the commit.
fn copy_tree(
    storage: &S3Storage,
    steps: &Steps<'_>,
    from: &StorePath,
    to: &StorePath,
) -> StorageResult<Vec<Path>> {
    let inner = &storage.inner;
    let (Some(src_root), Some(dst_root)) = (inner.keys.of(from)?, inner.keys.of(to)?) else {
        return Err(StorageError::InvalidPath("cannot move the root".into()));
    };
    let own_marker = inner.keys.marker(from)?;
    let src_prefix = format!("{}/", src_root.as_ref());
    let mut copies = Vec::new();
    for o in storage.block_on(inner.objects_under(from))? {
        if o.location == own_marker {
            continue;
        }
        let Some(rest) = o.location.as_ref().strip_prefix(&src_prefix) else {
            continue;
        };
        let target = Path::parse(format!("{}/{rest}", dst_root.as_ref()))
            .map_err(|e| StorageError::InvalidPath(format!("{to}/{rest}: {e}")))?;
        copies.push((o.location, target));
    }
    for (n, batch) in copies.chunks(COPY_BATCH).enumerate() {
        if n > 0 {
            (steps.between)();
        }
        if !steps.lease.held() {
            // Recovery may be deleting this destination: copying on would refill it.
            return Err(StorageError::Unavailable(format!(
                "the move of {from} to {to} stalled past its lease"
            )));
        }
        // After a failure no new copy starts, but those in flight are waited for: a roll-back
        // must not race a copy that lands after it.
        let failed = AtomicBool::new(false);
        let failed = &failed;
        let results = storage.block_on(async {
            Ok(stream::iter(batch.iter().map(|(src, dst)| async move {
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let copied = inner.store.copy(src, dst).await;
                if copied.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                copied.map_err(|e| inner.internal_err(e, &format!("{from} -> {to}")))
            }))
            .buffer_unordered(FAN_OUT)
            .collect::<Vec<_>>()
            .await)
        })?;
        results.into_iter().collect::<StorageResult<()>>()?;
    }
    Ok(copies.into_iter().map(|(src, _)| src).collect())
}

/// Split `keys` under `dir` into its files, its sub-directory markers and its own marker.
fn deletion_order(
    inner: &Inner,
    dir: &StorePath,
    keys: Vec<Path>,
) -> StorageResult<[Vec<Path>; 3]> {
    let own_marker = inner.keys.marker(dir)?;
    let (markers, files): (Vec<Path>, Vec<Path>) = keys
        .into_iter()
        .filter(|k| *k != own_marker)
        .partition(|k| Keys::name(k) == DIR_MARKER);
    Ok([files, markers, vec![own_marker]])
}

/// [`delete_tree`] of a committed move's sources, [`DELETE_BATCH`] keys per step with
/// `between_steps` after each (recovery finishes it if the process dies meanwhile).
fn delete_sources(
    storage: &S3Storage,
    between_steps: &dyn Fn(),
    dir: &StorePath,
    keys: Vec<Path>,
) -> StorageResult<()> {
    let inner = &storage.inner;
    for group in deletion_order(inner, dir, keys)? {
        for batch in group.chunks(DELETE_BATCH) {
            storage.block_on(inner.delete_all(batch.to_vec(), dir))?;
            between_steps();
        }
    }
    Ok(())
}

/// Delete `keys` under `dir` (files first, then sub-directory markers), then `dir`'s own
/// marker: an interrupted deletion leaves a directory that can be deleted again.
async fn delete_tree(inner: &Inner, dir: &StorePath, keys: Vec<Path>) -> StorageResult<()> {
    for group in deletion_order(inner, dir, keys)? {
        inner.delete_all(group, dir).await?;
    }
    Ok(())
}

/// Delete the (possibly partial) destination, then its flag: never the other way round.
/// The flag goes only once a listing finds the destination empty, so a copy that still
/// landed (a request abandoned by a killed or timed-out mover) is deleted too, not revealed.
async fn roll_back(inner: &Inner, to: &StorePath, flag: &Path) -> StorageResult<()> {
    for _ in 0..3 {
        let keys: Vec<Path> = inner
            .objects_under(to)
            .await?
            .into_iter()
            .map(|o| o.location)
            .collect();
        if keys.is_empty() {
            return inner.delete_all(vec![flag.clone()], to).await;
        }
        delete_tree(inner, to, keys).await?;
    }
    Err(StorageError::Unavailable(format!(
        "objects keep appearing under {to} while its move is rolled back; trying again later"
    )))
}

/// The bytes of an object, `None` if it does not exist.
async fn body_of(inner: &Inner, key: &Path) -> StorageResult<Option<Bytes>> {
    let got = match inner.store.get(key).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(inner.internal_err(e, "a move's bookkeeping")),
    };
    got.bytes()
        .await
        .map(Some)
        .map_err(|e| inner.internal_err(e, "a move's bookkeeping"))
}

/// The keys of every recorded move intent.
pub async fn intents(inner: &Inner) -> StorageResult<Vec<Path>> {
    let prefix = inner.keys.internal(MOVES_DIR)?;
    let found: Vec<_> = inner
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| inner.internal_err(e, "the move intents"))?;
    Ok(found.into_iter().map(|o| o.location).collect())
}

/// Settle the move of intent `key` if its mover is gone; true if it was settled here.
pub fn recover(storage: &S3Storage, key: &Path) -> StorageResult<bool> {
    let inner = &storage.inner;
    let Some(id) = Keys::name(key).strip_suffix(".json") else {
        return Ok(false);
    };
    let _lease = match storage.block_on(lease::acquire(
        inner.clone(),
        storage.handle.clone(),
        &lease_name(id),
        Duration::ZERO,
    )) {
        Ok(lease) => lease,
        // Its mover is alive (or not yet seen unrenewed for a whole lifetime).
        Err(StorageError::Busy(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    storage.block_on(async {
        // A mover removes its intent before releasing its lease: gone now means it finished.
        let Some(body) = body_of(inner, key).await? else {
            return Ok(false);
        };
        match serde_json::from_slice::<Intent>(&body) {
            Ok(intent) if intent.id == id => settle(inner, &intent).await?,
            _ => tracing::warn!(intent = %key, "removing an unreadable move intent"),
        }
        inner
            .delete_all(vec![key.clone()], &StorePath::root())
            .await?;
        Ok(true)
    })
    // The lease is released here, after the intent is gone.
}

async fn settle(inner: &Inner, intent: &Intent) -> StorageResult<()> {
    let (from, to) = (
        StorePath::parse(&intent.from)?,
        StorePath::parse(&intent.to)?,
    );
    let Some(flag) = inner.keys.flag(&to)? else {
        return Ok(());
    };
    let ours = |body: Option<Bytes>| body.is_some_and(|b| b.as_ref() == intent.id.as_bytes());
    let claim = inner.keys.marker(&to)?;
    let (flag_body, claim_body) =
        futures_util::join!(body_of(inner, &flag), body_of(inner, &claim));
    let action = decide(ours(flag_body?), ours(claim_body?));
    tracing::warn!(%from, %to, ?action, "settling a directory move whose mover is gone");
    match action {
        Recovery::RollBack => roll_back(inner, &to, &flag).await,
        Recovery::DropFlag => inner.delete_all(vec![flag], &to).await,
        Recovery::RollForward => {
            let keys = inner
                .objects_under(&from)
                .await?
                .into_iter()
                .map(|o| o.location)
                .collect();
            delete_tree(inner, &from, keys).await
        }
        Recovery::Forget => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_still_there_rolls_back_a_gone_one_rolls_forward() {
        assert_eq!(decide(true, true), Recovery::RollBack);
        assert_eq!(decide(true, false), Recovery::DropFlag);
        assert_eq!(decide(false, true), Recovery::RollForward);
        assert_eq!(decide(false, false), Recovery::Forget);
    }
}
