//! Running `nft`: the one place this crate touches the kernel.
//!
//! Why the nft language on stdin rather than the JSON API or a netlink library: each change
//! is one readable transaction (`nft -f -`) that nft parses, validates and commits
//! atomically, and that we can log or replay by hand when something goes wrong; nft's own
//! error messages point at the offending line, which [`NftError`] carries. State is read
//! back with `nft list table`, the same text an operator sees. [`NftCommand`] takes set
//! element updates over netlink instead ([`crate::nfnl`]): no process for the common change.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

pub use crate::nfnl::SetElements;
use crate::table::{TABLE_FAMILY, TABLE_NAME};

/// The `nft` program.
pub const NFT: &str = "nft";
/// The program that enters a namespace (util-linux).
pub const NSENTER: &str = "nsenter";
/// Longest one nft call may take before it is killed.
pub const NFT_TIMEOUT: Duration = Duration::from_secs(60);

/// A failure to run `nft` or a rejection by it.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The program could not be started or talked to.
    #[error("could not run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// nft ran and failed.
    #[error("nft {op} failed ({status}){}: {}", at_line(*.line, .script_line.as_deref()), first_error(.stderr))]
    Failed {
        /// `-f -` or `list table inet tortie`.
        op: String,
        /// Exit status as text.
        status: String,
        stderr: String,
        /// 1-based line of the script nft complained about first.
        line: Option<usize>,
        /// That line's text.
        script_line: Option<String>,
    },
    /// A netlink transaction (set elements) was refused or could not be sent.
    #[error("{op} failed: {source}")]
    Netlink {
        op: String,
        #[source]
        source: io::Error,
    },
    /// nft did not finish in time and was killed (a stuck call must not stall the agent).
    #[error("{program} did not finish within {after:?} and was killed")]
    TimedOut { program: String, after: Duration },
}

fn at_line(line: Option<usize>, text: Option<&str>) -> String {
    match (line, text) {
        (Some(l), Some(t)) => format!(" at line {l} `{t}`"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// The first line that says `Error:`, else the first non-empty line.
fn first_error(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.contains("Error:"))
        .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()))
        .map(str::trim)
        .unwrap_or("no message")
}

impl NftError {
    /// Whether nft said the table (or another object) does not exist.
    pub fn is_missing(&self) -> bool {
        match self {
            NftError::Failed { stderr, .. } => stderr.contains("No such file or directory"),
            NftError::Netlink { source, .. } => source.raw_os_error() == Some(nix::libc::ENOENT),
            NftError::Spawn { .. } | NftError::TimedOut { .. } => false,
        }
    }

    /// nft's complete error output, if it ran.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            NftError::Failed { stderr, .. } => Some(stderr),
            NftError::Spawn { .. } | NftError::TimedOut { .. } | NftError::Netlink { .. } => None,
        }
    }
}

/// The line number of nft's first located error (`/dev/stdin:12:5-9: Error: ...`).
pub fn error_line(stderr: &str) -> Option<usize> {
    stderr.lines().find_map(|l| {
        let (loc, _) = l.split_once(": Error:")?;
        let mut parts = loc.rsplitn(3, ':');
        let _cols = parts.next()?;
        let line = parts.next()?;
        line.parse().ok()
    })
}

/// Runs nft transactions and reads the table back.
pub trait NftRunner {
    /// Applies `script` as one transaction (`nft -f -`).
    fn run(&self, script: &str) -> Result<(), NftError>;
    /// `nft list table inet tortie`.
    fn list(&self) -> Result<String, NftError>;
    /// The namespace's nftables generation: a counter the kernel bumps on every committed
    /// nftables transaction (any table, any program). `None` when it cannot be read; the
    /// manager then reads the table back after each commit instead.
    fn generation(&self) -> Option<u32> {
        None
    }
    /// Deletes and adds address elements of hash sets in one transaction without running
    /// `nft` (the change path for a pod joining or leaving selectors). `Ok(false)`: this
    /// runner does not do that (or not for this many elements); the caller runs the
    /// equivalent script instead.
    fn update_elements(&self, _changes: &[SetElements]) -> Result<bool, NftError> {
        Ok(false)
    }
}

