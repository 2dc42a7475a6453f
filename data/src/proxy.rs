//! A TCP proxy for tests that can take a service down and bring it back: while down it closes
//! every connection it holds and refuses new ones (at once, as a dead host's kernel would), so
//! clients see real connection failures and retry. Used to make an object store (moto) fail for a
//! while under a running job.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A running proxy; it stops when dropped.
#[derive(Debug)]
pub struct FlakyProxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    outages: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl FlakyProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let down = Arc::new(AtomicBool::new(false));
        let outages = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, o, s) = (down.clone(), outages.clone(), stop.clone());
        std::thread::Builder::new()
            .name("flaky-proxy".into())
            .spawn(move || accept_loop(listener, target, d, o, s))?;
        Ok(Self {
            addr,
            down,
            outages,
            stop,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Takes the service down (every connection closed, new ones refused) or brings it back.
    pub fn set_down(&self, down: bool) {
        if down && !self.down.swap(true, Ordering::SeqCst) {
            self.outages.fetch_add(1, Ordering::SeqCst);
        }
        if !down {
            self.down.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    down: Arc<AtomicBool>,
    outages: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if down.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let epoch = outages.load(Ordering::SeqCst);
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let (outages, stop) = (outages.clone(), stop.clone());
                    let _ = std::thread::Builder::new()
                        .name("flaky-proxy-pump".into())
                        .spawn(move || pump(from, to, epoch, &outages, &stop));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Copies `from` → `to` until either closes, the proxy stops, or an outage began after the
/// connection was made.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    epoch: u64,
    outages: &AtomicU64,
    stop: &AtomicBool,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if stop.load(Ordering::SeqCst) || outages.load(Ordering::SeqCst) != epoch {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
