use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestEnvError;

/// A command that runs `program` under `setpriv --pdeathsig KILL`: it dies with the thread that spawned it,
/// even when a test or benchmark is killed without unwinding (Ctrl-C, a failed assertion before its cleanup).
pub fn dying_with_owner(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "KILL", "--"]).arg(program);
    command
}

/// A server process owned by the test environment. Dropping it kills it and reaps it, so no test leaves an
/// orphan behind. It is started under `setpriv --pdeathsig SIGKILL`, so it also dies if its owner is killed
/// without unwinding (the signal follows the spawning thread, which is the thread that owns the environment).
pub(crate) struct ManagedProcess {
    pub(crate) name: String,
    pub(crate) log: PathBuf,
    child: Option<Child>,
}

impl ManagedProcess {
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self, TestEnvError> {
        Self::spawn_with(name, dying_with_owner(program), program, args, log)
    }

    /// The same, with extra environment variables and a working directory (istiod reads `./etc/...`).
    pub(crate) fn spawn_in(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        cwd: &Path,
        log: PathBuf,
    ) -> Result<Self, TestEnvError> {
        let mut command = dying_with_owner(program);
        command.current_dir(cwd);
        for (key, value) in env {
            command.env(key, value);
        }
        Self::spawn_with(name, command, program, args, log)
    }

    /// `command` runs `program` already ([`dying_with_owner`]); `program` names it in errors.
    fn spawn_with(
        name: &str,
        mut command: Command,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self, TestEnvError> {
        let out = File::create(&log).map_err(TestEnvError::io(&log))?;
        let err = out.try_clone().map_err(TestEnvError::io(&log))?;
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(TestEnvError::io(program))?;
        Ok(Self {
            name: name.to_string(),
            log,
            child: Some(child),
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the process has exited.
    pub(crate) fn exit_status(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten().map(|s| s.to_string())
    }

    /// Polls `ready` until it returns true, failing early if the process exits.
    pub(crate) fn wait_ready(
        &mut self,
        timeout: Duration,
        ready: impl Fn() -> bool + Sync,
    ) -> Result<(), TestEnvError> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(TestEnvError::ExitedEarly {
                    what: self.name.clone(),
                    status: status.to_string(),
                    log: self.log.clone(),
                });
            }
            if std::thread::scope(|s| s.spawn(&ready).join().unwrap_or(false)) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(TestEnvError::NotReady {
                    what: self.name.clone(),
                    secs: timeout.as_secs(),
                    log: self.log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the process: SIGKILL and reap. Test servers keep no state worth a graceful shutdown.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
