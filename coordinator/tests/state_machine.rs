//! Property tests of the coordinator's state machine over random event sequences: joins,
//! heartbeats, deaths, restarts, leaves, training progress and checkpoint acknowledgements, played
//! by simulated workers that really read their data streams. Checked after every event: at most one
//! live generation whose ranks are a permutation of 0..world; every new generation restores the
//! latest committed checkpoint; every committed cursor holds exactly the samples of committed steps
//! (nothing lost, nothing twice).

use std::collections::BTreeSet;

use fourm_coordinator::manifest::ManifestFile;
use fourm_coordinator::state::{Instruction, Phase, StateConfig, StateMachine, WorkerInfo};
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
                    let entries = stream.take_progress();
                    self.sm.progress(&w.id, g, w.step, &entries, None).unwrap();
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
                if step <= self.committed_step {
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
        };
        let sm = StateMachine::new(config, plan.clone(), 1, None).unwrap();
        let mut sim = Sim { sm, plan, now: 0, workers: Vec::new(), committed: Vec::new(), uncommitted: Vec::new(), committed_step: 0, batch: 2 };
        for e in events {
            // Stale generations: a worker that missed the end of its generation is refused.
            sim.apply(e)?;
            let running = sim.sm.generation_id();
            for w in sim.workers.iter().filter(|w| w.alive && w.generation != 0 && w.generation != running) {
                let refused = sim.sm.progress(&w.id, w.generation, w.step + 1, &[], None);
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
    };
    let mut sm = StateMachine::new(config, plan, 7, None).unwrap();
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
    assert_eq!(g >> 32, 7, "generation ids carry the incarnation");
    assert_eq!(sm.heartbeat("a", 0, 0, 13_002), Instruction::Join(g));
    let err = sm
        .progress("a", g - 1, 1, &[], None)
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
