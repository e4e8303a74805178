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
use tokio::sync::{oneshot, Semaphore};

use super::fair::{self, FairQueue, Lane};
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
    /// Lanes (accounts, or the server's own work) holding jobs.
    pub lanes: usize,
    /// Most jobs one lane may run at once / hold queued plus running.
    pub lane_max_running: usize,
    pub lane_max_admitted: usize,
}

/// What a pool thread needs to run one queued job.
struct Worker<'a> {
    storage: &'a dyn Storage,
    /// Called by the job between bounded steps.
    yield_point: &'a dyn Fn(),
}

/// A job with its reply channel and permit, waiting in its lane.
type Work = Box<dyn FnOnce(&Worker<'_>) + Send>;

/// State shared by a pool's handle and its threads.
struct Shared {
    stats: PoolStats,
    queue: FairQueue<Work>,
}

/// The message that wakes a pool thread: "take jobs from the lanes while any may run".
struct RunNext;

impl Message for RunNext {
    type Result = ();
}

/// One pool thread's actor.
pub struct BlockingActor {
    storage: Arc<dyn Storage>,
    shared: Arc<Shared>,
}

impl Actor for BlockingActor {
    type Context = SyncContext<Self>;
}

impl Handler<RunNext> for BlockingActor {
    type Result = ();

    /// One message per accepted job, but the job this thread runs is whichever is next in turn;
    /// a thread that finishes a job keeps taking jobs, so a job held back by its lane's running
    /// cap is run by the thread that frees the cap (no wake-up is lost).
    fn handle(&mut self, _msg: RunNext, _ctx: &mut Self::Context) {
        while let Some((lane, work)) = self.shared.queue.pop() {
            let shared = &self.shared;
            let storage = self.storage.as_ref();
            let yield_point = || run_other_lane(shared, storage, &lane);
            run_work(
                shared,
                &lane,
                work,
                &Worker {
                    storage,
                    yield_point: &yield_point,
                },
            );
        }
    }
}

/// A long job of `lane` reached a step boundary: run one waiting job of another lane here. Only
/// a job that is not itself cut into steps ([`BlockingJob::runs_in_steps`]): it cannot yield in
/// turn (this never nests deeper), so it must be one bounded operation.
fn run_other_lane(shared: &Shared, storage: &dyn Storage, lane: &Lane) {
    if !shared.queue.has_unstepped_waiting() {
        return;
    }
    if let Some((other, work)) = shared.queue.pop_at_yield(lane) {
        run_work(
            shared,
            &other,
            work,
            &Worker {
                storage,
                yield_point: &|| {},
            },
        );
    }
}

fn run_work(shared: &Shared, lane: &Lane, work: Work, worker: &Worker<'_>) {
    shared.stats.queued.fetch_sub(1, Ordering::Relaxed);
    shared.stats.running.fetch_add(1, Ordering::Relaxed);
    work(worker);
    shared.stats.running.fetch_sub(1, Ordering::Relaxed);
    shared.stats.completed.fetch_add(1, Ordering::Relaxed);
    shared.queue.finish(lane);
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
    shared: Arc<Shared>,
    addr: Addr<BlockingActor>,
}

impl Pool {
    /// Queue `job` in the current request's lane if the pool has room and await its output.
    pub async fn run<J: BlockingJob>(&self, job: J) -> Result<J::Output, PoolError> {
        self.run_in(fair::current_lane(), job).await
    }

    /// Queue `job` in `lane` if the pool has room and await its output.
    pub async fn run_in<J: BlockingJob>(&self, lane: Lane, job: J) -> Result<J::Output, PoolError> {
        let rx = self.submit_in(lane, job)?;
        rx.await
            .unwrap_or(Err(PoolError::Stopped { pool: self.name }))
    }

    /// Queue `job` in the current request's lane if the pool has room; the returned receiver
    /// yields its output. Dropping the receiver does not cancel the job.
    pub fn submit<J: BlockingJob>(
        &self,
        job: J,
    ) -> Result<oneshot::Receiver<Result<J::Output, PoolError>>, PoolError> {
        self.submit_in(fair::current_lane(), job)
    }

    /// Queue `job` in `lane` if the pool and the lane have room (else
    /// [`PoolError::Overloaded`] at once); the returned receiver yields its output.
    pub fn submit_in<J: BlockingJob>(
        &self,
        lane: Lane,
        job: J,
    ) -> Result<oneshot::Receiver<Result<J::Output, PoolError>>, PoolError> {
        let stats = &self.shared.stats;
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(PoolError::Overloaded { pool: self.name });
            }
        };
        if !self.addr.connected() {
            return Err(PoolError::Stopped { pool: self.name });
        }
        let stepped = job.runs_in_steps();
        let (tx, rx) = oneshot::channel();
        let request_id = crate::telemetry::request::current_id();
        let name = self.name;
        let shared = self.shared.clone();
        let work: Work = Box::new(move |worker: &Worker<'_>| {
            // The job's log lines carry the id of the request that submitted it.
            let _request = crate::telemetry::request::JobScope::enter(request_id);
            let abandoned = || {
                (worker.yield_point)();
                tx.is_closed()
            };
            let ctx = JobContext::new(worker.storage, &abandoned, worker.yield_point);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(&ctx)));
            let answer = outcome.map_err(|payload| {
                shared.stats.panicked.fetch_add(1, Ordering::Relaxed);
                let message = panic_message(payload.as_ref());
                tracing::error!(pool = name, %message, "job panicked; thread continues");
                PoolError::Panicked {
                    pool: name,
                    message,
                }
            });
            // Free the slot before answering: a client that got its answer and immediately
            // sends the next job must find the pool with room.
            drop(permit);
            // The receiver may be gone (client disconnected); the work is done regardless.
            let _ = tx.send(answer);
        });
        // Counted before it can be taken, so the gauge never goes below zero.
        stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.shared.queue.push(lane, work, stepped).is_err() {
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(PoolError::Overloaded { pool: self.name });
        }
        self.addr.do_send(RunNext);
        Ok(rx)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let stats = &self.shared.stats;
        PoolSnapshot {
            name: self.name,
            threads: self.threads,
            capacity: self.capacity,
            queued: stats.queued.load(Ordering::Relaxed),
            running: stats.running.load(Ordering::Relaxed),
            completed: stats.completed.load(Ordering::Relaxed),
            rejected: stats.rejected.load(Ordering::Relaxed),
            panicked: stats.panicked.load(Ordering::Relaxed),
            lanes: self.shared.queue.active_lanes(),
            lane_max_running: self.shared.queue.max_running(),
            lane_max_admitted: self.shared.queue.max_admitted(),
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
    /// Share of `capacity` (percent) one lane may hold.
    pub lane_share_percent: usize,
}

