//! Test harness for running tortie's BGP speaker against real BGP daemons (BIRD 2, FRR,
//! GoBGP) inside network namespaces.
//!
//! - [`netns`]: a throw-away L2 fabric (one bridge in a "fabric" namespace) with N host
//!   namespaces on it, each with one veth and an underlay IPv4 + IPv6 address. Everything is
//!   named `tb<pid>-<label>-...` and removed by `Drop`, on success and on panic.
//! - [`peers`]: one running daemon per [`peers::Router`], configured from a
//!   [`peers::RouterConfig`], with readers for its sessions and its learned routes.
//! - [`tortie`]: tortie's own speaker in a host namespace, on a runtime of its own, with a
//!   log of the route changes it reports.
//!
//! Tests that use this need root; call [`root_or_skip`] first (it skips without root, and
//! fails under `CI=true` instead of skipping).

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the harness"
)]

pub mod netns;
pub mod peers;
pub mod tortie;

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use tortie_netlink::testing::root_or_skip;

/// How often wait loops poll.
pub const POLL: Duration = Duration::from_millis(100);

/// Runs `cmd` with piped output, killing it (by its PID) if it is not done within `timeout`.
/// Returns its output whatever the exit status; callers decide what failure means.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {what}"))?;
    // Readers on their own threads so a chatty child never blocks on a full pipe.
    let out = reader(&mut child, true);
    let err = reader(&mut child, false);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().with_context(|| format!("wait {what}"))? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn reader(child: &mut Child, stdout: bool) -> std::thread::JoinHandle<Vec<u8>> {
    let mut src: Option<Box<dyn Read + Send>> = if stdout {
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>)
    } else {
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>)
    };
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = src.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    })
}

/// Like [`run_bounded`], but a non-zero exit is an error carrying stdout and stderr; returns
/// stdout.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    let what = format!("{cmd:?}");
    let out = run_bounded(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` every [`POLL`] until it returns `Some`, or fails after `timeout` with
/// `describe()` (called once, at the end) in the message.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl FnOnce() -> String,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                describe()
            );
        }
        std::thread::sleep(POLL);
    }
}
