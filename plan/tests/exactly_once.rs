//! Exactly-once: over random shard sizes, world sizes, commit points and crashes (each crash
//! rolls back to the last committed cursor and may change the world size), every sample of every
//! completed epoch is used in exactly one committed step, each entry's committed samples are a
//! prefix of its planned order, and the streams are deterministic.

use std::collections::BTreeMap;

use fourm_plan::{Assignment, Cursor, EpochPlan, RankStream, SampleRef, ShardSize};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Phase {
    world: u32,
    /// One flag per step: commit after it.
    commits: Vec<bool>,
}

fn plan(seed: u64, sizes: &[u64]) -> EpochPlan {
    let shards = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| ShardSize {
            shard: i as u32 * 3 + 1,
            samples: n,
        })
        .collect();
    EpochPlan::new(seed, shards).unwrap()
}

/// Runs the phases; returns the committed samples and the final committed cursor.
fn simulate(
    plan: &EpochPlan,
    phases: &[Phase],
    batch: usize,
    mix: usize,
) -> (Vec<SampleRef>, Cursor) {
    let mut committed = Cursor::new();
    let mut assignment = Assignment::new(phases[0].world).unwrap();
    let mut used = Vec::new();
    for phase in phases {
        assignment = assignment.replan(plan, &committed, phase.world).unwrap();
        let mut streams: Vec<RankStream> = (0..phase.world)
            .map(|r| RankStream::new(plan, &assignment, r, mix, &committed))
            .collect();
        let mut working = committed.clone();
        let mut pending = Vec::new();
        for &commit in &phase.commits {
            for stream in &mut streams {
                pending.extend(stream.take_samples(batch));
                for (k, p) in stream.take_progress() {
                    working.record(plan, k, p).unwrap();
                }
            }
            if commit {
                committed = working.clone();
                used.append(&mut pending);
            }
        }
        // Crash: whatever was not committed is lost and will be read again.
    }
    (used, committed)
}

fn phase_strategy() -> impl Strategy<Value = Phase> {
    (
        1u32..5,
        prop::collection::vec(prop::bool::weighted(0.4), 0..25),
    )
        .prop_map(|(world, commits)| Phase { world, commits })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_sample_exactly_once(
        seed in any::<u64>(),
        sizes in prop::collection::vec(0u64..20, 1..10),
        phases in prop::collection::vec(phase_strategy(), 1..6),
        batch in 1usize..5,
        mix in 1usize..4,
    ) {
        prop_assume!(sizes.iter().any(|&n| n > 0));
        let plan = plan(seed, &sizes);
        let (used, cursor) = simulate(&plan, &phases, batch, mix);

        // No sample twice.
        let mut seen = BTreeMap::new();
        for s in &used {
            let key = (s.epoch, s.shard, s.sample);
            prop_assert!(seen.insert(key, s.position).is_none(), "sample {key:?} used twice");
        }
        // Per entry, the committed samples are exactly the cursor's prefix of the planned order.
        let mut per_entry: BTreeMap<u64, Vec<&SampleRef>> = BTreeMap::new();
        for s in &used {
            per_entry.entry(s.entry).or_default().push(s);
        }
        for k in 0..cursor.frontier() {
            let e = plan.entry(k);
            let got = per_entry.remove(&k).unwrap_or_default();
            let prefix = cursor.consumed(&plan, k);
            prop_assert_eq!(got.len() as u64, prefix, "entry {} consumed", k);
            let order = plan.sample_order(e.epoch, e.shard, e.samples);
            let mut positions: Vec<u64> = got.iter().map(|s| s.position).collect();
            positions.sort_unstable();
            prop_assert_eq!(positions, (0..prefix).collect::<Vec<_>>());
            for s in got {
                prop_assert_eq!(order[s.position as usize], s.sample);
            }
        }
        prop_assert!(per_entry.is_empty(), "samples outside the cursor: {:?}", per_entry.keys());
        // Completed epochs are complete.
        let per = plan.shards_per_epoch();
        for epoch in 0..cursor.done_below() / per {
            prop_assert_eq!(cursor.consumed_in_epoch(&plan, epoch), plan.samples_per_epoch());
            let n = used.iter().filter(|s| s.epoch == epoch).count() as u64;
            prop_assert_eq!(n, plan.samples_per_epoch());
        }
    }

    #[test]
    fn resuming_with_the_same_world_size_continues_the_same_stream(
        seed in any::<u64>(),
        sizes in prop::collection::vec(0u64..15, 1..8),
        world in 1u32..4,
        steps_before in 0usize..20,
        steps_after in 1usize..20,
        batch in 1usize..4,
        mix in 1usize..4,
    ) {
        prop_assume!(sizes.iter().any(|&n| n > 0));
        let plan = plan(seed, &sizes);
        let assignment = Assignment::new(world).unwrap();
        let fresh = |cursor: &Cursor| -> Vec<RankStream> {
            (0..world).map(|r| RankStream::new(&plan, &assignment, r, mix, cursor)).collect()
        };
        let mut uninterrupted = fresh(&Cursor::new());
        let mut cursor = Cursor::new();
        for _ in 0..steps_before {
            for s in &mut uninterrupted {
                s.take_samples(batch);
                for (k, p) in s.take_progress() {
                    cursor.record(&plan, k, p).unwrap();
                }
            }
        }
        // A cursor survives JSON and rebuilds streams that continue identically.
        let cursor = Cursor::from_json(&plan, &cursor.to_json(&plan)).unwrap();
        let mut resumed = fresh(&cursor);
        for _ in 0..steps_after {
            for (a, b) in uninterrupted.iter_mut().zip(&mut resumed) {
                prop_assert_eq!(a.take_samples(batch), b.take_samples(batch));
            }
        }
    }
}

#[test]
fn cursor_json_is_checked_against_the_plan() {
    let p = plan(7, &[3, 4, 5]);
    let mut c = Cursor::new();
    c.record(&p, 1, 2).unwrap();
    let json = c.to_json(&p);
    assert_eq!(Cursor::from_json(&p, &json).unwrap(), c);
    assert!(Cursor::from_json(&plan(8, &[3, 4, 5]), &json).is_err());
    assert!(Cursor::from_json(&plan(7, &[3, 4, 6, 1]), &json).is_err());
    assert!(c.record(&p, 1, 1).is_err(), "prefixes never shrink");
    let e = p.entry(1);
    assert!(
        c.record(&p, 1, e.samples + 1).is_err(),
        "nor pass the end of the shard"
    );
}
