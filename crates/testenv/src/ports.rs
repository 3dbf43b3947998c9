use std::net::TcpListener;
use std::path::Path;

use rand::Rng;

use crate::TestEnvError;

/// Ports below Linux's ephemeral range (32768–60999 by default), where the kernel never picks the source
/// port of an outgoing connection: a port found free here stays free until our server binds it, unless
/// another test picked the same one, which [`retry_on_port_clash`] handles.
const PORTS: std::ops::Range<u16> = 20000..32768;

/// A loopback port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let mut rng = rand::rng();
    for _ in 0..64 {
        let port = rng.random_range(PORTS);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Starts a server again, on new ports, if it exited because a port it was given was taken in the meantime
/// (two tests on one machine can pick the same free port before either binds it).
pub(crate) fn retry_on_port_clash<T>(
    mut start: impl FnMut() -> Result<T, TestEnvError>,
) -> Result<T, TestEnvError> {
    let mut attempt = 1;
    loop {
        match start() {
            Err(TestEnvError::ExitedEarly { log, .. }) if attempt < 3 && port_was_taken(&log) => {
                attempt += 1;
            }
            other => return other,
        }
    }
}

pub(crate) fn port_was_taken(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.contains("address already in use"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_outside_the_ephemeral_range_and_bindable() {
        let port = free_port().expect("port");
        assert!(PORTS.contains(&port), "{port}");
        TcpListener::bind(("127.0.0.1", port)).expect("still free");
    }

    #[test]
    fn only_a_clash_is_retried() {
        let dir = tempfile::tempdir().expect("tmp");
        let clash = dir.path().join("clash.log");
        std::fs::write(
            &clash,
            "listen tcp 127.0.0.1:2379: bind: address already in use",
        )
        .expect("log");
        let other = dir.path().join("other.log");
        std::fs::write(&other, "some other failure").expect("log");
        let exited = |log: &Path| TestEnvError::ExitedEarly {
            what: "etcd".into(),
            status: "exit status: 1".into(),
            log: log.to_path_buf(),
        };
        let mut calls = 0;
        let result: Result<(), _> = retry_on_port_clash(|| {
            calls += 1;
            if calls < 2 {
                Err(exited(&clash))
            } else {
                Ok(())
            }
        });
        assert!(result.is_ok());
        assert_eq!(calls, 2);
        let mut calls = 0;
        let result: Result<(), _> = retry_on_port_clash(|| {
            calls += 1;
            Err(exited(&other))
        });
        assert!(result.is_err());
        assert_eq!(calls, 1, "a failure that is not a clash is not retried");
    }
}
