//! Property tests of the coordinator's state machine over random event sequences: joins,
//! heartbeats, deaths, restarts, leaves, training progress and checkpoint acknowledgements, played
//! by simulated workers that really read their data streams. Checked after every event: at most one
//! live generation whose ranks are a permutation of 0..world; every new generation restores the
//! latest committed checkpoint; every committed cursor holds exactly the samples of committed steps
//! (nothing lost, nothing twice).

use std::collections::BTreeSet;

use fourm_coordinator::manifest::{Manifest, ManifestFile};
use fourm_coordinator::state::{
    Instruction, Phase, Progress, Start, StateConfig, StateMachine, WorkerInfo,
};
use fourm_plan::{Cursor, EpochPlan, RankStream, ShardSize};
use proptest::prelude::*;

const TIMEOUT: u64 = 3_000;

/// Checkpoints committed over all cases (the suite must actually exercise commits).
static COMMITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[derive(Debug, Clone)]
enum Event {
    Join(u8),
    Heartbeats,
    Train,
    Checkpoint,
    Commit,
    FailCommit,
    RequestCheckpoint,
    Kill(u8),
    Restart(u8),
    Leave(u8),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (0u8..5).prop_map(Event::Join),
        4 => Just(Event::Heartbeats),
        6 => Just(Event::Train),
        2 => Just(Event::Checkpoint),
        2 => Just(Event::Commit),
        1 => Just(Event::FailCommit),
        1 => Just(Event::RequestCheckpoint),
        1 => (0u8..5).prop_map(Event::Kill),
        1 => (0u8..5).prop_map(Event::Restart),
        1 => (0u8..5).prop_map(Event::Leave),
    ]
}

struct SimWorker {
    id: String,
    alive: bool,
    generation: u64,
    rank: u32,
    step: u64,
    stream: Option<RankStream>,
}

type Key = (u64, u32, u32);

struct Sim {
    sm: StateMachine,
    plan: EpochPlan,
    now: u64,
    workers: Vec<SimWorker>,
    /// Samples of committed steps.
    committed: Vec<Key>,
    /// Samples consumed since the last commit: (generation, step, sample).
    uncommitted: Vec<(u64, u64, Key)>,
    committed_step: u64,
    batch: usize,
    /// A manifest every rank acknowledged, being written: (its generation, the manifest).
    in_flight: Option<(u64, Manifest)>,
}

impl Sim {
    fn info(id: &str) -> WorkerInfo {
        WorkerInfo {
            worker_id: id.into(),
            collective_address: format!("127.0.0.1:{}", 7000 + id.len()),
            device: "cpu".into(),
            config_digest: "digest".into(),
        }
    }

    fn worker(&mut self, i: u8) -> &mut SimWorker {
        let id = format!("w{i}");
        if let Some(pos) = self.workers.iter().position(|w| w.id == id) {
            return &mut self.workers[pos];
        }
        self.workers.push(SimWorker {
            id,
            alive: false,
            generation: 0,
            rank: 0,
            step: 0,
            stream: None,
        });
        self.workers.last_mut().unwrap()
    }

    fn running_ready(&self) -> Option<u64> {
        let g = self.sm.generation_id();
        let members = match self.sm.phase() {
            Phase::Running(running) => running.members.clone(),
            _ => return None,
        };
        let ready = members.iter().all(|m| {
            self.workers
                .iter()
                .any(|w| &w.id == m && w.alive && w.generation == g)
        });
        ready.then_some(g)
    }

