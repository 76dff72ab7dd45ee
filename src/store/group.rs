//! Group commit: concurrent writers share one durable transaction.
//!
//! A writer queues its job and, when no batch is running, becomes the leader:
//! it takes up to the store's batch cap of queued jobs (its own among them), runs
//! them in one transaction (each in its own savepoint, so one failing job
//! rolls back only itself), commits once, and wakes everyone in the batch.
//! A lone writer leads at once: no fixed wait when nobody else is queued.
//! When the previous batch showed more concurrent writers than are queued now
//! (those just woken are about to resubmit), the leader waits for them, at
//! most half the previous batch's duration (capped), so batches stay full
//! instead of alternating between two half-sized groups; the estimate resets
//! to the demand actually seen after each batch, as PostgreSQL's
//! `commit_delay`/`commit_siblings` does.
//! Each caller returns only after the commit that contains its job.

use crate::error::{Error, Result};
use crate::store::Tx;
use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Longest a leader waits for expected writers to join its batch.
const MAX_GATHER: Duration = Duration::from_micros(500);

/// A queued job: runs against the batch's transaction; true when it succeeded.
pub(crate) type Job<'a> = dyn FnMut(&mut dyn Tx) -> bool + Send + 'a;

pub(crate) struct Slot {
    job: *mut Job<'static>,
    done: bool,
    /// Set when the batch containing this job did not commit.
    failure: Option<String>,
}

impl Slot {
    /// Runs the job. Only the leader calls this, while the submitter waits.
    pub(crate) fn run(&mut self, tx: &mut dyn Tx) -> bool {
        // SAFETY: `submit` keeps the job alive and untouched until `done`.
        let job = unsafe { &mut *self.job };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(tx))).unwrap_or(false)
    }

    /// Fails this job alone (its writes were rolled back), or with `None`
    /// clears that before the batch is rerun.
    pub(crate) fn set_failure(&mut self, failure: Option<String>) {
        self.failure = failure;
    }
}

struct SlotPtr(*mut Slot);
// SAFETY: a slot is only touched by its submitter and, while the submitter
// waits, by the one leader; `done` and `failure` are written under the lock.
unsafe impl Send for SlotPtr {}

#[derive(Default)]
struct Queue {
    waiting: Vec<SlotPtr>,
    leading: bool,
    /// A leader is waiting for more jobs (submitters signal `joined`).
    gathering: bool,
    /// Writers seen during the last batch: its jobs plus those queued meanwhile.
    expected: usize,
    /// How long the last batch took to run and commit.
    last_batch: Duration,
}

pub(crate) struct GroupCommit {
    /// Most jobs in one transaction, so one batch cannot hold locks for long.
    max_jobs: usize,
    queue: Mutex<Queue>,
    wake: Condvar,
    joined: Condvar,
}

impl GroupCommit {
    pub(crate) fn new(max_jobs: usize) -> GroupCommit {
        assert!(max_jobs > 0);
        GroupCommit { max_jobs, queue: Mutex::default(), wake: Condvar::new(), joined: Condvar::new() }
    }

    /// Runs `f` as one job of a batch run by `run_batch`; returns `f`'s result
    /// once that batch committed, else the batch's (or the job's own) failure.
    pub(crate) fn write<R: Send>(
        &self,
        mut f: impl FnMut(&mut dyn Tx) -> Result<R> + Send,
        run_batch: &dyn Fn(&mut [&mut Slot]) -> Result<()>,
    ) -> Result<R> {
        let mut result: Option<Result<R>> = None;
        let committed = {
            let mut job = |tx: &mut dyn Tx| {
                let r = f(tx);
                let ok = r.is_ok();
                result = Some(r);
                ok
            };
            self.submit(&mut job, run_batch)
        };
        match (result, committed) {
            // A batch that did not commit voids every result decided in it:
            // they may rest on writes of other jobs that were rolled back.
            (_, Err(e)) | (Some(Err(e)), Ok(())) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (None, Ok(())) => Err(Error::Internal("write job panicked".into())),
        }
    }

    /// Runs `job` in some batch executed by `run_batch`; returns once that
    /// batch finished, with `Err` when it did not commit.
    fn submit(&self, job: &mut Job<'_>, run_batch: &dyn Fn(&mut [&mut Slot]) -> Result<()>) -> Result<()> {
        // SAFETY: only the lifetime is erased; this function does not return
        // before the leader set `done`, after which nobody touches the job.
        let job: *mut Job<'static> = unsafe { std::mem::transmute::<*mut Job<'_>, *mut Job<'static>>(job) };
        let mut slot = Slot { job, done: false, failure: None };
        let me: *mut Slot = &mut slot;
        let mut q = self.queue.lock();
        q.waiting.push(SlotPtr(me));
        if q.gathering {
            self.joined.notify_one();
        }
        loop {
            // SAFETY: `done` is written only under the lock we hold.
            if unsafe { (*me).done } {
                drop(q);
                // SAFETY: the leader is finished with the slot.
                return match unsafe { (*me).failure.take() } {
                    Some(msg) => Err(Error::Storage(msg)),
                    None => Ok(()),
                };
            }
            if q.leading {
                self.wake.wait(&mut q);
                continue;
            }
            q.leading = true;
            if q.waiting.len() < q.expected {
                let deadline = Instant::now() + (q.last_batch / 2).min(MAX_GATHER);
                q.gathering = true;
                while q.waiting.len() < q.expected && !self.joined.wait_until(&mut q, deadline).timed_out() {}
                q.gathering = false;
            }
            let n = q.waiting.len().min(self.max_jobs);
            let batch: Vec<SlotPtr> = q.waiting.drain(..n).collect();
            drop(q);
            let started = Instant::now();
            // SAFETY: every slot in `batch` belongs to a waiting submitter.
            let mut slots: Vec<&mut Slot> = batch.iter().map(|p| unsafe { &mut *p.0 }).collect();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_batch(&mut slots)))
                .unwrap_or_else(|_| Err(Error::Internal("group commit batch panicked".into())));
            let failure = outcome.err().map(|e| {
                let why = match e {
                    Error::Storage(m) => m,
                    other => other.to_string(),
                };
                if n == 1 { why } else { format!("batch of {n} writes did not commit: {why}") }
            });
            q = self.queue.lock();
            q.last_batch = started.elapsed();
            q.expected = (n + q.waiting.len()).min(self.max_jobs);
            for s in slots {
                if failure.is_some() {
                    s.failure = failure.clone();
                }
                s.done = true;
            }
            q.leading = false;
            self.wake.notify_all();
        }
    }
}