/// The storage, commit and ingest pools, started once before the HTTP server.
#[derive(Clone)]
pub struct Pools {
    inner: Arc<PoolsInner>,
}

struct PoolsInner {
    storage: Pool,
    commit: Pool,
    ingest: Pool,
    memory: Pool,
    backend: Arc<dyn Storage>,
}

/// The three pools' settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSpecs {
    pub storage: PoolSpec,
    pub commit: PoolSpec,
    pub ingest: PoolSpec,
    pub memory: PoolSpec,
}

impl Pools {
    /// Start the pools over `backend`. Must run inside an actix System.
    pub fn start(backend: Arc<dyn Storage>, specs: PoolSpecs) -> Pools {
        Pools {
            inner: Arc::new(PoolsInner {
                storage: start_pool(specs.storage, &backend),
                commit: start_pool(specs.commit, &backend),
                ingest: start_pool(specs.ingest, &backend),
                memory: start_pool(specs.memory, &backend),
                backend,
            }),
        }
    }

    /// Short blocking work: reads, writes, listings, registry updates.
    pub fn storage(&self) -> &Pool {
        &self.inner.storage
    }

    /// Long work: session commits, recovery and sweeps.
    pub fn commit(&self) -> &Pool {
        &self.inner.commit
    }

    /// Resource ingestion (fetch, parse, publish, summaries): its own lane, so commits never
    /// wait behind parsing.
    pub fn ingest(&self) -> &Pool {
        &self.inner.ingest
    }

    /// Memory extraction after commits (chat-model calls): its own threads, so a slow model
    /// never holds a commit or an ingestion.
    pub fn memory(&self) -> &Pool {
        &self.inner.memory
    }

    /// Every pool, for observers.
    pub fn all(&self) -> [&Pool; 4] {
        [self.storage(), self.commit(), self.ingest(), self.memory()]
    }

    pub fn backend(&self) -> &Arc<dyn Storage> {
        &self.inner.backend
    }

