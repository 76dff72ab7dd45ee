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
//!
//! With more than one lane (PostgreSQL: one per pooled connection), up to
//! that many leaders run at once, each on its own connection, so writers on
//! independent accounts run their own transactions side by side (the server
//! shares WAL flushes between concurrent commits by itself). A job may name
//! its account (a hash of it, `write_on`): while a batch with a job on that
//! account runs, the next jobs on it wait here, not on the row lock, and the
//! next leader takes them together as one batch, as with one lane. A batch
//! holds the jobs of one account, or a single job, except for at most one
//! batch at a time that takes every queued job when the last lane is taken:
//! so every other batch locks one account (as a single write from another
//! host would), and batching adds no lock cycle between batches that lock
//! accounts in different orders (a deadlock costs a `deadlock_timeout` wait).
//! With one lane (SQLite: one writer at a time), batches run one after the
//! other as above.

use crate::error::{Error, Result};
use crate::store::Tx;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest a leader waits for expected writers to join its batch.
const MAX_GATHER: Duration = Duration::from_micros(500);

/// A queued job: runs against the batch's transaction; true when it succeeded.
pub(crate) type Job<'a> = dyn FnMut(&mut dyn Tx) -> bool + Send + 'a;

pub(crate) struct Slot {
    job: *mut Job<'static>,
    /// The job's account (a hash), when the writer named it.
    account: Option<u64>,
    /// A leader took the job into its batch.
    taken: bool,
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
    /// Leaders running a batch now (at most `lanes`).
    leaders: usize,
    /// One of them runs a batch of jobs of several accounts.
    batching: bool,
    /// The accounts of the jobs in the running batches.
    running: Vec<u64>,
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
    /// Most batches running at once.
    lanes: usize,
    queue: Mutex<Queue>,
    wake: Condvar,
    joined: Condvar,
}

impl GroupCommit {
    /// One batch at a time.
    pub(crate) fn new(max_jobs: usize) -> GroupCommit {
        GroupCommit::with_lanes(max_jobs, 1)
    }

    /// Up to `lanes` batches at once (see the module's notes).
    pub(crate) fn with_lanes(max_jobs: usize, lanes: usize) -> GroupCommit {
        assert!(max_jobs > 0 && lanes > 0);
        GroupCommit { max_jobs, lanes, queue: Mutex::default(), wake: Condvar::new(), joined: Condvar::new() }
    }

    /// Runs `f` as one job of a batch run by `run_batch`; returns `f`'s result
    /// once that batch committed, else the batch's (or the job's own) failure.
    pub(crate) fn write<R: Send>(
        &self,
        f: impl FnMut(&mut dyn Tx) -> Result<R> + Send,
        run_batch: &dyn Fn(&mut [&mut Slot]) -> Result<()>,
    ) -> Result<R> {
        self.write_on(None, f, run_batch)
    }

    /// `write` of a job that locks only `account` (a hash of it), when Some.
    pub(crate) fn write_on<R: Send>(
        &self,
        account: Option<u64>,
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
            self.submit(account, &mut job, run_batch)
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
    fn submit(
        &self,
        account: Option<u64>,
        job: &mut Job<'_>,
        run_batch: &dyn Fn(&mut [&mut Slot]) -> Result<()>,
    ) -> Result<()> {
        // SAFETY: only the lifetime is erased; this function does not return
        // before the leader set `done`, after which nobody touches the job.
        let job: *mut Job<'static> = unsafe { std::mem::transmute::<*mut Job<'_>, *mut Job<'static>>(job) };
        let mut slot = Slot { job, account, taken: false, done: false, failure: None };
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
            // SAFETY: `taken` is written only under the lock we hold.
            if unsafe { (*me).taken } || q.leaders >= self.lanes {
                self.wake.wait(&mut q);
                continue;
            }
            // The leader's place is taken before gathering (which releases
            // the lock), so one lane never has two leaders.
            q.leaders += 1;
            self.gather(&mut q);
            let Some((batch, mixed)) = self.take(&mut q) else {
                // Every queued job (ours among them: the lock was held since
                // we saw it untaken, unless we gathered) waits for a running
                // batch on its account: wait for one to end, then look again.
                q.leaders -= 1;
                // SAFETY: `taken` is written only under the lock we hold.
                if !unsafe { (*me).taken } {
                    self.wake.wait(&mut q);
                }
                continue;
            };
            // SAFETY: `batch` came from `take` under this guard; its
            // submitters wait until `lead` marks their slots done.
            q = unsafe { self.lead(q, batch, mixed, run_batch) };
        }
    }

    /// With one lane, waits a little (half the last batch's time, at most
    /// `MAX_GATHER`) for the writers the last batch suggests are coming, so
    /// they share this commit.
    fn gather(&self, q: &mut MutexGuard<'_, Queue>) {
        if self.lanes == 1 && q.waiting.len() < q.expected {
            let deadline = Instant::now() + (q.last_batch / 2).min(MAX_GATHER);
            q.gathering = true;
            while q.waiting.len() < q.expected && !self.joined.wait_until(q, deadline).timed_out() {}
            q.gathering = false;
        }
    }

