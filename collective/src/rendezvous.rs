//! Setting up one generation of the ring: connect to the right neighbour, accept the left one.
//!
//! Each rank owns a listener bound once for the life of the worker and reused by every
//! generation. A connecting rank announces `(generation, rank, world size)` in a hello
//! authenticated by the ring's key; the acceptor refuses any connection that is not its left
//! neighbour of the same generation, so neither a stale peer of an older generation nor anything
//! else that finds the port (without the job's key) can join. Greetings are read concurrently, so
//! connections that say nothing cannot use up the rendezvous window. Both directions retry until
//! the connect timeout while the peer is not up yet, and both stop when the abort handle fires.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::wire::{Hello, Reply};
use crate::{AbortHandle, CollectiveError, Operation, Peer, RejectReason};

/// How long an accepted connection may take to say hello before it is dropped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections being greeted at once; more are closed at once.
const MAX_GREETING: usize = 64;
/// How often blocked rendezvous steps look at the abort handle.
const POLL: Duration = Duration::from_millis(20);
/// Pause between connection attempts: starts small, doubles up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(200);

/// Where one rank stands in one generation of the ring, as handed out by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// The generation; connections from any other generation are refused.
    pub generation: u64,
    /// This rank.
    pub rank: usize,
    /// The listener addresses of all ranks, in rank order (`peers.len()` is the world size).
    pub peers: Vec<SocketAddr>,
    /// The ring's key: hellos carry an HMAC under it (fourm derives it from the job token).
    pub key: Vec<u8>,
}

impl Rendezvous {
    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.peers.len()
    }

    /// Checks that the rank belongs to the group.
    pub fn validate(&self) -> Result<(), CollectiveError> {
        if self.rank >= self.peers.len() {
            return Err(CollectiveError::InvalidGroup {
                rank: self.rank,
                world_size: self.peers.len(),
            });
        }
        Ok(())
    }

    pub(crate) fn left(&self) -> Peer {
        let n = self.world_size();
        let rank = (self.rank + n - 1) % n;
        Peer {
            rank,
            addr: Some(self.peers[rank]),
        }
    }

    pub(crate) fn right(&self) -> Peer {
        let rank = (self.rank + 1) % self.world_size();
        Peer {
            rank,
            addr: Some(self.peers[rank]),
        }
    }
}

/// The two connections of a rank: it receives from its left neighbour and sends to its right.
#[derive(Debug)]
pub(crate) struct Links {
    pub left: TcpStream,
    pub right: TcpStream,
}

/// Connects the rank to its neighbours (`world_size >= 2`), within `timeout`.
pub(crate) fn connect(
    listener: &TcpListener,
    rv: &Rendezvous,
    timeout: Duration,
    abort: &AbortHandle,
) -> Result<Links, CollectiveError> {
    let deadline = Instant::now() + timeout;
    let failed = AtomicBool::new(false);
    let (left, right) = std::thread::scope(|s| {
        let right = s.spawn(|| {
            let r = connect_right(rv, deadline, abort, &failed);
            if r.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            r
        });
        let left = accept_left(listener, rv, deadline, abort, &failed);
        if left.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        let right = right
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (left, right)
    });
    let aborted = || CollectiveError::Aborted {
        rank: rv.rank,
        operation: Operation::Rendezvous,
    };
    if abort.is_aborted() {
        return Err(aborted());
    }
    // One side stopping because the other failed reports `None`: return the real failure (the
    // connecting side's when both failed, as it knows why it could not reach its peer).
    match (left, right) {
        (Ok(left), Ok(right)) => Ok(Links { left, right }),
        (_, Err(Some(e))) | (Err(Some(e)), _) => Err(e),
        _ => Err(aborted()),
    }
}

