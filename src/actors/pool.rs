//! Pools of SyncArbiter actors that run blocking work (storage I/O, commits) on their own threads.
//!
//! A unit of work is a [`BlockingJob`] (`crate::jobs`): one struct per operation whose `run`
//! executes on a pool thread with the storage backend in hand.
//! [`Pool::run`] is the only way in, and it enforces three rules the design depends on:
//!
//! * Bounded: SyncArbiter mailboxes are unbounded, so each job carries a semaphore permit taken
//!   before it is queued. With every permit taken the caller gets [`PoolError::Overloaded`]
//!   (HTTP 503 + `Retry-After`) at once instead of joining an endless queue.
//! * Accepted work is done: jobs are delivered with `do_send`, so a job runs even if the HTTP
//!   client disconnects and the awaiting future is dropped. A job may poll
//!   [`JobContext::is_abandoned`] to stop early when its answer is no longer wanted.
//! * A panic is contained: it is caught, logged and answered as an internal error; the thread
//!   keeps serving (an uncaught panic would silently shrink the pool).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::jobs::{BlockingJob, JobContext, PoolError};
use crate::storage::Storage;

/// Live counters of one pool, shared by its handle and its threads.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    pub completed: AtomicU64,
    pub rejected: AtomicU64,
    pub panicked: AtomicU64,
}

/// A snapshot of [`PoolStats`] for observers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolSnapshot {
    pub name: &'static str,
    pub threads: usize,
    pub capacity: usize,
    pub queued: usize,
    pub running: usize,
    pub completed: u64,
    pub rejected: u64,
    pub panicked: u64,
}

/// The message that carries a job to a pool thread.
struct Exec<J: BlockingJob> {
    job: J,
    reply: oneshot::Sender<Result<J::Output, PoolError>>,
    span: tracing::Span,
    _permit: OwnedSemaphorePermit,
}

impl<J: BlockingJob> Message for Exec<J> {
    type Result = ();
}

/// One pool thread's actor.
pub struct BlockingActor {
    name: &'static str,
    storage: Arc<dyn Storage>,
    stats: Arc<PoolStats>,
}

impl Actor for BlockingActor {
    type Context = SyncContext<Self>;
}

impl<J: BlockingJob> Handler<Exec<J>> for BlockingActor {
    type Result = ();

    fn handle(&mut self, msg: Exec<J>, _ctx: &mut Self::Context) {
        let Exec {
            job,
            reply,
            span,
            _permit: permit,
        } = msg;
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        self.stats.running.fetch_add(1, Ordering::Relaxed);
        let _entered = span.enter();
        let abandoned = || reply.is_closed();
        let ctx = JobContext::new(self.storage.as_ref(), &abandoned);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(&ctx)));
        self.stats.running.fetch_sub(1, Ordering::Relaxed);
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        let answer = outcome.map_err(|payload| {
            self.stats.panicked.fetch_add(1, Ordering::Relaxed);
            let message = panic_message(payload.as_ref());
            tracing::error!(pool = self.name, %message, "job panicked; thread continues");
            PoolError::Panicked {
                pool: self.name,
                message,
            }
        });
        // Free the slot before answering: a client that got its answer and immediately sends
        // the next job must find the pool with room.
        drop(permit);
        // The receiver may be gone (client disconnected); the work is done regardless.
        let _ = reply.send(answer);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Handle to one pool: cheap to clone, safe to use from any thread.
#[derive(Clone)]
pub struct Pool {
    name: &'static str,
    threads: usize,
    capacity: usize,
    permits: Arc<Semaphore>,
    stats: Arc<PoolStats>,
    addr: Addr<BlockingActor>,
}

impl Pool {
    /// Queue `job` if the pool has room and await its output.
    pub async fn run<J: BlockingJob>(&self, job: J) -> Result<J::Output, PoolError> {
        let rx = self.submit(job)?;
        rx.await
            .unwrap_or(Err(PoolError::Stopped { pool: self.name }))
    }

    /// Queue `job` if the pool has room; the returned receiver yields its output. Dropping the
    /// receiver does not cancel the job.
    pub fn submit<J: BlockingJob>(
        &self,
        job: J,
    ) -> Result<oneshot::Receiver<Result<J::Output, PoolError>>, PoolError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(PoolError::Overloaded { pool: self.name });
            }
        };
        if !self.addr.connected() {
            return Err(PoolError::Stopped { pool: self.name });
        }
        let (tx, rx) = oneshot::channel();
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.addr.do_send(Exec {
            job,
            reply: tx,
            span: tracing::Span::current(),
            _permit: permit,
        });
        Ok(rx)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        PoolSnapshot {
            name: self.name,
            threads: self.threads,
            capacity: self.capacity,
            queued: self.stats.queued.load(Ordering::Relaxed),
            running: self.stats.running.load(Ordering::Relaxed),
            completed: self.stats.completed.load(Ordering::Relaxed),
            rejected: self.stats.rejected.load(Ordering::Relaxed),
            panicked: self.stats.panicked.load(Ordering::Relaxed),
        }
    }

    /// Jobs accepted but not finished.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }
}

