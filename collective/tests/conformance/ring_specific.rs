//! Checks of the TCP ring alone: its rendezvous (generations, refusals, retries, timeouts, abort)
//! and the independence of its results from the piece size.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use fourm_collective::{
    AbortHandle, Collective, CollectiveError, RejectReason, Rendezvous, RingCollective, RingConfig,
};
use libtest_mimic::Failed;

use crate::implementations::ring_group;
use crate::{HANG, TEST_KEY, ensure, noisy, on_ranks};

type RingCheck = fn() -> Result<(), Failed>;

pub const ALL: &[(&str, RingCheck)] = &[
    ("stale_generation_is_refused", stale_generation_is_refused),
    ("unexpected_rank_is_refused", unexpected_rank_is_refused),
    (
        "foreign_connections_are_dropped",
        foreign_connections_are_dropped,
    ),
    (
        "a_hello_under_another_key_is_refused",
        a_hello_under_another_key_is_refused,
    ),
    (
        "idle_connections_do_not_block_the_rendezvous",
        idle_connections_do_not_block_the_rendezvous,
    ),
    ("waits_for_a_late_listener", waits_for_a_late_listener),
    (
        "newer_generation_waits_for_its_peer",
        newer_generation_waits_for_its_peer,
    ),
    ("rendezvous_times_out", rendezvous_times_out),
    ("abort_stops_the_rendezvous", abort_stops_the_rendezvous),
    (
        "listeners_serve_successive_generations",
        listeners_serve_successive_generations,
    ),
    (
        "results_do_not_depend_on_piece_size",
        results_do_not_depend_on_piece_size,
    ),
    (
        "sharded_results_do_not_depend_on_piece_size",
        sharded_results_do_not_depend_on_piece_size,
    ),
];

fn config(connect_timeout: Duration) -> RingConfig {
    RingConfig {
        connect_timeout,
        op_timeout: Duration::from_secs(30),
        chunk_bytes: 4096,
    }
}

fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn join(
    listener: &TcpListener,
    generation: u64,
    rank: usize,
    peers: &[SocketAddr],
    connect_timeout: Duration,
) -> Result<RingCollective, CollectiveError> {
    let rendezvous = Rendezvous {
        generation,
        rank,
        peers: peers.to_vec(),
        key: TEST_KEY.to_vec(),
    };
    RingCollective::connect(
        listener,
        &rendezvous,
        &config(connect_timeout),
        AbortHandle::new(),
    )
}

/// Both ranks of a two-rank ring sum `[rank + 1]`.
fn check_sum(mut a: RingCollective, mut b: RingCollective) -> Result<(), Failed> {
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| {
            let mut x = [a.rank() as f32 + 1.0];
            a.all_reduce_sum(&mut x).map(|()| x[0])
        });
        let mut y = [b.rank() as f32 + 1.0];
        let rb = b.all_reduce_sum(&mut y).map(|()| y[0]);
        (ta.join().unwrap(), rb)
    });
    ensure!(ra? == 3.0 && rb? == 3.0, "the ring does not sum");
    Ok(())
}

/// A rank of an older generation that reaches a listener of the current one is refused and told
/// it is stale; the rightful peer then joins.
fn stale_generation_is_refused() -> Result<(), Failed> {
    let (l0, a0) = bind();
    let (l1, a1) = bind();
    let (l_old, a_old) = bind();
    std::thread::scope(|s| {
        let rank0 = s.spawn(|| join(&l0, 7, 0, &[a0, a1], HANG));
        // Rank 1 of generation 6, whose ring put rank 0 at the same address.
        let stale = join(&l_old, 6, 1, &[a0, a_old], HANG);
        ensure!(
            matches!(
                stale,
                Err(CollectiveError::StaleGeneration {
                    generation: 6,
                    peer_generation: 7,
                    ..
                })
            ),
            "the stale rank got {stale:?}"
        );
        let rank1 = join(&l1, 7, 1, &[a0, a1], HANG)?;
        check_sum(rank0.join().unwrap()?, rank1)
    })
}

/// A connection that claims another rank or world size than the acceptor's left neighbour is
/// refused.
fn unexpected_rank_is_refused() -> Result<(), Failed> {
    let (l0, a0) = bind();
    let (l1, a1) = bind();
    let (l_other, a_other) = bind();
    std::thread::scope(|s| {
        let rank0 = s.spawn(|| join(&l0, 5, 0, &[a0, a1], HANG));
        // Rank 0 of a world of 3, whose right neighbour (rank 1) is rank 0's listener.
        let wrong = join(
            &l_other,
            5,
            0,
            &[a_other, a0, a_other],
            Duration::from_secs(5),
        );
        ensure!(
            matches!(
                wrong,
                Err(CollectiveError::Rejected {
                    reason: RejectReason::Rank { expected: 1 },
                    ..
                })
            ),
            "the impostor got {wrong:?}"
        );
        let rank1 = join(&l1, 5, 1, &[a0, a1], HANG)?;
        check_sum(rank0.join().unwrap()?, rank1)
    })
}