impl<T: NftRunner + ?Sized> NftRunner for &T {
    fn run(&self, script: &str) -> Result<(), NftError> {
        (**self).run(script)
    }
    fn list(&self) -> Result<String, NftError> {
        (**self).list()
    }
    fn generation(&self) -> Option<u32> {
        (**self).generation()
    }
    fn update_elements(&self, changes: &[SetElements]) -> Result<bool, NftError> {
        (**self).update_elements(changes)
    }
}

/// The real runner: the `nft` binary, inside a network namespace when `netns` is set
/// (`nsenter --net=<netns> nft ...`).
#[derive(Debug, Clone)]
pub struct NftCommand {
    /// A namespace file (`/run/netns/NAME`); `None` = the caller's namespace.
    pub netns: Option<PathBuf>,
    /// The nft program ([`NFT`], found on `PATH`).
    pub program: PathBuf,
    /// How long one call may take before it is killed ([`NFT_TIMEOUT`]).
    pub timeout: Duration,
}

impl Default for NftCommand {
    fn default() -> Self {
        NftCommand {
            netns: None,
            program: PathBuf::from(NFT),
            timeout: NFT_TIMEOUT,
        }
    }
}

impl NftCommand {
    /// nft in the caller's namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// nft inside the namespace at `path`.
    pub fn in_netns(path: impl Into<PathBuf>) -> Self {
        NftCommand {
            netns: Some(path.into()),
            ..Self::default()
        }
    }

    fn command(&self, args: &[&str]) -> (Command, String) {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new(NSENTER);
                c.arg(format!("--net={}", ns.display()))
                    .arg("--")
                    .arg(&self.program);
                c.args(args);
                (c, NSENTER.to_string())
            }
            None => {
                let mut c = Command::new(&self.program);
                c.args(args);
                (c, self.program.display().to_string())
            }
        }
    }

    /// Runs nft with `args`, feeding `stdin`.
    fn exec(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, NftError> {
        let (mut cmd, program) = self.command(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let spawn_err = |source| NftError::Spawn {
            program: program.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let input = child.stdin.take();
        let pid = child.id();
        // Write on another thread so that a chatty nft can never block us on a full pipe, and
        // wait on another so that a stuck nft is killed after NFT_TIMEOUT. The child is reaped
        // only by that waiter, so its PID cannot be reused before the kill.
        std::thread::scope(|s| {
            if let (Some(mut pipe), Some(text)) = (input, stdin) {
                s.spawn(move || {
                    // nft may exit before reading everything (a parse error): its output says why.
                    let _ = pipe.write_all(text.as_bytes());
                });
            }
            let (tx, rx) = mpsc::channel();
            s.spawn(move || {
                let _ = tx.send(child.wait_with_output());
            });
            match rx.recv_timeout(self.timeout) {
                Ok(out) => out.map_err(spawn_err),
                Err(_) => {
                    if let Ok(pid) = i32::try_from(pid) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    Err(NftError::TimedOut {
                        program: program.clone(),
                        after: self.timeout,
                    })
                }
            }
        })
    }
}

fn failed(op: &str, out: &Output, script: Option<&str>) -> NftError {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = error_line(&stderr);
    let script_line = match (line, script) {
        (Some(l), Some(s)) => s.lines().nth(l.saturating_sub(1)).map(str::to_string),
        _ => None,
    };
    NftError::Failed {
        op: op.to_string(),
        status: out.status.to_string(),
        stderr,
        line,
        script_line,
    }
}

impl NftRunner for NftCommand {
    fn run(&self, script: &str) -> Result<(), NftError> {
        let out = self.exec(&["-f", "-"], Some(script))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed("-f -", &out, Some(script)))
        }
    }

    fn list(&self) -> Result<String, NftError> {
        let out = self.exec(&["list", "table", TABLE_FAMILY, TABLE_NAME], None)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(failed(
                &format!("list table {TABLE_FAMILY} {TABLE_NAME}"),
                &out,
                None,
            ))
        }
    }

    fn generation(&self) -> Option<u32> {
        crate::nfnl::generation(self.netns.as_deref())
            .inspect_err(|e| tracing::debug!(error = %e, "could not read the nftables generation"))
            .ok()
    }

    fn update_elements(&self, changes: &[SetElements]) -> Result<bool, NftError> {
        let elements: usize = changes
            .iter()
            .map(|c| c.removed.len() + c.added.len())
            .sum();
        if elements > crate::nfnl::MAX_ELEMENTS
            || crate::nfnl::messages_for(changes) > crate::nfnl::MAX_MESSAGES
        {
            return Ok(false);
        }
        crate::nfnl::update_set_elements(self.netns.as_deref(), TABLE_NAME, changes)
            .map(|()| true)
            .map_err(|source| NftError::Netlink {
                op: describe(changes),
                source,
            })
    }
}