    /// Runs `batch` as the leader of its lane: marks its slots taken, runs
    /// them without the lock, then records the outcome in every slot and
    /// wakes the submitters. Takes the lock back before returning it.
    ///
    /// # Safety
    /// `batch` is what [`take`](Self::take) returned under `q`: every
    /// pointer is the slot of a submitter that waits in `submit` until this
    /// function marks it done.
    unsafe fn lead<'q>(
        &'q self,
        mut q: MutexGuard<'q, Queue>,
        batch: Vec<SlotPtr>,
        mixed: bool,
        run_batch: &dyn Fn(&mut [&mut Slot]) -> Result<()>,
    ) -> MutexGuard<'q, Queue> {
        q.batching |= mixed;
        let accounts: Vec<u64> = batch
            .iter()
            .filter_map(|p| {
                // SAFETY: the slot's submitter waits; we hold the lock.
                unsafe { (*p.0).taken = true };
                unsafe { (*p.0).account }
            })
            .collect();
        q.running.extend_from_slice(&accounts);
        let n = batch.len();
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
        q.leaders -= 1;
        if mixed {
            q.batching = false;
        }
        for a in accounts {
            if let Some(i) = q.running.iter().position(|&r| r == a) {
                q.running.swap_remove(i);
            }
        }
        for s in slots {
            if failure.is_some() {
                s.failure = failure.clone();
            }
            s.done = true;
        }
        self.wake.notify_all();
        q
    }

    /// The next batch to run, and whether it mixes accounts; None when every
    /// queued job's account has a batch running. With one lane: the queue's
    /// first jobs. Else, the first job that may run now, with the queued
    /// jobs of its account; or, on the last lane (the caller counted itself
    /// among `leaders`) when no mixed batch
    /// runs, every job that may run now.
    fn take(&self, q: &mut Queue) -> Option<(Vec<SlotPtr>, bool)> {
        if self.lanes == 1 {
            let n = q.waiting.len().min(self.max_jobs);
            return (n > 0).then(|| (q.waiting.drain(..n).collect(), n > 1));
        }
        // SAFETY (here and below): queued slots belong to waiting submitters; we hold the lock.
        let account = |p: &SlotPtr| unsafe { (*p.0).account };
        let free = |p: &SlotPtr, running: &[u64]| account(p).is_none_or(|a| !running.contains(&a));
        let first = q.waiting.iter().position(|p| free(p, &q.running))?;
        let mix = !q.batching && q.leaders == self.lanes;
        let want = account(&q.waiting[first]);
        let mut picked = Vec::new();
        let mut kept = Vec::with_capacity(q.waiting.len());
        for p in q.waiting.drain(..) {
            let take = picked.len() < self.max_jobs
                && if mix {
                    free(&p, &q.running)
                } else {
                    // Its account's jobs; a job without one runs alone.
                    picked.is_empty() && account(&p) == want && free(&p, &q.running)
                        || want.is_some() && account(&p) == want
                };
            if take { picked.push(p) } else { kept.push(p) }
        }
        q.waiting = kept;
        let mixed = mix && {
            let a = account(&picked[0]);
            a.is_none() && picked.len() > 1 || picked.iter().any(|p| account(p) != a)
        };
        Some((picked, mixed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Many writers, with and without accounts, on one lane and on several:
    /// every write returns; one lane runs one batch at a time; with lanes, two
    /// running batches never share an account and at most one mixes them.
    #[test]
    fn batches_respect_lanes_and_accounts() {
        for lanes in [1, 2, 4] {
            let group = GroupCommit::with_lanes(8, lanes);
            let running = Mutex::new((0usize, 0usize, Vec::<u64>::new())); // (batches, mixed, accounts)
            let (most, batched) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let run_batch = |slots: &mut [&mut Slot]| -> Result<()> {
                let accounts: Vec<Option<u64>> = slots.iter().map(|s| s.account).collect();
                let first = accounts[0];
                let mixed = accounts.iter().any(|a| *a != first) || (first.is_none() && accounts.len() > 1);
                {
                    let mut r = running.lock();
                    r.0 += 1;
                    r.1 += usize::from(mixed);
                    most.fetch_max(r.0, Ordering::Relaxed);
                    assert!(r.0 <= lanes, "{} batches on {lanes} lanes", r.0);
                    assert!(r.1 <= 1, "two mixed batches at once");
                    for a in accounts.iter().flatten() {
                        assert!(!r.2.contains(a), "account {a} in two batches at once");
                    }
                    r.2.extend(accounts.iter().flatten());
                }
                if slots.len() > 1 {
                    batched.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(300));
                let mut r = running.lock();
                r.0 -= 1;
                r.1 -= usize::from(mixed);
                r.2.retain(|a| !accounts.contains(&Some(*a)));
                Ok(())
            };
            std::thread::scope(|s| {
                for t in 0..12u64 {
                    let (group, run_batch) = (&group, &run_batch);
                    s.spawn(move || {
                        for i in 0..40u64 {
                            let account = match t % 3 {
                                0 => None,
                                1 => Some(t),     // its own account
                                _ => Some(i % 2), // two shared accounts
                            };
                            group.submit(account, &mut |_| true, run_batch).unwrap();
                        }
                    });
                }
            });
            assert!(batched.load(Ordering::Relaxed) > 0, "{lanes} lanes: writes were batched");
            if lanes > 1 {
                assert!(most.load(Ordering::Relaxed) > 1, "{lanes} lanes: batches ran side by side");
            }
        }
    }
}
