//! A fake OpenBao on loopback that answers every request the same bad way, and records what it was asked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Html200,
    EmptyObject200,
    /// Headers promise 1000 bytes; 10 arrive, then nothing.
    StalledBody,
    /// 64 MiB streamed without a Content-Length.
    HugeBody,
    /// A Content-Length of 64 MiB.
    HugeLength,
    ServerError,
    ServerErrorHtml,
    /// Accepts and never answers.
    Hang,
    TruncatedJson,
    WrongJson,
    Forbidden,
    /// Closes the connection without a word.
    Close,
    /// 307 to another loopback listener that records whether the token arrives there.
    Redirect,
}

pub struct FakeBao {
    pub address: String,
    requests: Arc<Mutex<Vec<String>>>,
    redirect_hits: Arc<Mutex<Vec<String>>>,
}

impl FakeBao {
    pub async fn start(answer: Answer) -> FakeBao {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let target_url = format!("http://{}/v1/elsewhere", target.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let redirect_hits = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, target_url) = (log.clone(), target_url.clone());
                tokio::spawn(async move { serve(stream, answer, &log, &target_url).await });
            }
        });
        let hits = redirect_hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = target.accept().await {
                let head = read_head(&mut stream).await;
                if let Ok(mut h) = hits.lock() {
                    h.push(head);
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    .await;
            }
        });
        FakeBao {
            address,
            requests,
            redirect_hits,
        }
    }

    /// `METHOD path` of every request received.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn redirect_target_saw_token(&self) -> bool {
        self.redirect_hits
            .lock()
            .map(|h| {
                h.iter()
                    .any(|head| head.to_ascii_lowercase().contains("x-vault-token"))
            })
            .unwrap_or(false)
    }
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 << 10 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn serve(mut stream: TcpStream, answer: Answer, log: &Mutex<Vec<String>>, target: &str) {
    let head = read_head(&mut stream).await;
    let line = head.lines().next().unwrap_or_default();
    let request: String = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
    if let Ok(mut l) = log.lock() {
        l.push(request);
    }
    let html = "<html><body>Sign in to continue</body></html>";
    let text = match answer {
        Answer::Html200 => response("200 OK", "text/html", html),
        Answer::EmptyObject200 => response("200 OK", "application/json", "{}"),
        Answer::ServerError => response(
            "500 Internal Server Error",
            "application/json",
            "{\"errors\":[\"internal error\"]}",
        ),
        Answer::ServerErrorHtml => response("500 Internal Server Error", "text/html", html),
        Answer::TruncatedJson => response("200 OK", "application/json", "{\"data\":{\"type\":\"pk"),
        Answer::WrongJson => response("200 OK", "application/json", "[1,2,3]"),
        Answer::Forbidden => response(
            "403 Forbidden",
            "application/json",
            "{\"errors\":[\"permission denied\"]}",
        ),
        Answer::Redirect => format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n"
        ),
        Answer::Close => return,
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            return;
        }
        Answer::StalledBody => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"data\": {").await;
            tokio::time::sleep(Duration::from_secs(120)).await;
            return;
        }
        Answer::HugeLength => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\n\r\n").await;
            stream_bytes(&mut stream, 64 << 20).await;
            return;
        }
        Answer::HugeBody => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n").await;
            stream_bytes(&mut stream, 64 << 20).await;
            return;
        }
    };
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Writes `total` bytes of JSON-ish filler, stopping as soon as the client hangs up.
async fn stream_bytes(stream: &mut TcpStream, total: usize) {
    let chunk = vec![b' '; 64 << 10];
    let mut sent = 0;
    while sent < total {
        if stream.write_all(&chunk).await.is_err() {
            return;
        }
        sent += chunk.len();
    }
}