/// `delete/add element` of the sets in `changes`, for errors.
fn describe(changes: &[SetElements]) -> String {
    let sets: Vec<&str> = changes.iter().map(|c| c.set.as_str()).collect();
    format!(
        "set element update of {TABLE_FAMILY} {TABLE_NAME} {}",
        sets.join(", ")
    )
}

/// A recording fake: keeps every script (and, when asked to take them, element updates),
/// answers `run` from a queue of results (default success) and `list` with a settable
/// listing.
#[derive(Debug, Default)]
pub struct RecordingNft {
    scripts: Mutex<Vec<String>>,
    results: Mutex<VecDeque<Result<(), NftError>>>,
    listing: Mutex<String>,
    lists: Mutex<usize>,
    /// The fake generation: bumped by every successful `run` and every `set_listing`.
    generation: Mutex<u32>,
    /// `generation` answers `None` (a runner that cannot tell).
    no_generation: bool,
    /// `update_elements` is taken (recorded, answered from the result queue).
    element_updates: bool,
    updates: Mutex<Vec<Vec<SetElements>>>,
}

impl RecordingNft {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake whose `generation` is unknown (the manager must read back after commits).
    pub fn without_generation() -> Self {
        RecordingNft {
            no_generation: true,
            ..Self::default()
        }
    }

    /// A fake that takes element updates the way [`NftCommand`] does (without a script).
    pub fn with_element_updates() -> Self {
        RecordingNft {
            element_updates: true,
            ..Self::default()
        }
    }

    /// Every element update taken so far, in order.
    pub fn element_updates(&self) -> Vec<Vec<SetElements>> {
        lock(&self.updates).clone()
    }

    /// Every script run so far, in order.
    pub fn scripts(&self) -> Vec<String> {
        lock(&self.scripts).clone()
    }

    /// The next `run` calls return these, in order; then success again.
    pub fn push_result(&self, r: Result<(), NftError>) {
        lock(&self.results).push_back(r);
    }

    /// What `list` returns from now on (a change to the kernel: bumps the generation).
    pub fn set_listing(&self, text: &str) {
        *lock(&self.listing) = text.to_string();
        *lock(&self.generation) += 1;
    }

    /// Another program's nftables commit that leaves the listing as it is.
    pub fn bump_generation(&self) {
        *lock(&self.generation) += 1;
    }

    /// How many times `list` was called.
    pub fn list_calls(&self) -> usize {
        *lock(&self.lists)
    }

