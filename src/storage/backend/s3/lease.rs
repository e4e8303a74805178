//! Named cross-instance locks as lease objects.
//!
//! The lock `name` is the object `<prefix>/.longship-locks/<sha256(name)>` naming its holder.
//! Taking it is a create-if-absent PUT; releasing deletes it. The holder rewrites it (with a
//! renewal counter, so its ETag changes) every third of the lease lifetime
//! (`storage.s3.lock_lease_ms`) from a task on the backend runtime.
//!
//! Expiry never compares two hosts' clocks. A contender remembers, on its own monotonic clock,
//! when it first saw the lease at its current ETag; only a lease whose ETag stayed the same for
//! a whole lifetime (three missed renewals) counts as abandoned, and it is taken over with an
//! `If-Match` PUT on that ETag, so of several contenders exactly one wins. A wall clock that is
//! minutes off (or jumps) changes nothing. A lease also names its holding process; a contender
//! on the same machine (same kernel boot and pid namespace) whose holder is gone takes it over
//! at once, so a kill -9 and restart on one host frees the lock as fast as `flock` does.
//!
//! A lease is advisory: a holder that stalls for a whole lifetime (a stopped process, a store
//! outage that blocks renewal) may have lost it without knowing. So the holder also judges its
//! own lease — [`LockGuard::held`] is false once two thirds of a lifetime passed since the
//! last renewal it sent — and every write made under a lock is fenced by the store itself:
//! conditional on the version read under the lock, so a holder that lost its lease fails
//! instead of clobbering (see `storage::sessions` and `storage::registry`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::LOCKS_DIR;
use super::Inner;
use crate::storage::{LockGuard, StorageError, StorageResult, StorePath};
use crate::time::epoch_millis_now;

#[derive(Serialize, Deserialize)]
struct LeaseBody {
    name: String,
    owner: String,
    /// Renewals so far: every rewrite has new bytes, hence a new ETag, even on a store whose
    /// ETag is a digest of the content.
    #[serde(default)]
    renewal: u64,
    /// The holder's wall-clock idea of when the lease runs out. For people reading the
    /// object only: expiry is judged from ETag changes on the contender's monotonic clock.
    expires_ms: u64,
    /// The holding process, so a contender on the same machine can tell at once that the
    /// holder died (a kill -9 and restart must not wait out the lease, as with `flock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder: Option<Holder>,
}

/// Names one process on one machine: a pid means something only within its pid namespace
/// on one kernel boot, and the start time tells a reused pid apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    boot_id: String,
    pid_ns: String,
    pid: u32,
    start_ticks: u64,
}

/// This process as a [`Holder`]; `None` where `/proc` does not tell (then only expiry frees
/// a lease).
fn this_process() -> Option<Holder> {
    static ME: std::sync::OnceLock<Option<Holder>> = std::sync::OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id();
        Some(Holder {
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()?
                .trim()
                .to_string(),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .ok()?
                .to_string_lossy()
                .into_owned(),
            pid,
            start_ticks: start_ticks(pid)?,
        })
    })
    .clone()
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks after boot). The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True only when the holder certainly no longer runs: it lived in our pid namespace on this
/// boot, and its pid is gone or belongs to a later process.
fn holder_is_dead(holder: &Holder) -> bool {
    let Some(me) = this_process() else {
        return false;
    };
    if me.boot_id != holder.boot_id || me.pid_ns != holder.pid_ns {
        return false;
    }
    start_ticks(holder.pid) != Some(holder.start_ticks)
}

/// When this process first saw each contended lease at its current ETag (monotonic clock).
#[derive(Default)]
pub struct Sightings {
    seen: Mutex<HashMap<String, (String, Instant)>>,
}

/// Sightings older than this many lifetimes are forgotten (the lease was released long ago).
const FORGET_AFTER_LIFETIMES: u32 = 10;

impl Sightings {
    /// How long the lease `key` has shown `etag`, as far as this process has watched it.
    fn unchanged_for(&self, key: &str, etag: &str, lifetime: Duration) -> Duration {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if seen.len() > 4096 {
            seen.retain(|_, (_, at)| now.duration_since(*at) < lifetime * FORGET_AFTER_LIFETIMES);
        }
        match seen.get(key) {
            Some((known, since)) if known == etag => now.duration_since(*since),
            _ => {
                seen.insert(key.to_string(), (etag.to_string(), now));
                Duration::ZERO
            }
        }
    }