/// Connects to the right neighbour's listener and introduces this rank. `Err(None)`: stopped
/// because the other half of the rendezvous failed or the handle was aborted.
fn connect_right(
    rv: &Rendezvous,
    deadline: Instant,
    abort: &AbortHandle,
    failed: &AtomicBool,
) -> Result<TcpStream, Option<CollectiveError>> {
    let peer = rv.right();
    let addr = peer
        .addr
        .unwrap_or_else(|| unreachable!("ring peers have addresses"));
    let hello = Hello {
        generation: rv.generation,
        rank: rv.rank as u64,
        world_size: rv.world_size() as u64,
    };
    let key = rv.key.as_slice();
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut last_error = None;
    let mut backoff = RETRY_MIN;
    loop {
        if abort.is_aborted() || failed.load(Ordering::SeqCst) {
            return Err(None);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Some(CollectiveError::RendezvousTimeout {
                rank: rv.rank,
                peer,
                waited: started.elapsed(),
                attempts,
                last_error,
            }));
        }
        attempts += 1;
        match introduce(
            addr,
            &hello.encode(key, rand::random()),
            deadline,
            abort,
            failed,
        ) {
            Ok((stream, Reply::Accept)) => {
                tracing::debug!(rank = rv.rank, peer = %peer, attempts, "connected to right neighbour");
                return Ok(stream);
            }
            Ok((_, Reply::Reject(RejectReason::Generation { theirs })))
                if theirs > rv.generation =>
            {
                return Err(Some(CollectiveError::StaleGeneration {
                    rank: rv.rank,
                    generation: rv.generation,
                    peer,
                    peer_generation: theirs,
                }));
            }
            Ok((_, Reply::Reject(RejectReason::Generation { theirs }))) => {
                // The peer has not reached this generation yet: try again.
                tracing::debug!(rank = rv.rank, peer = %peer, theirs, "peer still in an older generation");
                last_error = None;
            }
            Ok((_, Reply::Reject(reason))) => {
                return Err(Some(CollectiveError::Rejected {
                    rank: rv.rank,
                    peer,
                    reason,
                }));
            }
            Err(Introduce::Stopped) => return Err(None),
            Err(Introduce::NotAReply) => {
                return Err(Some(CollectiveError::Protocol {
                    rank: rv.rank,
                    peer,
                    what: "the reply to the hello is not a ring reply",
                }));
            }
            // Refused (listener not up yet), reset, or closed before replying: retry.
            Err(Introduce::Io(e)) => last_error = Some(e),
        }
        pause(backoff, deadline, abort, failed);
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

enum Introduce {
    Stopped,
    NotAReply,
    Io(io::Error),
}

/// One connection attempt: connect, send the hello, read the reply.
fn introduce(
    addr: SocketAddr,
    hello: &[u8; Hello::LEN],
    deadline: Instant,
    abort: &AbortHandle,
    failed: &AtomicBool,
) -> Result<(TcpStream, Reply), Introduce> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let stream = TcpStream::connect_timeout(&addr, remaining.clamp(POLL, Duration::from_secs(1)))
        .map_err(Introduce::Io)?;
    stream.set_nodelay(true).map_err(Introduce::Io)?;
    stream
        .set_write_timeout(Some(remaining.max(POLL)))
        .map_err(Introduce::Io)?;
    (&stream).write_all(hello).map_err(Introduce::Io)?;
    let mut reply = [0u8; Reply::LEN];
    match read_polling(&stream, &mut reply, deadline, abort, failed) {
        Ok(true) => {}
        Ok(false) => return Err(Introduce::Stopped),
        Err(e) => return Err(Introduce::Io(e)),
    }
    let reply = Reply::decode(&reply).ok_or(Introduce::NotAReply)?;
    Ok((stream, reply))
}

/// Accepts connections until the left neighbour of this generation introduces itself; refuses
/// and drops every other one. Each connection is greeted on a thread of its own, so that a slow
/// or silent one does not hold up the others. `Err(None)`: stopped (see [`connect_right`]).
fn accept_left(
    listener: &TcpListener,
    rv: &Rendezvous,
    deadline: Instant,
    abort: &AbortHandle,
    failed: &AtomicBool,
) -> Result<TcpStream, Option<CollectiveError>> {
    let peer = rv.left();
    let io_error = |source| {
        Some(CollectiveError::Io {
            rank: rv.rank,
            operation: Operation::Rendezvous,
            peer,
            source,
        })
    };
    listener.set_nonblocking(true).map_err(io_error)?;
    let started = Instant::now();
    let seen: Mutex<HashSet<[u8; 16]>> = Mutex::new(HashSet::new());
    let greeting = AtomicUsize::new(0);
    let found = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<TcpStream>();
    let result = std::thread::scope(|s| {
        let stop = || abort.is_aborted() || failed.load(Ordering::SeqCst);
        let result = loop {
            if let Ok(stream) = rx.try_recv() {
                break Ok(stream);
            }
            if stop() {
                break Err(None);
            }
            if Instant::now() >= deadline {
                break Err(Some(CollectiveError::RendezvousTimeout {
                    rank: rv.rank,
                    peer,
                    waited: started.elapsed(),
                    attempts: 0,
                    last_error: None,
                }));
            }
            let (stream, from) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pause(Duration::from_millis(1), deadline, abort, failed);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(rank = rv.rank, error = %e, "accept failed");
                    pause(POLL, deadline, abort, failed);
                    continue;
                }
            };
            if greeting.load(Ordering::SeqCst) >= MAX_GREETING {
                tracing::warn!(rank = rv.rank, %from, "too many connections greeting at once; closed one");
                continue;
            }
            greeting.fetch_add(1, Ordering::SeqCst);
            let (tx, seen, greeting, found, done) = (tx.clone(), &seen, &greeting, &found, &done);
            s.spawn(move || {
                let outcome = greet(stream, rv, deadline, seen, found, abort, done);
                greeting.fetch_sub(1, Ordering::SeqCst);
                match outcome {
                    Ok(Some(stream)) => {
                        let _ = tx.send(stream);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(rank = rv.rank, %from, error = %e, "dropped a connection")
                    }
                }
            });
        };
        // Greeters still reading a hello stop at once; the scope waits for them.
        done.store(true, Ordering::SeqCst);
        result
    });
    listener.set_nonblocking(false).map_err(io_error)?;
    result
}