/// Connections that do not speak the protocol (junk, or closed at once) do not disturb the
/// rendezvous.
fn foreign_connections_are_dropped() -> Result<(), Failed> {
    let (l0, a0) = bind();
    let (l1, a1) = bind();
    std::thread::scope(|s| {
        let rank0 = s.spawn(|| join(&l0, 1, 0, &[a0, a1], HANG));
        let mut junk = TcpStream::connect(a0)?;
        junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nxxxxxxxxxx")?;
        drop(TcpStream::connect(a0)?);
        std::thread::sleep(Duration::from_millis(100));
        let rank1 = join(&l1, 1, 1, &[a0, a1], HANG)?;
        check_sum(rank0.join().unwrap()?, rank1)
    })
}

/// A process without the job's key cannot become a rank: its hello is refused as
/// unauthenticated, and the rightful rank then joins.
fn a_hello_under_another_key_is_refused() -> Result<(), Failed> {
    let (l0, a0) = bind();
    let (l1, a1) = bind();
    let (l_forger, a_forger) = bind();
    std::thread::scope(|s| {
        let rank0 = s.spawn(|| join(&l0, 3, 0, &[a0, a1], HANG));
        let forged = Rendezvous {
            generation: 3,
            rank: 1,
            peers: vec![a0, a_forger],
            key: b"guessed key".to_vec(),
        };
        let got = RingCollective::connect(
            &l_forger,
            &forged,
            &config(Duration::from_secs(5)),
            AbortHandle::new(),
        );
        ensure!(
            matches!(
                got,
                Err(CollectiveError::Rejected {
                    reason: RejectReason::Unauthenticated,
                    ..
                })
            ),
            "the forger got {got:?}"
        );
        let rank1 = join(&l1, 3, 1, &[a0, a1], HANG)?;
        check_sum(rank0.join().unwrap()?, rank1)
    })
}

/// Connections that never say anything are greeted concurrently: many of them cannot use up
/// the rendezvous window (greeted one after the other, each would hold it for seconds).
fn idle_connections_do_not_block_the_rendezvous() -> Result<(), Failed> {
    let (l0, a0) = bind();
    let (l1, a1) = bind();
    let window = Duration::from_secs(4);
    std::thread::scope(|s| {
        let rank0 = s.spawn(|| join(&l0, 9, 0, &[a0, a1], window));
        let idle: Vec<TcpStream> = (0..8)
            .map(|_| TcpStream::connect(a0))
            .collect::<Result<_, _>>()?;
        std::thread::sleep(Duration::from_millis(100));
        let rank1 = join(&l1, 9, 1, &[a0, a1], window)?;
        let rank0 = rank0.join().unwrap()?;
        drop(idle);
        check_sum(rank0, rank1)
    })
}

/// A rank whose right neighbour's listener is not bound yet keeps retrying.
fn waits_for_a_late_listener() -> Result<(), Failed> {
    let (l0, a0) = bind();
    // Find a free port, release it, and bind it again later.
    let a1 = bind().1;
    std::thread::scope(|s| {
        let rank0 = s.spawn(|| join(&l0, 2, 0, &[a0, a1], HANG));
        std::thread::sleep(Duration::from_millis(300));
        let l1 = match TcpListener::bind(a1) {
            Ok(l1) => l1,
            Err(e) => return Err(format!("port {a1} was taken meanwhile ({e}); rerun").into()),
        };
        let rank1 = join(&l1, 2, 1, &[a0, a1], HANG)?;
        check_sum(rank0.join().unwrap()?, rank1)
    })
}

/// A rank of a newer generation treats a peer still in the older one as not up yet: it keeps
/// retrying, and connects once the peer moves to the new generation.
fn newer_generation_waits_for_its_peer() -> Result<(), Failed> {
    let (l0, a0) = bind();
    let (l1, a1) = bind();
    let (_unserved, a_unserved) = bind();
    std::thread::scope(|s| {
        let new = s.spawn(|| join(&l0, 4, 0, &[a0, a1], HANG));
        // Rank 1 is still in generation 3: it refuses generation 4's hellos until it gives up.
        let old = join(&l1, 3, 1, &[a_unserved, a1], Duration::from_millis(500));
        ensure!(
            matches!(old, Err(CollectiveError::RendezvousTimeout { .. })),
            "the older rank got {old:?}"
        );
        let rank1 = join(&l1, 4, 1, &[a0, a1], HANG)?;
        check_sum(new.join().unwrap()?, rank1)
    })
}

