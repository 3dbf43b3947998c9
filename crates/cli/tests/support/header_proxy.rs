//! A one-request-per-connection HTTP proxy on loopback that adds a header to every request it forwards, or to
//! every answer it returns. It makes a real server show behaviour it has only in some deployments: a Vault
//! standby that redirects (the client asked it not to forward, `X-Vault-No-Request-Forwarding`), or answers
//! that carry `X-Vault-Index` as OpenBao's do.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct HeaderProxy {
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    forwarded: Arc<AtomicUsize>,
}

/// Where the extra header goes.
#[derive(Clone, Copy)]
pub enum Add {
    Request(&'static str, &'static str),
    Answer(&'static str, &'static str),
}

impl HeaderProxy {
    /// Forwards to `upstream` (`http://host:port`) until the test ends.
    pub fn start(upstream: &str, add: Add) -> HeaderProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let count = forwarded.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let upstream = upstream.clone();
                let count = count.clone();
                std::thread::spawn(move || {
                    if relay(client, &upstream, add).is_some() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        HeaderProxy { addr, forwarded }
    }

    /// How many requests went through.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::Relaxed)
    }
}

/// One request and its answer; the connection is closed after it (`Connection: close` both ways).
fn relay(mut client: TcpStream, upstream: &str, add: Add) -> Option<()> {
    let (head, mut body) = read_head(&mut client)?;
    let length = content_length(&head);
    while body.len() < length {
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    let mut head = without_connection(&head);
    if let Add::Request(name, value) = add {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream).ok()?;
    server.write_all(head.as_bytes()).ok()?;
    server.write_all(&body).ok()?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer).ok()?;
    if let Add::Answer(name, value) = add
        && let Some(end) = answer.windows(2).position(|w| w == b"\r\n")
    {
        let line = format!("\r\n{name}: {value}");
        answer.splice(end..end, line.into_bytes());
    }
    client.write_all(&answer).ok()?;
    Some(())
}

/// The request head (without its blank line) and whatever of the body came with it.
fn read_head(client: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 2]).to_string();
            return Some((head, buf[end + 4..].to_vec()));
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn without_connection(head: &str) -> String {
    head.split("\r\n")
        .filter(|l| !l.is_empty())
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        })
        .map(|l| format!("{l}\r\n"))
        .collect()
}
