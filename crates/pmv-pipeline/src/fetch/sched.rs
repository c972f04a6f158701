//! The scheduler: runs up to `concurrency` attempts at once, never more than a host's
//! slots allow, and keeps going on other hosts while one is busy or paused.
//!
//! Owns the work queue (jobs ready to run, jobs parked per busy or paused host, jobs
//! waiting for their retry time), the dispatch loop (asks the calling thread for more
//! jobs while the queue runs low, so memory stays flat), one task per attempt, and
//! the stop rules: at the deadline, when the byte budget is spent, and on
//! cancellation, no new attempt starts and those running stop at once (whether they
//! wait for a connection, an answer, a lookup or the next byte), keeping their
//! partial files and recording what resumes them; when a download does not fit on the
//! disk, no new attempt starts and those running (whose room is claimed) finish.
//! Retries never hold a slot while they wait. It never touches the catalog: results
//! go to the calling thread as [`Event`]s.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::download::{self, AttemptError, Ctx, or_cancel};
use super::event::{Event, FailedFile, Fetched, Verified};
use super::job::{FinalFailure, Job, Next, Stage};
use super::plan::host_of;
use super::space::NoSpace;
use super::verify::Role;
use super::{FetchError, Names, Stop};
use crate::net::politeness::{Busy, Politeness, Slot};
use crate::source::{SourceKind, Target};

/// How the scheduler ended.
#[derive(Debug, Default)]
pub(crate) struct SchedEnd {
    pub stopped: Option<String>,
    pub not_started: u64,
    pub throttled: u64,
    pub retries: u64,
}

/// How one attempt ended.
enum End {
    Verified(Box<Verified>, String),
    Retry(Job, Duration),
    Advance(Job),
    Failed(Job, FinalFailure),
    Interrupted,
    /// The file does not fit on the disk: it is due again at the next run.
    NoSpace(Job, Box<NoSpace>),
    Fatal(FetchError),
}

pub(crate) async fn run(ctx: Ctx) -> Result<SchedEnd, FetchError> {
    let ctx = Arc::new(ctx);
    let mut queue = Queue::default();
    let mut inflight: JoinSet<End> = JoinSet::new();
    let mut exhausted = false;
    // The page of jobs asked from the calling thread, while it is being read.
    let mut page: Option<tokio::sync::oneshot::Receiver<Vec<Job>>> = None;
    let low_water = (ctx.settings.concurrency * 4).max(512);
    let mut fatal: Option<FetchError> = None;
    let mut end = SchedEnd::default();
    let deadline = ctx.deadline.map(Instant::from_std);
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            ctx.shared.cancel.trigger(Stop::Deadline);
        }
        if ctx
            .shared
            .max_bytes
            .is_some_and(|m| ctx.shared.bytes.load(std::sync::atomic::Ordering::Relaxed) >= m)
        {
            ctx.shared.cancel.trigger(Stop::ByteBudget);
        }
        if let Some(why) = ctx.shared.cancel.reason() {
            end.stopped = Some(why.as_str().into());
            break;
        }
        if ctx.shared.is_out_of_space() {
            end.stopped = Some("disk full".into());
            break;
        }
        if !exhausted && page.is_none() && queue.len() + inflight.len() < low_water {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if ctx.events.send(Event::NeedJobs(tx)).is_err() {
                break;
            }
            page = Some(rx);
        }
        let now = Instant::now();
        queue.promote(now);
        while inflight.len() < ctx.settings.concurrency {
            match queue.pop(&ctx.gate, now) {
                Some((job, slot)) => {
                    inflight.spawn(run_job(Arc::clone(&ctx), job, slot));
                }
                None => break,
            }
        }
        if inflight.is_empty() && queue.len() == 0 && exhausted {
            break;
        }
        let wake = queue.next_wake();
        let changed = ctx.gate.changed();
        tokio::select! {
            jobs = next_page(&mut page) => {
                page = None;
                match jobs {
                    Some(jobs) if !jobs.is_empty() => queue.ready.extend(jobs),
                    _ => exhausted = true,
                }
            }
            Some(res) = inflight.join_next(), if !inflight.is_empty() => {
                handle(&ctx, res, &mut queue, &mut end, &mut fatal, false);
            }
            _ = sleep_until(wake), if wake.is_some() => {}
            _ = changed => {}
            _ = ctx.shared.cancel.cancelled() => {}
            _ = sleep_until(deadline), if deadline.is_some() => {}
        }
        // Take every other finished attempt without waiting.
        while let Some(res) = inflight.try_join_next() {
            handle(&ctx, res, &mut queue, &mut end, &mut fatal, false);
        }
    }
    // Attempts running stop at once (they were cancelled), or finish (the disk is
    // full: their room is claimed); retries they ask for are not made.
    while let Some(res) = inflight.join_next().await {
        handle(&ctx, res, &mut queue, &mut end, &mut fatal, true);
    }
    let why = stop_message(&ctx);
    for d in queue.delayed.drain() {
        send_failed(&ctx, &d.job, d.job.cut_short(why));
    }
    end.not_started = queue.ready.len() as u64
        + queue
            .parked
            .values()
            .map(|(q, _)| q.len() as u64)
            .sum::<u64>();
    end.throttled = ctx.gate.throttles();
    match fatal {
        Some(e) => Err(e),
        None => Ok(end),
    }
}