fn rendezvous_times_out() -> Result<(), Failed> {
    let (l0, a0) = bind();
    // A listener that nobody serves: connections queue but get no reply.
    let (_l1, a1) = bind();
    let started = Instant::now();
    let result = join(&l0, 1, 0, &[a0, a1], Duration::from_millis(300));
    let elapsed = started.elapsed();
    ensure!(
        matches!(result, Err(CollectiveError::RendezvousTimeout { .. })),
        "expected a rendezvous timeout, got {result:?}"
    );
    ensure!(
        elapsed < HANG,
        "the rendezvous took {elapsed:?} to time out"
    );
    Ok(())
}

fn abort_stops_the_rendezvous() -> Result<(), Failed> {
    let (l0, a0) = bind();
    let (_l1, a1) = bind();
    let abort = AbortHandle::new();
    let rendezvous = Rendezvous {
        generation: 1,
        rank: 0,
        peers: vec![a0, a1],
        key: TEST_KEY.to_vec(),
    };
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        let handle = abort.clone();
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            handle.abort();
        });
        RingCollective::connect(&l0, &rendezvous, &config(Duration::from_secs(300)), abort)
    });
    ensure!(
        matches!(result, Err(CollectiveError::Aborted { .. })),
        "expected Aborted, got {result:?}"
    );
    ensure!(
        started.elapsed() < HANG,
        "abort took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// The listeners bound at worker start serve one generation after another.
fn listeners_serve_successive_generations() -> Result<(), Failed> {
    let (l0, a0) = bind();
    let (l1, a1) = bind();
    for generation in 10..13 {
        let (rank0, rank1) = std::thread::scope(|s| {
            let rank0 = s.spawn(|| join(&l0, generation, 0, &[a0, a1], HANG));
            let rank1 = join(&l1, generation, 1, &[a0, a1], HANG);
            (rank0.join().unwrap(), rank1)
        });
        check_sum(rank0?, rank1?)?;
    }
    Ok(())
}

/// The order of additions depends on the world size and the length only, not on the pieces.
fn results_do_not_depend_on_piece_size() -> Result<(), Failed> {
    const LEN: usize = 100_003;
    let mut reference: Option<Vec<u32>> = None;
    for chunk_bytes in [4, 4096, 64 * 1024 + 12, 1 << 20] {
        let config = RingConfig {
            chunk_bytes,
            ..config(HANG)
        };
        let mut group: Vec<Box<dyn Collective>> = ring_group(3, &config)
            .into_iter()
            .map(|c| Box::new(c) as Box<dyn Collective>)
            .collect();
        let results = on_ranks(&mut group, |c| {
            let mut buf: Vec<f32> = (0..LEN).map(|i| noisy(c.rank(), i)).collect();
            c.all_reduce_sum(&mut buf)
                .map(|()| buf.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        });
        for (rank, result) in results.into_iter().enumerate() {
            let got = result?;
            let reference = reference.get_or_insert_with(|| got.clone());
            ensure!(
                got == *reference,
                "{chunk_bytes}-byte pieces: rank {rank} differs"
            );
        }
    }
    Ok(())
}

/// Reduce-scatter then all-gather gives the same bits whatever the pieces, down to one element
/// per piece (many pieces per shard), and with shards that are empty.
fn sharded_results_do_not_depend_on_piece_size() -> Result<(), Failed> {
    for len in [2, 4, 100_003] {
        let mut reference: Option<Vec<u32>> = None;
        for chunk_bytes in [4, 4096, 64 * 1024 + 12, 1 << 20] {
            let config = RingConfig {
                chunk_bytes,
                ..config(HANG)
            };
            let mut group: Vec<Box<dyn Collective>> = ring_group(3, &config)
                .into_iter()
                .map(|c| Box::new(c) as Box<dyn Collective>)
                .collect();
            let results = on_ranks(&mut group, |c| {
                let mut buf: Vec<f32> = (0..len).map(|i| noisy(c.rank(), i)).collect();
                c.reduce_scatter_sum(&mut buf)?;
                c.all_gather(&mut buf)
                    .map(|()| buf.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            });
            for (rank, result) in results.into_iter().enumerate() {
                let got = result?;
                let reference = reference.get_or_insert_with(|| got.clone());
                ensure!(
                    got == *reference,
                    "len {len}, {chunk_bytes}-byte pieces: rank {rank} differs"
                );
            }
        }
    }
    Ok(())
}
