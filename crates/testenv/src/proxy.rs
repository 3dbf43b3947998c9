//! A TCP proxy on loopback for fault injection: it passes bytes, stalls (holds every connection open and
//! forwards nothing), or resets (closes every connection and refuses new ones by closing them at once).
//! Placed between a client and a server, it shows how the client behaves on a hung or flapping network.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crate::TestEnvError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    Pass,
    Stall,
    Reset,
}

impl ProxyMode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => ProxyMode::Stall,
            2 => ProxyMode::Reset,
            _ => ProxyMode::Pass,
        }
    }
}

struct Shared {
    mode: AtomicU8,
    stop: AtomicBool,
    /// Bytes forwarded in either direction, to prove a stall forwards nothing.
    forwarded: AtomicU64,
}

/// A running proxy from `127.0.0.1:<port>` to `upstream`. Dropping it stops it.
pub struct FaultProxy {
    /// `127.0.0.1:<port>`.
    pub listen: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Result<Self, TestEnvError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .map_err(TestEnvError::io(std::path::Path::new("proxy listener")))?;
        let listen = listener
            .local_addr()
            .map_err(TestEnvError::io(std::path::Path::new("proxy listener")))?
            .to_string();
        listener
            .set_nonblocking(true)
            .map_err(TestEnvError::io(std::path::Path::new("proxy listener")))?;
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(0),
            stop: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
        });
        let upstream = upstream.to_string();
        let accept_shared = shared.clone();
        std::thread::spawn(move || accept_loop(&listener, &upstream, &accept_shared));
        Ok(Self { listen, shared })
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn mode(&self) -> ProxyMode {
        ProxyMode::from_u8(self.shared.mode.load(Ordering::SeqCst))
    }

    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, upstream: &str, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if ProxyMode::from_u8(shared.mode.load(Ordering::SeqCst)) == ProxyMode::Reset {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                connect_pumps(client, server, shared);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn connect_pumps(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (s1, s2) = (shared.clone(), shared.clone());
    std::thread::spawn(move || pump(client, server, &s1));
    std::thread::spawn(move || pump(server2, client2, &s2));
}

/// Copies `from` to `to` while the proxy passes; holds still while it stalls; closes both on reset or stop.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match ProxyMode::from_u8(shared.mode.load(Ordering::SeqCst)) {
            ProxyMode::Reset => break,
            ProxyMode::Stall => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            ProxyMode::Pass => {}
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                shared.forwarded.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
