//! Text commands that change a proxy's faults, and a Unix-socket server for them (the
//! `wardline-fault-proxy` binary's control channel; the socket file is 0600, so only its
//! owner can steer the proxy).
//!
//! One command per line; the answer is one line starting `ok` or `error`:
//! `loss P` · `delay MS [JITTER_MS]` · `duplicate P` · `reorder P` · `partition` · `heal` ·
//! `cut` · `faults` · `stats` (P is a probability in 0..=1).

use super::FaultHandle;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

fn probability(arg: Option<&str>, what: &str) -> Result<f64, String> {
    let text = arg.ok_or_else(|| format!("`{what}` needs a probability between 0 and 1, e.g. `{what} 0.2`"))?;
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{what} {text}`: the probability must be a number between 0 and 1")),
    }
}

fn millis(arg: Option<&str>, what: &str) -> Result<Duration, String> {
    let text = arg.ok_or_else(|| format!("`{what}` needs milliseconds, e.g. `delay 50 20`"))?;
    text.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("`{what} {text}`: milliseconds must be a whole number"))
}

/// Apply one command to every handle; returns the answer line (without newline).
pub fn apply_command(handles: &[FaultHandle], line: &str) -> String {
    match run(handles, line) {
        Ok(msg) => format!("ok {msg}"),
        Err(msg) => format!("error {msg}"),
    }
}

fn run(handles: &[FaultHandle], line: &str) -> Result<String, String> {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let a1 = words.next();
    let a2 = words.next();
    let each = |f: &dyn Fn(&FaultHandle)| handles.iter().for_each(f);
    match cmd {
        "loss" => {
            let p = probability(a1, "loss")?;
            each(&|h| h.update(|f| f.loss = p));
        }
        "duplicate" => {
            let p = probability(a1, "duplicate")?;
            each(&|h| h.update(|f| f.duplicate = p));
        }
        "reorder" => {
            let p = probability(a1, "reorder")?;
            each(&|h| h.update(|f| f.reorder = p));
        }
        "delay" => {
            let d = millis(a1, "delay")?;
            let j = if a2.is_some() { millis(a2, "delay jitter")? } else { Duration::ZERO };
            each(&|h| {
                h.update(|f| {
                    f.delay = d;
                    f.jitter = j;
                })
            });
        }
        "partition" => each(&|h| h.partition()),
        "heal" => each(&|h| h.heal()),
        "cut" => each(&|h| h.cut_connections()),
        "faults" => {
            return Ok(handles.iter().map(|h| format!("{:?}", h.faults())).collect::<Vec<_>>().join("; "));
        }
        "stats" => {
            return Ok(handles.iter().map(|h| format!("{:?}", h.stats())).collect::<Vec<_>>().join("; "));
        }
        "" => {
            return Err("empty command; try loss, delay, duplicate, reorder, partition, heal, cut, faults, stats".into())
        }
        other => {
            return Err(format!(
                "unknown command `{other}`; try loss, delay, duplicate, reorder, partition, heal, cut, faults, stats"
            ))
        }
    }
    Ok(line.trim().to_string())
}

/// Serve commands on a Unix socket at `path` until the process ends.
pub fn serve_control(path: &Path, handles: Vec<FaultHandle>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let Ok(mut out) = conn.try_clone() else { continue };
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { break };
            if writeln!(out, "{}", apply_command(&handles, &line)).is_err() {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault_proxy::{FaultProxy, Transport};
    use std::os::unix::net::UnixStream;

    #[test]
    fn control_socket_is_owner_only_and_applies_commands() {
        let proxy =
            FaultProxy::start(Transport::Tcp, "127.0.0.1:0".parse().unwrap(), "127.0.0.1:9".parse().unwrap(), 1)
                .unwrap();
        let handle = proxy.handle();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let p = path.clone();
        let h = handle.clone();
        std::thread::spawn(move || serve_control(&p, vec![h]));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let conn = loop {
            match UnixStream::connect(&path) {
                Ok(c) => break c,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "control socket never came up: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "control socket must be owner-only");
        let mut out = conn.try_clone().unwrap();
        let mut answers = BufReader::new(conn).lines();
        writeln!(out, "partition").unwrap();
        assert_eq!(answers.next().unwrap().unwrap(), "ok partition");
        assert!(handle.faults().partitioned);
        writeln!(out, "reorder -1").unwrap();
        assert!(answers.next().unwrap().unwrap().starts_with("error"));
        writeln!(out, "heal").unwrap();
        assert_eq!(answers.next().unwrap().unwrap(), "ok heal");
        assert!(!handle.faults().partitioned);
    }
}