/// Reads an accepted connection's hello and answers it: `Some(stream)` for the expected left
/// neighbour of this generation (authenticated, its nonce never seen before), `None` (after a
/// refusal, or when `done`) for anyone else.
fn greet(
    stream: TcpStream,
    rv: &Rendezvous,
    deadline: Instant,
    seen: &Mutex<HashSet<[u8; 16]>>,
    found: &AtomicBool,
    abort: &AbortHandle,
    done: &AtomicBool,
) -> io::Result<Option<TcpStream>> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let mut hello = [0u8; Hello::LEN];
    let hello_deadline = deadline.min(Instant::now() + HELLO_TIMEOUT);
    if !read_polling(&stream, &mut hello, hello_deadline, abort, done)? {
        return Ok(None);
    }
    let expected = rv.left().rank;
    let reply = match Hello::decode(&hello, &rv.key) {
        Err(None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a ring hello",
            ));
        }
        Err(Some(reason)) => Reply::Reject(reason),
        Ok((_, nonce)) if !seen.lock().unwrap_or_else(|e| e.into_inner()).insert(nonce) => {
            Reply::Reject(RejectReason::Unauthenticated)
        }
        Ok((h, _)) if h.generation != rv.generation => Reply::Reject(RejectReason::Generation {
            theirs: rv.generation,
        }),
        Ok((h, _)) if h.rank != expected as u64 || h.world_size != rv.world_size() as u64 => {
            Reply::Reject(RejectReason::Rank { expected })
        }
        // One left neighbour only: a second valid hello is a replay.
        Ok(_) if found.swap(true, Ordering::SeqCst) => Reply::Reject(RejectReason::Unauthenticated),
        Ok(_) => Reply::Accept,
    };
    stream.set_write_timeout(Some(HELLO_TIMEOUT))?;
    (&stream).write_all(&reply.encode())?;
    match reply {
        Reply::Accept => {
            tracing::debug!(rank = rv.rank, peer = expected, "accepted left neighbour");
            Ok(Some(stream))
        }
        Reply::Reject(reason) => {
            tracing::warn!(rank = rv.rank, generation = rv.generation, %reason, "refused a ring connection");
            Ok(None)
        }
    }
}

/// Fills `buf` from `stream` by the deadline, looking at the abort handle and the failure flag
/// in between; `Ok(false)` when stopped by either.
fn read_polling(
    mut stream: &TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    abort: &AbortHandle,
    failed: &AtomicBool,
) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        if abort.is_aborted() || failed.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(remaining.min(POLL)))?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Sleeps for `pause`, or less if the deadline comes first, waking early on abort or failure.
fn pause(pause: Duration, deadline: Instant, abort: &AbortHandle, failed: &AtomicBool) {
    let until = deadline.min(Instant::now() + pause);
    while !abort.is_aborted() && !failed.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(POLL));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hello played twice in one rendezvous (the same bytes on two connections) makes one
    /// neighbour only: exactly one connection is accepted.
    #[test]
    fn a_replayed_hello_makes_no_second_neighbour() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a0 = listener.local_addr().unwrap();
        let rv = Rendezvous {
            generation: 5,
            rank: 0,
            peers: vec![a0, "127.0.0.1:9".parse().unwrap()],
            key: b"k".to_vec(),
        };
        let hello = Hello {
            generation: 5,
            rank: 1,
            world_size: 2,
        }
        .encode(b"k", [7; 16]);
        let mut copies: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(a0).unwrap()).collect();
        for c in &mut copies {
            c.write_all(&hello).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let (abort, failed) = (AbortHandle::new(), AtomicBool::new(false));
        assert!(accept_left(&listener, &rv, deadline, &abort, &failed).is_ok());
        let accepted = copies
            .iter_mut()
            .filter_map(|c| {
                let mut reply = [0u8; Reply::LEN];
                c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                c.read_exact(&mut reply).ok()?;
                Reply::decode(&reply).filter(|r| *r == Reply::Accept)
            })
            .count();
        assert_eq!(accepted, 1, "one neighbour per rendezvous");
    }
}