    /// A rejection as nft would report it, for tests.
    pub fn rejection(msg: &str) -> NftError {
        NftError::Failed {
            op: "-f -".to_string(),
            status: "exit status: 1".to_string(),
            stderr: format!("/dev/stdin:1:1-1: Error: {msg}\n"),
            line: Some(1),
            script_line: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NftRunner for RecordingNft {
    fn run(&self, script: &str) -> Result<(), NftError> {
        lock(&self.scripts).push(script.to_string());
        let r = lock(&self.results).pop_front().unwrap_or(Ok(()));
        if r.is_ok() {
            *lock(&self.generation) += 1;
        }
        r
    }

    fn list(&self) -> Result<String, NftError> {
        *lock(&self.lists) += 1;
        Ok(lock(&self.listing).clone())
    }

    fn generation(&self) -> Option<u32> {
        (!self.no_generation).then(|| *lock(&self.generation))
    }

    fn update_elements(&self, changes: &[SetElements]) -> Result<bool, NftError> {
        if !self.element_updates {
            return Ok(false);
        }
        lock(&self.updates).push(changes.to_vec());
        let r = lock(&self.results).pop_front().unwrap_or(Ok(()));
        if r.is_ok() {
            *lock(&self.generation) += 1;
        }
        r.map(|()| true)
    }
}

#[cfg(test)]
mod tests {

    /// A stuck nft is killed after the timeout instead of stalling its caller forever.
    #[test]
    fn a_stuck_nft_is_killed_after_the_timeout() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("tortie-nft-stuck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let fake = dir.join("nft");
        // `exec`, so the killed process is the one holding the pipes (as nft itself would be).
        let pid_file = dir.join("pid");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho $$ > {}\nexec sleep 30\n",
                pid_file.display()
            ),
        )
        .expect("write fake");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let cmd = NftCommand {
            program: fake,
            timeout: Duration::from_millis(200),
            ..NftCommand::new()
        };
        let err = cmd.list().expect_err("a stuck nft times out");
        let pid = std::fs::read_to_string(&pid_file).expect("the fake wrote its pid");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(err, NftError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("200ms"), "{err}");
        // Killed and reaped, not waited for: the process is gone when the call returns.
        let proc_dir = format!("/proc/{}", pid.trim());
        assert!(
            !std::path::Path::new(&proc_dir).exists(),
            "{proc_dir} still exists"
        );
    }
    use super::*;

    #[test]
    fn error_lines_are_found() {
        let e =
            "/dev/stdin:3:9-24: Error: syntax error, unexpected quoted string\n  chain \"x\" {\n";
        assert_eq!(error_line(e), Some(3));
        assert_eq!(error_line("Error: No such file or directory\n"), None);
        assert_eq!(error_line(""), None);
    }

    #[test]
    fn errors_name_the_line() {
        let out = Output {
            status: std::process::ExitStatus::default(),
            stdout: Vec::new(),
            stderr: b"/dev/stdin:2:1-3: Error: Could not process rule: No such file or directory\n"
                .to_vec(),
        };
        let e = failed("-f -", &out, Some("a\nadd rule inet tortie x drop\n"));
        let msg = e.to_string();
        assert!(
            msg.contains("at line 2 `add rule inet tortie x drop`"),
            "{msg}"
        );
        assert!(msg.contains("Could not process rule"), "{msg}");
        assert!(e.is_missing());
    }

    #[test]
    fn missing_programs_are_spawn_errors() {
        let r = NftCommand::in_netns("/nonexistent/netns");
        // nsenter exists but fails on the path: that is a Failed, not a Spawn.
        match r.list() {
            Err(NftError::Failed { .. }) | Err(NftError::Spawn { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn recording_fake_records_and_fails_on_demand() {
        let f = RecordingNft::new();
        f.push_result(Err(RecordingNft::rejection("boom")));
        assert!(f.run("a").is_err());
        assert!(f.run("b").is_ok());
        assert_eq!(f.scripts(), vec!["a", "b"]);
        f.set_listing("x");
        assert_eq!(f.list().ok().as_deref(), Some("x"));
        assert_eq!(f.list_calls(), 1);
    }
}