/// Settings for one pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSpec {
    pub name: &'static str,
    pub threads: usize,
    /// Bound on queued plus running jobs.
    pub capacity: usize,
    /// `nice` increment for the pool's threads, so HTTP workers win the CPU on small machines.
    pub nice: i32,
}

/// The storage and commit pools, started once before the HTTP server.
#[derive(Clone)]
pub struct Pools {
    inner: Arc<PoolsInner>,
}

struct PoolsInner {
    storage: Pool,
    commit: Pool,
    backend: Arc<dyn Storage>,
}

impl Pools {
    /// Start both pools over `backend`. Must run inside an actix System.
    pub fn start(backend: Arc<dyn Storage>, storage: PoolSpec, commit: PoolSpec) -> Pools {
        Pools {
            inner: Arc::new(PoolsInner {
                storage: start_pool(storage, &backend),
                commit: start_pool(commit, &backend),
                backend,
            }),
        }
    }

    /// Short blocking work: reads, writes, listings, registry updates.
    pub fn storage(&self) -> &Pool {
        &self.inner.storage
    }

    /// Long work: session commits.
    pub fn commit(&self) -> &Pool {
        &self.inner.commit
    }

    pub fn backend(&self) -> &Arc<dyn Storage> {
        &self.inner.backend
    }

    /// Wait (up to `deadline`) until no accepted job is still queued or running.
    pub async fn drain(&self, deadline: std::time::Duration) -> bool {
        let until = Instant::now() + deadline;
        loop {
            if self.storage().in_flight() == 0 && self.commit().in_flight() == 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

fn start_pool(spec: PoolSpec, backend: &Arc<dyn Storage>) -> Pool {
    let stats = Arc::new(PoolStats::default());
    let next_index = Arc::new(AtomicUsize::new(0));
    let name_index = next_index.clone();
    let backend = backend.clone();
    let actor_stats = stats.clone();
    let addr = SyncArbiter::start_with_thread_builder(
        spec.threads,
        move || {
            let i = name_index.fetch_add(1, Ordering::Relaxed);
            std::thread::Builder::new().name(format!("{}-{i}", spec.name))
        },
        move || {
            lower_thread_priority(spec.nice);
            BlockingActor {
                name: spec.name,
                storage: backend.clone(),
                stats: actor_stats.clone(),
            }
        },
    );
    drop(next_index);
    Pool {
        name: spec.name,
        threads: spec.threads,
        capacity: spec.capacity,
        permits: Arc::new(Semaphore::new(spec.capacity)),
        stats,
        addr,
    }
}

/// On Linux `nice` is per thread: raise this thread's niceness so the kernel favours the HTTP
/// workers when blocking threads compete with them for the CPU.
pub(crate) fn lower_thread_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: plain syscalls on the calling thread's own id.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if rc != 0 {
        tracing::debug!(nice, "could not lower pool thread priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    struct Sleepy(std::time::Duration);
    impl BlockingJob for Sleepy {
        type Output = u32;
        fn run(self, _ctx: &JobContext<'_>) -> u32 {
            std::thread::sleep(self.0);
            7
        }
    }

    struct Boom;
    impl BlockingJob for Boom {
        type Output = ();
        fn run(self, _ctx: &JobContext<'_>) {
            panic!("boom");
        }
    }

    fn spec(name: &'static str, threads: usize, capacity: usize) -> PoolSpec {
        PoolSpec {
            name,
            threads,
            capacity,
            nice: 0,
        }
    }

    #[actix_rt::test]
    async fn bounded_and_panic_safe() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let pools = Pools::start(backend, spec("storage", 1, 2), spec("commit", 1, 1));
        let pool = pools.storage().clone();
        let slow1 = pool
            .submit(Sleepy(std::time::Duration::from_millis(200)))
            .unwrap();
        let slow2 = pool
            .submit(Sleepy(std::time::Duration::from_millis(10)))
            .unwrap();
        assert!(matches!(
            pool.submit(Sleepy(std::time::Duration::ZERO)),
            Err(PoolError::Overloaded { .. })
        ));
        assert_eq!(pool.snapshot().rejected, 1);
        assert_eq!(slow1.await.unwrap().unwrap(), 7);
        assert_eq!(slow2.await.unwrap().unwrap(), 7);
        // A panic is answered and the single thread keeps serving.
        assert!(matches!(
            pool.run(Boom).await,
            Err(PoolError::Panicked { .. })
        ));
        assert_eq!(
            pool.run(Sleepy(std::time::Duration::ZERO)).await.unwrap(),
            7
        );
        assert!(pools.drain(std::time::Duration::from_secs(1)).await);
    }
}