/// The page being read, when one was asked for (pending otherwise).
async fn next_page(
    page: &mut Option<tokio::sync::oneshot::Receiver<Vec<Job>>>,
) -> Option<Vec<Job>> {
    match page {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn handle(
    ctx: &Ctx,
    res: Result<End, tokio::task::JoinError>,
    queue: &mut Queue,
    end: &mut SchedEnd,
    fatal: &mut Option<FetchError>,
    stopping: bool,
) {
    let e = match res {
        Ok(e) => e,
        Err(join) => End::Fatal(FetchError::Runtime(std::io::Error::other(join.to_string()))),
    };
    match e {
        End::Verified(v, host) => {
            ctx.gate.succeeded(&host);
            let _ = ctx.events.send(Event::Verified(v));
        }
        End::Retry(job, wait) if !stopping => {
            end.retries += 1;
            queue.delay(job, Instant::now() + wait);
        }
        End::Advance(mut job) if !stopping => {
            job.host = host_of(&job, ctx.resolver.settings());
            queue.ready.push_front(job);
        }
        End::Retry(job, _) | End::Advance(job) => {
            send_failed(ctx, &job, job.cut_short(stop_message(ctx)));
        }
        End::Failed(job, f) => send_failed(ctx, &job, f),
        End::Interrupted => {
            let _ = ctx.events.send(Event::Interrupted);
        }
        End::NoSpace(job, e) => {
            tracing::warn!("{e}");
            send_failed(ctx, &job, job.no_room(&e.to_string()));
            ctx.shared.out_of_space(*e);
        }
        End::Fatal(e) => {
            ctx.shared.cancel.trigger(Stop::Cancelled);
            fatal.get_or_insert(e);
        }
    }
}

/// Why a file's next attempt is not made, for its record.
fn stop_message(ctx: &Ctx) -> &'static str {
    match ctx.shared.cancel.reason() {
        Some(Stop::Deadline) => "the run's time budget ended before the next attempt",
        Some(Stop::ByteBudget) => "the run's byte budget was spent before the next attempt",
        Some(Stop::Cancelled) => "the run was stopped before the next attempt",
        None if ctx.shared.is_out_of_space() => {
            "the disk was too full to go on before the next attempt"
        }
        None => "the run was stopped before the next attempt",
    }
}

/// Records what resumes the partial file an attempt leaves behind (its source and
/// validators), so that the next run continues it even if it is small (larger files
/// have them recorded as soon as their headers arrive).
fn keep_resume(ctx: &Ctx, job: &Job) {
    let Some(r) = &job.resume else { return };
    if job.rank() != Some(r.rank) || r.validator().is_none() {
        return;
    }
    let _ = ctx.events.send(Event::Validators {
        item_id: job.item_id,
        role: job.role,
        rank: r.rank as i64,
        etag: r.etag.clone(),
        last_modified: r.last_modified.clone(),
        total: r.total,
    });
}

fn send_failed(ctx: &Ctx, job: &Job, failure: FinalFailure) {
    let names = Names::new(&ctx.root, &job.dataset, job.role, &job.key);
    let _ = ctx.events.send(Event::Failed(Box::new(FailedFile {
        item_id: job.item_id,
        role: job.role,
        dataset: Arc::clone(&job.dataset),
        key: job.key.clone(),
        failure,
        partial: names.partial(),
    })));
}

async fn run_job(ctx: Arc<Ctx>, mut job: Job, slot: Slot) -> End {
    let names = Names::new(&ctx.root, &job.dataset, job.role, &job.key);
    let _ = ctx.events.send(Event::Started {
        item_id: job.item_id,
        role: job.role,
        rank: job.rank().map(|r| r as i64),
    });
    job.attempts += 1;
    let host = slot.host().to_owned();
    let result = attempt(&ctx, &mut job, &names).await;
    drop(slot);
    match &result {
        Err(AttemptError::Interrupted) => keep_resume(&ctx, &job),
        Err(AttemptError::Failed(f)) if f.class.is_transient() => keep_resume(&ctx, &job),
        _ => {}
    }
    match result {
        Ok(done) => {
            let source_rank = if done.adopted {
                job.prior.source_rank
            } else {
                job.rank().map(|r| r as i64)
            };
            End::Verified(
                Box::new(Verified {
                    item_id: job.item_id,
                    role: job.role,
                    fetched: done.fetched,
                    source_rank,
                    kind: done.kind,
                    via: done.via,
                    imported: done.imported,
                    adopted: done.adopted,
                    old_path: job.prior.path.clone(),
                }),
                host,
            )
        }
        Err(AttemptError::Interrupted) => End::Interrupted,
        Err(AttemptError::NoSpace(mut e)) => {
            e.item = Some(format!("{}/{} {}", job.dataset, job.key, job.role.as_str()));
            if e.filled
                && let Some(free) = ctx.disk.free()
            {
                e.free = free;
            }
            End::NoSpace(job, e)
        }
        Err(AttemptError::Fatal(e)) => End::Fatal(e),
        Err(AttemptError::Failed(f)) => {
            tracing::debug!(item = %job.key, role = job.role.as_str(), "attempt failed: {f}");
            match job.after_failure(f, &ctx.settings) {
                Next::Retry(wait) => End::Retry(job, wait),
                Next::Advance => End::Advance(job),
                Next::Give(f) => End::Failed(job, f),
            }
        }
    }
}

struct Done {
    fetched: Fetched,
    kind: Option<SourceKind>,
    via: &'static str,
    adopted: bool,
    imported: bool,
}

async fn attempt(ctx: &Ctx, job: &mut Job, names: &Names) -> Result<Done, AttemptError> {
    if job.check_adopt {
        job.check_adopt = false;
        if let Some(fetched) = download::adopt(ctx, job, names).await? {
            return Ok(Done {
                fetched,
                kind: None,
                via: "adopted",
                adopted: true,
                imported: false,
            });
        }
    }
    match job.stage {
        Stage::Import => {
            let path = job.import.clone().expect("import stage has a path");
            let expected = job.expected.clone();
            let fetched = download::local(ctx, job, names, &path, &expected).await?;
            Ok(Done {
                fetched,
                kind: Some(SourceKind::Local),
                via: "import-dir",
                adopted: false,
                imported: true,
            })
        }
        Stage::Source(rank) => {
            let loc = job.sources[rank].clone();
            let resolved = or_cancel!(ctx, ctx.resolver.resolve(&loc, Some(&job.key), false))?;
            let expected = match job.role {
                Role::Video => job.expected.merged(&resolved.expected),
                Role::Cover => resolved.expected.clone(),
            };
            let fetched = match &resolved.target {
                Target::Http {
                    url,
                    headers,
                    from_public,
                } => {
                    let remote = download::Remote {
                        url,
                        headers,
                        public: *from_public,
                    };
                    download::http(ctx, job, names, rank, &remote, &expected).await?
                }
                Target::Local { path } => download::local(ctx, job, names, path, &expected).await?,
            };
            Ok(Done {
                fetched,
                kind: Some(loc.kind),
                via: resolved.via,
                adopted: false,
                imported: loc.kind == SourceKind::Local,
            })
        }
    }
}

/// A job waiting for its retry time.
struct Delayed {
    at: Instant,
    seq: u64,
    job: Job,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    // Reversed: the heap's top is the earliest.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Job>,
    delayed: BinaryHeap<Delayed>,
    /// Jobs of hosts that are busy (`None`) or paused (until then).
    parked: HashMap<String, (VecDeque<Job>, Option<Instant>)>,
    seq: u64,
}

impl Queue {
    fn len(&self) -> usize {
        self.ready.len()
            + self.delayed.len()
            + self.parked.values().map(|(q, _)| q.len()).sum::<usize>()
    }

    fn delay(&mut self, job: Job, at: Instant) {
        self.seq += 1;
        self.delayed.push(Delayed {
            at,
            seq: self.seq,
            job,
        });
    }

    fn promote(&mut self, now: Instant) {
        while self.delayed.peek().is_some_and(|d| d.at <= now) {
            let d = self.delayed.pop().expect("peeked");
            self.ready.push_back(d.job);
        }
    }

    /// The next job whose host has a free slot, with the slot.
    fn pop(&mut self, gate: &Arc<Politeness>, now: Instant) -> Option<(Job, Slot)> {
        let hosts: Vec<String> = self.parked.keys().cloned().collect();
        for h in hosts {
            match gate.try_reserve(&h, now) {
                Ok(slot) => {
                    let entry = self.parked.get_mut(&h).expect("listed");
                    let job = entry.0.pop_front().expect("parked queues are not empty");
                    if entry.0.is_empty() {
                        self.parked.remove(&h);
                    }
                    return Some((job, slot));
                }
                Err(busy) => {
                    if let Some(e) = self.parked.get_mut(&h) {
                        e.1 = match busy {
                            Busy::Paused(u) => Some(u),
                            Busy::Full => None,
                        };
                    }
                }
            }
        }
        while let Some(job) = self.ready.pop_front() {
            match gate.try_reserve(&job.host, now) {
                Ok(slot) => return Some((job, slot)),
                Err(busy) => {
                    let until = match busy {
                        Busy::Paused(u) => Some(u),
                        Busy::Full => None,
                    };
                    let e = self
                        .parked
                        .entry(job.host.clone())
                        .or_insert_with(|| (VecDeque::new(), until));
                    e.1 = until;
                    e.0.push_back(job);
                }
            }
        }
        None
    }

    /// When a waiting job may become ready without any other event.
    fn next_wake(&self) -> Option<Instant> {
        let delayed = self.delayed.peek().map(|d| d.at);
        let paused = self.parked.values().filter_map(|(_, u)| *u).min();
        match (delayed, paused) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
