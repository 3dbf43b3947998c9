//! The bad-input suite's machinery: a case (mesh file, kubeconfig, arguments, what the message must name),
//! running it through the real binary with a time and memory watch, and the checks every case must pass.
#![allow(dead_code)]

pub mod cluster_cases;
pub mod fake_bao;
mod mesh_cases;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use mesh_cases::mesh_cases;

/// No case may take longer (the request timeout is set to 3 s for the run).
pub const TIME_LIMIT: Duration = Duration::from_secs(30);
/// Peak resident memory a case may use: the 64 MiB answers must not be buffered.
pub const MEMORY_LIMIT_KIB: u64 = 200 * 1024;

/// What no message may contain: Rust debug dumps, panics, key material, the tokens the test handed out.
pub const FORBIDDEN: &[&str] = &[
    "Some(",
    "Status {",
    "Error {",
    "Error(",
    "panicked",
    "RUST_BACKTRACE",
    "PRIVATE KEY",
    "s.badinput-secret-token-7f3a9c",
    "kube-secret-token-55e1",
];

pub enum MeshSource {
    Text(String),
    /// A path given as is (`/dev/zero`, a directory, a missing file).
    Path(PathBuf),
}

pub struct Case {
    pub name: String,
    pub mesh: MeshSource,
    pub kubeconfig: Option<String>,
    pub args: Vec<String>,
    pub needles: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Case {
    /// A mesh file case: `needles` must all appear in the message (besides the file's name).
    pub fn mesh_text(name: &str, mesh: &str, kubeconfig: &str) -> Case {
        Case {
            name: name.into(),
            mesh: MeshSource::Text(mesh.into()),
            kubeconfig: Some(kubeconfig.into()),
            args: vec!["plan".into()],
            needles: vec![],
            env: vec![],
        }
    }

    pub fn mesh_with_kubeconfig(name: &str, kubeconfig: Option<&str>, needle: &str) -> Case {
        Case {
            name: name.into(),
            mesh: MeshSource::Text(String::new()),
            kubeconfig: kubeconfig.map(str::to_string),
            args: vec!["plan".into()],
            needles: vec!["cluster-a".into(), needle.into()],
            env: vec![],
        }
    }

    pub fn mesh_with_kubeconfig_extra(
        name: &str,
        kubeconfig: &str,
        extra: &str,
        needle: &str,
    ) -> Case {
        let mut case = Self::mesh_with_kubeconfig(name, Some(kubeconfig), needle);
        case.mesh = MeshSource::Text(format!("\u{0}{extra}"));
        case
    }

    pub fn args(mut self, args: &[&str]) -> Case {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn needles(mut self, needles: &[&str]) -> Case {
        self.needles = needles.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Case {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the case in its own directory under `run.dir`.
    pub fn run(&self, run: &Run) -> Outcome {
        let dir = run.dir.join(slug(&self.name));
        std::fs::create_dir_all(&dir).expect("case dir");
        let mesh_path = match &self.mesh {
            MeshSource::Path(p) => p.clone(),
            MeshSource::Text(text) => {
                // An empty text means "the valid mesh"; a leading NUL means "the valid mesh plus this".
                let text = if text.is_empty() {
                    run.valid_mesh()
                } else if let Some(extra) = text.strip_prefix('\u{0}') {
                    format!("{}{extra}", run.valid_mesh())
                } else {
                    text.clone()
                };
                let p = dir.join("mesh.yaml");
                std::fs::write(&p, text).expect("write mesh");
                p
            }
        };
        if let Some(kc) = &self.kubeconfig {
            std::fs::write(dir.join("kubeconfig-a"), kc).expect("write kubeconfig");
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_meshtrust"));
        command
            .args(&self.args)
            .arg("--mesh")
            .arg(&mesh_path)
            .env("BAO_ADDR", &run.bao_addr)
            .env("BAO_TOKEN", &run.token)
            .env("MESHTRUST_REQUEST_TIMEOUT", "3s")
            .env("KUBECONFIG", dir.join("no-default-kubeconfig"))
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("MESHTRUST_LOG");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let watched = watch(command);
        self.judge(watched, &mesh_path, &run.token)
    }

    fn judge(&self, w: Watched, mesh_path: &Path, token: &str) -> Outcome {
        let text = format!("{}\n{}", w.stderr, w.stdout);
        let mut problems = Vec::new();
        if text.contains(token) {
            problems.push("message contains the OpenBao token".to_string());
        }
        if w.code == Some(0) {
            problems.push("exited 0".to_string());
        }
        if w.elapsed >= TIME_LIMIT {
            problems.push(format!("took {:?}", w.elapsed));
        }
        if w.peak_rss_kib > MEMORY_LIMIT_KIB {
            problems.push(format!("peak RSS {} KiB", w.peak_rss_kib));
        }
        for bad in FORBIDDEN {
            if text.contains(bad) {
                problems.push(format!("message contains {bad:?}"));
            }
        }
        let mut needles = self.needles.clone();
        if needles.is_empty() {
            needles.push(mesh_path.display().to_string());
        }
        for needle in &needles {
            if !text.contains(needle.as_str()) {
                problems.push(format!("message does not name {needle:?}"));
            }
        }
        if !problems.is_empty() {
            problems.push(format!("output was:\n{text}"));
        }
        Outcome {
            case: self.name.clone(),
            code: w.code,
            first_line: first_line(&w.stderr, &w.stdout),
            elapsed: w.elapsed,
            peak_rss_kib: w.peak_rss_kib,
            problems,
        }
    }
}

/// Where and with which credentials the cases run.
pub struct Run {
    pub dir: PathBuf,
    pub bao_addr: String,
    pub token: String,
    pub valid_mesh: Option<String>,
}

impl Run {
    pub fn new(dir: &Path, bao_addr: &str, token: &str) -> Run {
        Run {
            dir: dir.to_path_buf(),
            bao_addr: bao_addr.into(),
            token: token.into(),
            valid_mesh: None,
        }
    }

    fn valid_mesh(&self) -> String {
        self.valid_mesh.clone().unwrap_or_else(|| {
            format!(
                "apiVersion: meshtrust.dev/v1\nkind: Mesh\nopenbao:\n  address: {}\nclusters:\n  - name: cluster-a\n    kubeconfig: kubeconfig-a\n",
                self.bao_addr
            )
        })
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub case: String,
    pub code: Option<i32>,
    pub first_line: String,
    pub elapsed: Duration,
    pub peak_rss_kib: u64,
    pub problems: Vec<String>,
}

struct Watched {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    peak_rss_kib: u64,
}

/// Runs the command, sampling its peak resident memory (VmHWM) until it exits; kills it past the time limit.
fn watch(mut command: Command) -> Watched {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshtrust");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let code = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            peak = peak.max(vm_hwm_kib(&status));
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if started.elapsed() > TIME_LIMIT + Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    Watched {
        code,
        stdout: String::from_utf8_lossy(&out_thread.join().unwrap_or_default()).to_string(),
        stderr: String::from_utf8_lossy(&err_thread.join().unwrap_or_default()).to_string(),
        elapsed,
        peak_rss_kib: peak,
    }
}

fn vm_hwm_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn first_line(stderr: &str, stdout: &str) -> String {
    let line = stderr
        .lines()
        .chain(stdout.lines())
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    let mut short: String = line.chars().take(140).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short.replace('|', "\\|")
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// The table for the closing note: case, exit code, time, peak memory, first line of the message.
pub fn print_table(outcomes: &[Outcome]) {
    println!("\n| # | case | exit | time | peak RSS | first line of the message |");
    println!("|---|---|---|---|---|---|");
    for (i, o) in outcomes.iter().enumerate() {
        println!(
            "| {} | {} | {} | {:.1} s | {} MiB | {} |",
            i + 1,
            o.case,
            o.code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "killed".into()),
            o.elapsed.as_secs_f64(),
            o.peak_rss_kib / 1024,
            o.first_line
        );
    }
}