    /// Wait (up to `deadline`) until no accepted job is still queued or running.
    pub async fn drain(&self, deadline: std::time::Duration) -> bool {
        let until = Instant::now() + deadline;
        loop {
            if self.all().iter().all(|p| p.in_flight() == 0) {
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
    let shared = Arc::new(Shared {
        stats: PoolStats::default(),
        queue: FairQueue::new(spec.threads, spec.capacity, spec.lane_share_percent),
    });
    let next_index = Arc::new(AtomicUsize::new(0));
    let name_index = next_index.clone();
    let backend = backend.clone();
    let actor_shared = shared.clone();
    let addr = SyncArbiter::start_with_thread_builder(
        spec.threads,
        move || {
            let i = name_index.fetch_add(1, Ordering::Relaxed);
            std::thread::Builder::new().name(format!("{}-{i}", spec.name))
        },
        move || {
            lower_thread_priority(spec.nice);
            BlockingActor {
                storage: backend.clone(),
                shared: actor_shared.clone(),
            }
        },
    );
    drop(next_index);
    Pool {
        name: spec.name,
        threads: spec.threads,
        capacity: spec.capacity,
        permits: Arc::new(Semaphore::new(spec.capacity)),
        shared,
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
    use std::time::Duration;

    struct Sleepy(Duration);
    impl BlockingJob for Sleepy {
        type Output = u32;
        fn run(self, _ctx: &JobContext<'_>) -> u32 {
            std::thread::sleep(self.0);
            7
        }
    }

    /// A long job cut into steps with a yield point between them.
    struct Steps(usize);
    impl BlockingJob for Steps {
        type Output = ();

        fn runs_in_steps(&self) -> bool {
            true
        }
        fn run(self, ctx: &JobContext<'_>) {
            for _ in 0..self.0 {
                std::thread::sleep(Duration::from_millis(10));
                ctx.yield_point();
            }
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
            lane_share_percent: 100,
        }
    }

    fn start(storage: PoolSpec) -> (tempfile::TempDir, Pools) {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let specs = PoolSpecs {
            storage,
            commit: spec("commit", 1, 1),
            ingest: spec("ingest", 1, 1),
            memory: spec("memory", 1, 1),
        };
        (dir, Pools::start(backend, specs))
    }

    fn lane(name: &str) -> Lane {
        Lane::Account(Arc::from(name))
    }

    #[actix_rt::test]
    async fn bounded_and_panic_safe() {
        let (_dir, pools) = start(spec("storage", 1, 2));
        let pool = pools.storage().clone();
        let slow1 = pool.submit(Sleepy(Duration::from_millis(200))).unwrap();
        let slow2 = pool.submit(Sleepy(Duration::from_millis(10))).unwrap();
        assert!(matches!(
            pool.submit(Sleepy(Duration::ZERO)),
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
        assert_eq!(pool.run(Sleepy(Duration::ZERO)).await.unwrap(), 7);
        assert!(pools.drain(Duration::from_secs(1)).await);
    }

    #[actix_rt::test]
    async fn another_lane_is_served_before_a_backlog() {
        let mut storage = spec("storage", 2, 8);
        storage.lane_share_percent = 50;
        let (_dir, pools) = start(storage);
        let pool = pools.storage().clone();
        let attacker = lane("attacker");
        let mut backlog = Vec::new();
        for _ in 0..4 {
            backlog.push(
                pool.submit_in(attacker.clone(), Sleepy(Duration::from_millis(1500)))
                    .unwrap(),
            );
        }
        // The attacker's share (half the capacity) is used up; the victim still gets in.
        assert!(matches!(
            pool.submit_in(attacker.clone(), Sleepy(Duration::ZERO)),
            Err(PoolError::Overloaded { .. })
        ));
        let started = Instant::now();
        let victim = pool.run_in(lane("victim"), Sleepy(Duration::ZERO)).await;
        assert_eq!(victim.unwrap(), 7);
        // Behind the attacker's queue it would wait at least 1.5 s (both threads busy); with
        // the attacker limited to one of the two threads it runs at once.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        drop(backlog);
    }

    #[actix_rt::test]
    async fn a_long_job_lets_another_lane_run_at_its_yield_points() {
        let (_dir, pools) = start(spec("storage", 1, 8));
        let pool = pools.storage().clone();
        // One thread, held by a 300-step job (about 3 s).
        let long = pool.submit_in(lane("attacker"), Steps(300)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let victim = pool.run_in(lane("victim"), Sleepy(Duration::ZERO)).await;
        assert_eq!(victim.unwrap(), 7);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        long.await.unwrap().unwrap();
    }

    #[actix_rt::test]
    async fn a_yield_point_leaves_another_lanes_long_job_for_a_free_thread() {
        let (_dir, pools) = start(spec("storage", 1, 8));
        let pool = pools.storage().clone();
        let first = pool.submit_in(lane("attacker"), Steps(300)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Queued first: another account's long job. Run at the first job's yield point it
        // would hold the only thread for its whole length, yielding to nobody.
        let second = pool.submit_in(lane("other"), Steps(300)).unwrap();
        let victim = pool.run_in(lane("victim"), Sleepy(Duration::ZERO)).await;
        assert_eq!(victim.unwrap(), 7);
        // Timing-independent: the victim was served while the second long job had not ended.
        let mut second = second;
        assert!(
            second.try_recv().is_err(),
            "the victim waited for the second long job"
        );
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
    }
}