    fn forget(&self, key: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// What the holder knows about its own lease, shared with the renewal task.
struct Standing {
    /// When the last successful renewal (or the acquisition) was sent: the lease is good for a
    /// lifetime after the contender first saw it, which is later than this.
    renewed_at: Mutex<Instant>,
    /// Someone else wrote the lease object: it is certainly not ours any more.
    lost: AtomicBool,
}

/// Held while the lease is ours; dropping it stops renewal and deletes the lease.
pub struct Lease {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
    key: Path,
    name: String,
    /// The ETag of our current lease object. Renewal holds this across its PUT, so release
    /// never races a renewal in flight.
    etag: Arc<tokio::sync::Mutex<String>>,
    renewal: tokio::task::JoinHandle<()>,
    standing: Arc<Standing>,
    lifetime: Duration,
}

impl LockGuard for Lease {
    /// Two thirds of a lifetime after the last renewal sent: a contender waits a full lifetime
    /// after it first saw that renewal, so a third of a lifetime remains as margin for the
    /// write about to be made.
    fn held(&self) -> bool {
        let renewed = *self
            .standing
            .renewed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        !self.standing.lost.load(Ordering::Acquire) && renewed.elapsed() < self.lifetime * 2 / 3
    }
}

fn body(name: &str, owner: &str, renewal: u64, lease: Duration) -> Bytes {
    let body = LeaseBody {
        name: name.to_string(),
        owner: owner.to_string(),
        renewal,
        expires_ms: epoch_millis_now() + lease.as_millis() as u64,
        holder: this_process(),
    };
    // Serializing a struct of strings and an integer cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Take the lease `name`, waiting at most `timeout`.
pub async fn acquire(
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
    name: &str,
    timeout: Duration,
) -> StorageResult<Lease> {
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    let key = inner.keys.internal(&format!("{LOCKS_DIR}/{digest}"))?;
    let what = StorePath::root();
    let owner = uuid::Uuid::new_v4().simple().to_string();
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        let sent = Instant::now();
        let created = inner
            .put(
                &key,
                body(name, &owner, 0, inner.lease),
                PutMode::Create,
                &what,
            )
            .await;
        let etag = match created {
            Ok(v) => Some(v.0),
            Err(StorageError::Conflict(_)) => {
                take_over_if_abandoned(&inner, &key, name, &owner).await?
            }
            Err(e) => return Err(e),
        };
        if let Some(etag) = etag {
            inner.sightings.forget(key.as_ref());
            return Ok(Lease::start(inner, runtime, key, name, owner, etag, sent));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StorageError::Busy(name.to_string()));
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Someone holds the lease: take it over if it was abandoned (unchanged for a whole lifetime
/// on our own clock) or its holder on this machine died. `Some(etag)` if we now hold it.
async fn take_over_if_abandoned(
    inner: &Inner,
    key: &Path,
    name: &str,
    owner: &str,
) -> StorageResult<Option<String>> {
    let what = StorePath::root();
    let got = match inner.store.get(key).await {
        Ok(got) => got,
        // Released between our create and this read: try creating again.
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(inner.internal_err(e, &format!("lock {name}"))),
    };
    let etag = got.meta.e_tag.clone();
    let data = got
        .bytes()
        .await
        .map_err(|e| inner.internal_err(e, &format!("lock {name}")))?;
    let Some(seen) = etag.as_deref() else {
        return Err(StorageError::Unavailable(format!(
            "object store {} returned no ETag for a lock lease",
            inner.endpoint
        )));
    };
    let expired = inner
        .sightings
        .unchanged_for(key.as_ref(), seen, inner.lease)
        >= inner.lease;
    // An unreadable lease (torn by a foreign writer) can only expire.
    let dead = serde_json::from_slice::<LeaseBody>(&data)
        .ok()
        .and_then(|held| held.holder)
        .is_some_and(|h| holder_is_dead(&h));
    if !expired && !dead {
        return Ok(None);
    }
    let mode = PutMode::Update(UpdateVersion {
        e_tag: etag,
        version: None,
    });
    match inner
        .put(key, body(name, owner, 0, inner.lease), mode, &what)
        .await
    {
        Ok(v) => {
            let why = if dead {
                "its holder died"
            } else {
                "it was not renewed for a whole lifetime"
            };
            tracing::warn!(lock = name, "took over a lock lease: {why}");
            Ok(Some(v.0))
        }
        Err(StorageError::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Lease {
    fn start(
        inner: Arc<Inner>,
        runtime: tokio::runtime::Handle,
        key: Path,
        name: &str,
        owner: String,
        etag: String,
        sent: Instant,
    ) -> Lease {
        let etag = Arc::new(tokio::sync::Mutex::new(etag));
        let standing = Arc::new(Standing {
            renewed_at: Mutex::new(sent),
            lost: AtomicBool::new(false),
        });
        let renewal = runtime.spawn(renew(
            inner.clone(),
            key.clone(),
            name.to_string(),
            owner,
            etag.clone(),
            standing.clone(),
        ));
        Lease {
            lifetime: inner.lease,
            inner,
            runtime,
            key,
            name: name.to_string(),
            etag,
            renewal,
            standing,
        }
    }
}

/// Push the expiry forward every third of the lease until cancelled or the lease is lost.
async fn renew(
    inner: Arc<Inner>,
    key: Path,
    name: String,
    owner: String,
    etag: Arc<tokio::sync::Mutex<String>>,
    standing: Arc<Standing>,
) {
    let every = inner.lease / 3;
    let mut renewal = 0u64;
    let mut pause = every;
    loop {
        tokio::time::sleep(pause).await;
        let mut current = etag.lock().await;
        let mode = PutMode::Update(UpdateVersion {
            e_tag: Some(current.clone()),
            version: None,
        });
        renewal += 1;
        let sent = Instant::now();
        match inner
            .put(
                &key,
                body(&name, &owner, renewal, inner.lease),
                mode,
                &StorePath::root(),
            )
            .await
        {
            Ok(v) => {
                *current = v.0;
                *standing
                    .renewed_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = sent;
                pause = every;
            }
            Err(StorageError::Conflict(_)) => {
                standing.lost.store(true, Ordering::Release);
                tracing::error!(lock = %name, "lock lease was taken over while held");
                return;
            }
            // The store is briefly unreachable: keep trying, more often than usual, while
            // `held` runs out on its own.
            Err(e) => {
                tracing::warn!(lock = %name, error = %e, "could not renew lock lease");
                pause = every / 4;
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let inner = self.inner.clone();
        let key = self.key.clone();
        let name = self.name.clone();
        let etag = self.etag.clone();
        let renewal = self.renewal.abort_handle();
        let release = async move {
            let held = etag.lock().await;
            renewal.abort();
            // Delete only our own lease: if it was taken over after expiring, it is not ours.
            match inner.store.head(&key).await {
                Ok(meta) if meta.e_tag.as_deref() == Some(held.as_str()) => {
                    if let Err(e) = inner.store.delete(&key).await {
                        tracing::warn!(lock = %name, error = %e, "could not release lock lease; it expires by itself");
                    }
                }
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(lock = %name, error = %e, "could not release lock lease; it expires by itself")
                }
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Dropped inside an async context, where blocking is not allowed: release in the
            // background instead.
            self.runtime.spawn(release);
        } else {
            self.runtime.block_on(release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_abandoned_only_after_a_lifetime_unchanged_on_our_clock() {
        let seen = Sightings::default();
        // Generous margins: a loaded machine may oversleep by hundreds of milliseconds.
        let life = Duration::from_millis(1500);
        assert_eq!(seen.unchanged_for("k", "e1", life), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(10));
        assert!(seen.unchanged_for("k", "e1", life) < life);
        // A renewal (new ETag) starts the watch again.
        assert_eq!(seen.unchanged_for("k", "e2", life), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1600));
        assert!(seen.unchanged_for("k", "e2", life) >= life);
        assert_eq!(seen.unchanged_for("other", "e2", life), Duration::ZERO);
        seen.forget("k");
        assert_eq!(seen.unchanged_for("k", "e2", life), Duration::ZERO);
    }

    #[test]
    fn this_process_is_alive_and_a_gone_pid_is_dead() {
        let me = this_process().expect("/proc is readable on Linux");
        assert!(!holder_is_dead(&me));
        let reused = Holder {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(
            holder_is_dead(&reused),
            "same pid, later start: another process"
        );
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let gone = Holder {
            pid: child.id(),
            start_ticks: start_ticks(child.id()).unwrap_or(0),
            ..me.clone()
        };
        child.wait().expect("reap");
        assert!(holder_is_dead(&gone));
        let elsewhere = Holder {
            boot_id: "another-machine".into(),
            ..gone
        };
        assert!(
            !holder_is_dead(&elsewhere),
            "another machine: only expiry can tell"
        );
    }
}
