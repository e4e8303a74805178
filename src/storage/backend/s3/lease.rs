//! Named cross-instance locks as lease objects.
//!
//! The lock `name` is the object `<prefix>/.longship-locks/<sha256(name)>` holding who owns it
//! and until when. Taking it is a create-if-absent PUT; a lease whose expiry has passed (its
//! holder crashed) is taken over with an `If-Match` PUT on the ETag that was read, so of several
//! instances racing for an expired lease exactly one wins. The holder renews the lease every
//! third of its lifetime from a task on the backend runtime, and releasing deletes it.
//!
//! Expiry compares the writer's clock with the reader's: hosts sharing a bucket need clocks
//! closer than the lease lifetime (`storage.s3.lock_lease_ms`, 15 s by default). A lease also
//! names its holding process; a contender on the same machine (same kernel boot and pid
//! namespace) whose holder is gone takes the lease over at once, so a kill -9 and restart on
//! one host frees the lock as fast as `flock` does on local disk. Across hosts only expiry can
//! tell.

use std::sync::Arc;
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
    /// Milliseconds since the Unix epoch after which the lease is free.
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
}

impl LockGuard for Lease {}

fn body(name: &str, owner: &str, lease: Duration) -> Bytes {
    let body = LeaseBody {
        name: name.to_string(),
        owner: owner.to_string(),
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
        let created = inner
            .put(
                &key,
                body(name, &owner, inner.lease),
                PutMode::Create,
                &what,
            )
            .await;
        let etag = match created {
            Ok(v) => Some(v.0),
            Err(StorageError::Conflict(_)) => {
                take_over_if_expired(&inner, &key, name, &owner).await?
            }
            Err(e) => return Err(e),
        };
        if let Some(etag) = etag {
            return Ok(Lease::start(inner, runtime, key, name, owner, etag));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StorageError::Busy(name.to_string()));
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Someone holds the lease: take it over if it expired. `Some(etag)` if we now hold it.
async fn take_over_if_expired(
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
    // An unreadable lease (torn by a foreign writer) counts as expired rather than blocking
    // the lock forever.
    let (expired, dead) = match serde_json::from_slice::<LeaseBody>(&data) {
        Ok(held) => (
            held.expires_ms <= epoch_millis_now(),
            held.holder.as_ref().is_some_and(holder_is_dead),
        ),
        Err(_) => (true, false),
    };
    if !expired && !dead {
        return Ok(None);
    }
    let mode = PutMode::Update(UpdateVersion {
        e_tag: etag,
        version: None,
    });
    match inner
        .put(key, body(name, owner, inner.lease), mode, &what)
        .await
    {
        Ok(v) => {
            let why = if dead {
                "its holder died"
            } else {
                "it expired"
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
    ) -> Lease {
        let etag = Arc::new(tokio::sync::Mutex::new(etag));
        let renewal = runtime.spawn(renew(
            inner.clone(),
            key.clone(),
            name.to_string(),
            owner,
            etag.clone(),
        ));
        Lease {
            inner,
            runtime,
            key,
            name: name.to_string(),
            etag,
            renewal,
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
) {
    let every = inner.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let mut current = etag.lock().await;
        let mode = PutMode::Update(UpdateVersion {
            e_tag: Some(current.clone()),
            version: None,
        });
        match inner
            .put(
                &key,
                body(&name, &owner, inner.lease),
                mode,
                &StorePath::root(),
            )
            .await
        {
            Ok(v) => *current = v.0,
            Err(StorageError::Conflict(_)) => {
                tracing::error!(lock = %name, "lock lease was taken over while held");
                return;
            }
            // The store is briefly unreachable: keep the lease and try again next period.
            Err(e) => tracing::warn!(lock = %name, error = %e, "could not renew lock lease"),
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
