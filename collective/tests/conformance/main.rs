//! The collective conformance suite: the same checks on every implementation available.
//!
//! The in-process group and the TCP ring always run. NCCL runs only when the crate is built with
//! the `cuda` feature on a machine with CUDA GPUs (multi-rank checks need one GPU per rank);
//! otherwise its trials are reported as ignored, with the reason, never as passed.
//!
//! `cargo test -p fourm-collective --test conformance -- ring::` runs one implementation's checks.

mod checks;
mod implementations;
mod ring_specific;
mod sharded;

use std::time::Duration;

use fourm_collective::Collective;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use implementations::Implementation;

/// The ring key of the tests' groups.
pub(crate) const TEST_KEY: &[u8] = b"conformance ring key";

/// Fails the check with a message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(libtest_mimic::Failed::from(format!($($msg)+)));
        }
    };
}

/// A check of the suite: runs on one implementation, for the world sizes it can host.
pub struct Check {
    pub name: &'static str,
    /// The smallest world the check needs.
    pub min_world: usize,
    pub run: fn(&'static dyn Implementation, usize) -> Result<(), Failed>,
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for implementation in implementations::all() {
        let available = implementation.available();
        if let Err(reason) = &available {
            eprintln!("{}: not run: {reason}", implementation.name());
        }
        for check in checks::ALL.iter().chain(sharded::ALL) {
            let available = available.clone();
            let name = format!("{}::{}", implementation.name(), check.name);
            trials.push(Trial::ignorable_test(name, move || {
                let max_world = match available {
                    Ok(max_world) => max_world,
                    Err(reason) => return Ok(Completion::ignored_with(reason)),
                };
                if let Some(reason) = implementation.skips(check.name) {
                    return Ok(Completion::ignored_with(reason));
                }
                if max_world < check.min_world {
                    return Ok(Completion::ignored_with(format!(
                        "needs {} ranks, this machine hosts {max_world}",
                        check.min_world
                    )));
                }
                (check.run)(implementation, max_world).map(|()| Completion::Completed)
            }));
        }
    }
    for (name, run) in ring_specific::ALL {
        trials.push(Trial::test(format!("ring::{name}"), *run));
    }
    libtest_mimic::run(&args, trials).exit();
}

/// Runs `f` on every rank of `group`, each on its own thread, and returns the results in rank
/// order. The collectives are dropped by the caller, after every rank has finished.
pub fn on_ranks<T: Send>(
    group: &mut [Box<dyn Collective>],
    f: impl Fn(&mut dyn Collective) -> T + Sync,
) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = group
            .iter_mut()
            .map(|c| {
                let f = &f;
                s.spawn(move || f(&mut **c))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Small integers, exact in `f32` and in sums of a few ranks: rank- and index-dependent.
pub fn integer(rank: usize, i: usize) -> f32 {
    (((i * 7 + rank * 13) % 1024) as i32 - 300) as f32
}

/// Non-integer values with all mantissa bits in use, so that the order of additions shows.
pub fn noisy(rank: usize, i: usize) -> f32 {
    let mut x = (rank as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1e3
}

/// The generous bound after which an operation that should fail fast counts as hung.
pub const HANG: Duration = Duration::from_secs(30);