    fn apply(&mut self, e: Event) -> Result<(), TestCaseError> {
        match e {
            Event::Join(i) | Event::Restart(i) => {
                let now = self.now;
                let w = self.worker(i);
                if matches!(e, Event::Join(_)) && w.alive {
                    return Ok(());
                }
                w.alive = true;
                w.generation = 0;
                w.stream = None;
                let id = w.id.clone();
                self.sm.register(Sim::info(&id), now).unwrap();
            }
            Event::Heartbeats => {
                self.now += 1_000;
                self.sm.tick(self.now);
                for idx in 0..self.workers.len() {
                    if !self.workers[idx].alive {
                        continue;
                    }
                    let (id, generation, step) = {
                        let w = &self.workers[idx];
                        (w.id.clone(), w.generation, w.step)
                    };
                    match self.sm.heartbeat(&id, generation, step, self.now) {
                        Instruction::Join(g) => self.join(idx, g)?,
                        Instruction::AbortCollective(_) | Instruction::Register => {
                            let w = &mut self.workers[idx];
                            w.generation = 0;
                            w.stream = None;
                            if matches!(
                                self.sm.heartbeat(&id, 0, 0, self.now),
                                Instruction::Register
                            ) {
                                self.sm.register(Sim::info(&id), self.now).unwrap();
                            }
                        }
                        _ => {}
                    }
                }
            }
            Event::Train => {
                let Some(g) = self.running_ready() else {
                    return Ok(());
                };
                for w in self
                    .workers
                    .iter_mut()
                    .filter(|w| w.alive && w.generation == g)
                {
                    w.step += 1;
                    let stream = w.stream.as_mut().unwrap();
                    for s in stream.take_samples(self.batch) {
                        self.uncommitted
                            .push((g, w.step, (s.epoch, s.shard, s.sample)));
                    }
                    let report = Progress {
                        entries: stream.take_progress(),
                        ..Progress::default()
                    };
                    self.sm
                        .progress(&w.id, g, w.step, report, self.now)
                        .unwrap();
                }
            }
            Event::Checkpoint => {
                let Some(g) = self.running_ready() else {
                    return Ok(());
                };
                let members: Vec<(String, u32, u64)> = self
                    .workers
                    .iter()
                    .filter(|w| w.alive && w.generation == g)
                    .map(|w| (w.id.clone(), w.rank, w.step))
                    .collect();
                let step = members[0].2;
                if step <= self.committed_step || self.in_flight.is_some() {
                    return Ok(());
                }
                let zero = members.iter().find(|m| m.1 == 0).unwrap().0.clone();
                self.sm.checkpoint_begin(&zero, g, step).unwrap();
                let mut manifest = None;
                for (id, rank, _) in &members {
                    let files = if *rank == 0 {
                        vec![ManifestFile {
                            name: "model.safetensors".into(),
                            size: 1,
                            sha256: "00".into(),
                        }]
                    } else {
                        Vec::new()
                    };
                    if let Some(m) = self
                        .sm
                        .checkpoint_done(id, g, step, files, self.now)
                        .unwrap()
                    {
                        manifest = Some(m);
                    }
                }
                let manifest = manifest.expect("every rank acknowledged");
                self.in_flight = Some((g, manifest));
            }
            // The manifest is durably written, maybe after the generation that wrote it ended.
            Event::Commit => {
                let Some((g, manifest)) = self.in_flight.take() else {
                    return Ok(());
                };
                let step = manifest.step;
                // The committed cursor holds exactly the samples of committed steps.
                let cursor = Cursor::from_state(&self.plan, &manifest.cursor).unwrap();
                let mut expected = self.committed.clone();
                // Only the committing generation's samples count: those of ended generations were
                // never committed and are read again.
                expected.extend(
                    self.uncommitted
                        .iter()
                        .filter(|(gen_id, s, _)| *gen_id == g && *s <= step)
                        .map(|(_, _, k)| *k),
                );
                let unique: BTreeSet<Key> = expected.iter().copied().collect();
                prop_assert_eq!(
                    unique.len(),
                    expected.len(),
                    "a sample was used twice in committed steps"
                );
                let total: u64 = (0..cursor.frontier())
                    .map(|k| cursor.consumed(&self.plan, k))
                    .sum();
                prop_assert_eq!(
                    total,
                    expected.len() as u64,
                    "committed cursor and committed samples differ"
                );
                self.sm.checkpoint_committed(&manifest, self.now).unwrap();
                self.committed = expected;
                self.uncommitted
                    .retain(|(gen_id, s, _)| *gen_id == g && *s > step);
                self.committed_step = step;
                COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Event::FailCommit => {
                if let Some((_, manifest)) = self.in_flight.take() {
                    self.sm
                        .checkpoint_failed(manifest.step, "store down", self.now);
                }
            }
            Event::RequestCheckpoint => {
                self.sm.request_checkpoint();
            }
            Event::Kill(i) => {
                self.worker(i).alive = false;
                // Silence long enough to be noticed.
                for _ in 0..(TIMEOUT / 1_000 + 2) {
                    self.apply(Event::Heartbeats)?;
                }
            }
            Event::Leave(i) => {
                let now = self.now;
                let w = self.worker(i);
                if !w.alive {
                    return Ok(());
                }
                w.alive = false;
                let id = w.id.clone();
                self.sm.leave(&id, "test", now);
            }
        }
        self.check_invariants()
    }

    fn join(&mut self, idx: usize, g: u64) -> Result<(), TestCaseError> {
        let id = self.workers[idx].id.clone();
        let r = self.sm.rendezvous(&id, g, None).unwrap();
        // Recovery restores the latest committed checkpoint.
        let latest = self.sm.committed().map(|c| c.step);
        prop_assert_eq!(r.restore.as_ref().map(|p| p.step), latest);
        let lease = self.sm.lease(&id, g, 4).unwrap();
        let committed_cursor = self
            .sm
            .committed()
            .map(|c| c.cursor.clone())
            .unwrap_or_default();
        prop_assert_eq!(&lease.start, &committed_cursor);
        let w = &mut self.workers[idx];
        w.generation = g;
        w.rank = r.rank;
        w.step = latest.unwrap_or(0);
        w.stream = Some(RankStream::new(
            &self.plan,
            &lease.assignment,
            r.rank,
            2,
            &lease.start,
        ));
        Ok(())
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        if let (Some((wrote, _)), Phase::Running(g)) = (&self.in_flight, self.sm.phase()) {
            // While a commit is in flight no generation forms: the next one restores it.
            prop_assert_eq!(
                *wrote,
                g.id,
                "a generation formed while a commit was in flight"
            );
        }
        if let Phase::Running(g) = self.sm.phase() {
            let unique: BTreeSet<&String> = g.members.iter().collect();
            prop_assert_eq!(unique.len(), g.members.len(), "a worker holds two ranks");
            prop_assert!(g.members.len() as u32 <= 3, "more than max_workers");
            for (rank, m) in g.members.iter().enumerate() {
                prop_assert_eq!(g.rank_of(m), Some(rank as u32));
            }
            // Workers that believe they are in a generation other than the running one must be
            // told to abort on their next heartbeat; no two generations train at once.
            let training: BTreeSet<u64> = self
                .workers
                .iter()
                .filter(|w| w.alive && w.generation != 0)
                .map(|w| w.generation)
                .collect();
            prop_assert!(
                training.iter().all(|&t| t <= g.id),
                "a worker is ahead of the running generation"
            );
        }
        Ok(())
    }
}

#[test]
fn state_machine_invariants() {
    invariants_hold();
    let commits = COMMITS.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        commits > 50,
        "only {commits} checkpoints committed over all cases"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    fn invariants_hold(events in prop::collection::vec(event(), 1..80), seed in any::<u64>()) {
        let plan = EpochPlan::new(seed, (0..6).map(|i| ShardSize { shard: i, samples: 3 + u64::from(i) * 2 }).collect()).unwrap();
        let config = StateConfig {
            job_id: "test".into(),
            min_workers: 1,
            max_workers: 3,
            join_timeout_ms: 1_500,
            heartbeat_interval_ms: 1_000,
            heartbeat_timeout_ms: TIMEOUT,
            checkpoint_every: 0,
            keep_last: 2,
            total_steps: 1_000_000,
            stall_timeout_ms: u64::MAX / 4,
            max_restarts: u32::MAX,
            progress_timeout_ms: u64::MAX / 4,
        };
        let start = Start { incarnation: 1, salt: seed, ..Start::default() };
        let sm = StateMachine::new(config, plan.clone(), start).unwrap();
        let mut sim = Sim { sm, plan, now: 0, workers: Vec::new(), committed: Vec::new(), uncommitted: Vec::new(), committed_step: 0, batch: 2, in_flight: None };
        for e in events {
            // Stale generations: a worker that missed the end of its generation is refused.
            sim.apply(e)?;
            let running = sim.sm.generation_id();
            for w in sim.workers.iter().filter(|w| w.alive && w.generation != 0 && w.generation != running) {
                let refused = sim.sm.progress(&w.id, w.generation, w.step + 1, Progress::default(), sim.now);
                prop_assert!(refused.is_err(), "stale generation accepted");
            }
        }
    }
}

#[test]
fn a_generation_forms_at_min_workers_after_the_join_timeout() {
    let plan = EpochPlan::new(
        0,
        vec![ShardSize {
            shard: 0,
            samples: 10,
        }],
    )
    .unwrap();
    let config = StateConfig {
        job_id: "t".into(),
        min_workers: 2,
        max_workers: 3,
        join_timeout_ms: 5_000,
        heartbeat_interval_ms: 1_000,
        heartbeat_timeout_ms: 10_000,
        checkpoint_every: 0,
        keep_last: 1,
        total_steps: 10,
        stall_timeout_ms: 600_000,
        max_restarts: 10,
        progress_timeout_ms: 300_000,
    };
    let start = Start {
        incarnation: 7,
        ..Start::default()
    };
    let mut sm = StateMachine::new(config, plan, start).unwrap();
    sm.register(Sim::info("a"), 0).unwrap();
    sm.tick(8_000);
    assert_eq!(sm.generation_id(), 0, "one worker is not enough");
    sm.register(Sim::info("b"), 8_000).unwrap();
    sm.heartbeat("a", 0, 0, 9_000);
    sm.tick(9_000);
    assert_eq!(
        sm.generation_id(),
        0,
        "waits for more workers up to the join timeout"
    );
    sm.heartbeat("a", 0, 0, 13_000);
    sm.heartbeat("b", 0, 0, 13_000);
    sm.tick(13_001);
    let g = sm.generation_id();
    assert_eq!(g >> 48, 7, "generation ids carry the incarnation");
    assert_eq!(sm.heartbeat("a", 0, 0, 13_002), Instruction::Join(g));
    let err = sm
        .progress("a", g - 1, 1, Progress::default(), 13_002)
        .unwrap_err()
        .to_string();
    assert!(err.contains("stale generation"), "{err}");
    let bad = Sim::info("c");
    let bad = WorkerInfo {
        config_digest: "other".into(),
        ..bad
    };
    assert!(
        sm.register(bad, 13_003)
            .unwrap_err()
            .to_string()
            .contains("digest")
    );
}

/// A machine of `max` workers (`min` to form), heartbeats every second, timeouts as given.
fn machine(min: u32, max: u32, progress_timeout_ms: u64, max_restarts: u32) -> StateMachine {
    let plan = EpochPlan::new(
        0,
        (0..4)
            .map(|shard| ShardSize { shard, samples: 50 })
            .collect(),
    )
    .unwrap();
    let config = StateConfig {
        job_id: "t".into(),
        min_workers: min,
        max_workers: max,
        join_timeout_ms: 5_000,
        heartbeat_interval_ms: 1_000,
        heartbeat_timeout_ms: 10_000,
        checkpoint_every: 0,
        keep_last: 2,
        total_steps: 100,
        stall_timeout_ms: 120_000,
        max_restarts,
        progress_timeout_ms,
    };
    let start = Start {
        incarnation: 1,
        ..Start::default()
    };
    StateMachine::new(config, plan, start).unwrap()
}

/// Registers `ids` at `now` and returns the generation they form.
fn formed(sm: &mut StateMachine, ids: &[&str], now: u64) -> u64 {
    for id in ids {
        sm.register(Sim::info(id), now).unwrap();
    }
    let g = sm.generation_id();
    assert_ne!(g, 0, "a generation of {ids:?} forms");
    g
}

#[test]
fn after_a_failure_the_next_generation_does_not_wait_for_a_dead_worker() {
    let mut sm = machine(2, 3, 600_000, 10);
    let g = formed(&mut sm, &["a", "b", "c"], 0);
    // `c` dies (silent from now on); `a`'s collective fails at once and it reports it.
    sm.report_failure("a", g, "peer closed the connection", 1_000)
        .unwrap();
    assert_eq!(sm.generation_id(), 0);
    // The survivors leave the generation and say so within a heartbeat.
    sm.heartbeat("a", 0, 3, 1_300);
    sm.heartbeat("b", 0, 3, 1_400);
    sm.tick(2_000);
    assert_eq!(sm.generation_id(), 0, "c may still report in");
    // Two heartbeat intervals after the end, long before c's heartbeat timeout (10 s).
    sm.tick(3_100);
    let next = sm.generation_id();
    assert!(next > g, "re-formed without c");
    let Phase::Running(running) = sm.phase() else {
        panic!("running")
    };
    assert_eq!(running.members, ["a", "b"]);
}

#[test]
fn a_member_that_makes_no_progress_is_evicted() {
    let mut sm = machine(2, 3, 5_000, 10);
    let g = formed(&mut sm, &["a", "b", "c"], 0);
    for t in 1..=8u64 {
        let now = t * 1_000;
        if sm.generation_id() == 0 {
            break;
        }
        for id in ["a", "b"] {
            sm.progress(id, g, t, Progress::default(), now).unwrap();
            sm.heartbeat(id, g, t, now);
        }
        // `c` heartbeats but is stuck in its restore: its step never advances.
        sm.heartbeat("c", g, 0, now);
        sm.tick(now);
    }
    assert_eq!(sm.generation_id(), 0, "the generation ended");
    assert!(
        sm.status()
            .last_change
            .contains("worker c made no progress")
    );
    // `c` still claims the old generation: the next one forms without it.
    sm.heartbeat("a", 0, 8, 8_500);
    sm.heartbeat("b", 0, 8, 8_500);
    sm.heartbeat("c", g, 0, 8_500);
    sm.tick(14_000);
    let Phase::Running(next) = sm.phase() else {
        panic!("a generation forms without the wedged worker")
    };
    assert_eq!(next.members, ["a", "b"]);
}

#[test]
fn a_failed_commit_ends_its_generation_instead_of_hanging() {
    let mut sm = machine(1, 1, 600_000, 10);
    let g = formed(&mut sm, &["a"], 0);
    let report = Progress::default();
    sm.progress("a", g, 100, report, 1_000).unwrap();
    sm.checkpoint_begin("a", g, 100).unwrap();
    let files = vec![ManifestFile {
        name: "model.safetensors".into(),
        size: 1,
        sha256: "00".into(),
    }];
    let manifest = sm.checkpoint_done("a", g, 100, files, 1_000).unwrap();
    assert!(manifest.is_some());
    sm.tick(1_100);
    assert_eq!(sm.generation_id(), g, "the commit is in flight");
    sm.checkpoint_failed(100, "store unavailable", 2_000);
    assert_eq!(sm.generation_id(), 0, "the generation that wrote it ended");
    assert!(matches!(
        sm.heartbeat("a", g, 100, 2_100),
        Instruction::AbortCollective(_)
    ));
    sm.heartbeat("a", 0, 100, 2_200);
    sm.tick(2_300);
    assert!(sm.generation_id() > g, "the job goes on");
}

#[test]
fn a_job_without_progress_fails_loudly() {
    let mut sm = machine(1, 1, 600_000, 10);
    let g = formed(&mut sm, &["a"], 0);
    sm.progress("a", g, 1, Progress::default(), 1_000).unwrap();
    sm.heartbeat("a", g, 1, 60_000);
    sm.tick(60_000);
    assert!(sm.failure().is_none());
    sm.heartbeat("a", g, 1, 121_500);
    sm.tick(121_500);
    let failure = sm.failure().expect("stalled");
    assert!(failure.contains("job.stall_timeout"), "{failure}");
    assert!(matches!(
        sm.heartbeat("a", g, 1, 121_600),
        Instruction::Fail(_)
    ));
}

#[test]
fn restarts_are_bounded() {
    let mut sm = machine(1, 1, 600_000, 2);
    let mut now = 0;
    let mut g = formed(&mut sm, &["a"], now);
    for _ in 0..2 {
        now += 1_000;
        sm.report_failure("a", g, "boom", now).unwrap();
        sm.heartbeat("a", 0, 0, now + 100);
        sm.tick(now + 200);
        g = sm.generation_id();
        assert_ne!(g, 0, "restarts within the bound");
    }
    now += 1_000;
    sm.report_failure("a", g, "boom", now).unwrap();
    sm.heartbeat("a", 0, 0, now + 100);
    sm.tick(now + 200);
    let failure = sm.failure().expect("the third restart fails the job");
    assert!(failure.contains("job.max_restarts"), "{failure}");
}

/// Commits `step` of generation `g` (one worker `a`) and returns the folders to retire.
fn commit(
    sm: &mut StateMachine,
    g: u64,
    step: u64,
    report: Progress,
    now: u64,
) -> (Manifest, Vec<String>) {
    sm.progress("a", g, step, report, now).unwrap();
    sm.checkpoint_begin("a", g, step).unwrap();
    let files = vec![ManifestFile {
        name: "model.safetensors".into(),
        size: 1,
        sha256: "00".into(),
    }];
    let manifest = sm
        .checkpoint_done("a", g, step, files, now)
        .unwrap()
        .expect("one rank: committing");
    let retired = sm.checkpoint_committed(&manifest, now).unwrap();
    (manifest, retired)
}

#[test]
fn quarantined_shards_are_reported_and_committed() {
    let mut sm = machine(1, 1, 600_000, 10);
    let g = formed(&mut sm, &["a"], 0);
    let bad = fourm_coordinator::manifest::Quarantined {
        epoch: 0,
        shard: 3,
        samples: 50,
        reason: "bad tar".into(),
    };
    let report = Progress {
        quarantined: vec![bad.clone()],
        ..Progress::default()
    };
    let (manifest, _) = commit(&mut sm, g, 10, report, 1_000);
    assert_eq!(sm.status().quarantined, vec![bad.clone()]);
    assert_eq!(manifest.quarantined, vec![bad]);
}

#[test]
fn the_retention_window_survives_a_restart() {
    let plan = EpochPlan::new(
        0,
        vec![ShardSize {
            shard: 0,
            samples: 50,
        }],
    )
    .unwrap();
    let config = StateConfig {
        job_id: "t".into(),
        min_workers: 1,
        max_workers: 1,
        join_timeout_ms: 5_000,
        heartbeat_interval_ms: 1_000,
        heartbeat_timeout_ms: 10_000,
        checkpoint_every: 0,
        keep_last: 2,
        total_steps: 100,
        stall_timeout_ms: 120_000,
        max_restarts: 10,
        progress_timeout_ms: 60_000,
    };
    // A restarted coordinator: three committed folders in the log, the newest restored.
    let history: Vec<String> = ["s10", "s20", "s30"].map(String::from).into();
    let start = Start {
        incarnation: 2,
        history,
        ..Start::default()
    };
    let mut sm = StateMachine::new(config, plan, start).unwrap();
    let g = formed(&mut sm, &["a"], 0);
    let (manifest, retired) = commit(&mut sm, g, 40, Progress::default(), 1_000);
    assert_eq!(
        retired,
        ["s10", "s20"].map(String::from),
        "everything beyond the newest two, including what earlier incarnations committed"
    );
    assert!(manifest.folder.starts_with("step-000000040-g"));
}
