//! Processes the lab starts (agents, etcd, built-in servers) and how it ends them.
//!
//! Invariants: the lab signals a process only by PID, and only after checking that the PID's
//! command line still carries the marker the lab recorded (or, after a crash, that the process
//! sits inside one of the lab's namespaces or names one in its arguments). SIGTERM first, a
//! bounded wait, then SIGKILL and another bounded wait.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns;
use crate::state::{Plan, ProcessRecord};

/// How long a process gets to exit after SIGTERM.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long to wait after SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);

/// Starts `cmd` detached in its own process group, stdin closed, stdout and stderr appended
/// to `log`. Returns the running child (the caller records its PID).
pub fn spawn_logged(mut cmd: Command, log: &Path) -> std::io::Result<std::process::Child> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
}

/// The command line of `pid`, split at NULs; `None` if it is gone.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Whether `pid` runs (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself hold ") ".
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Whether `args` carry `marker` in one of their arguments.
pub fn has_marker(args: &[String], marker: &str) -> bool {
    !marker.is_empty() && args.iter().any(|a| a.contains(marker))
}

/// Whether the recorded process still runs the command the lab started.
pub fn still_ours(rec: &ProcessRecord) -> bool {
    alive(rec.pid) && cmdline(rec.pid).is_some_and(|args| has_marker(&args, &rec.marker))
}

/// Whether a process with these arguments belongs to lab `plan` by what it names: an agent
/// (`--host-netns /run/netns/L-...`) or the lab's etcd (`--data-dir=/run/tortie/lab/L/etcd`).
pub fn names_lab(plan: &Plan, args: &[String]) -> bool {
    let netns_prefix = format!("{}/{}", crate::state::NETNS_DIR, plan.prefix());
    let etcd_dir = plan.etcd_dir().display().to_string();
    args.iter()
        .any(|a| a.starts_with(&netns_prefix) || a.ends_with(&format!("={etcd_dir}")))
        || args
            .windows(2)
            .any(|w| w[0] == "--data-dir" && w[1] == etcd_dir)
}

/// Every process (other than this one) that belongs to lab `plan`: inside one of its
/// namespaces, or naming them or its etcd dir in its arguments.
pub fn scan_lab(plan: &Plan) -> BTreeSet<u32> {
    let ours: BTreeSet<(u64, u64)> = netns::list_with_prefix(&plan.prefix())
        .iter()
        .filter_map(|n| netns::identity(&netns::path(n)))
        .collect();
    let me = std::process::id();
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    proc.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && *pid > 1 && alive(*pid))
        .filter(|pid| {
            let in_ns = netns::identity(Path::new(&format!("/proc/{pid}/ns/net")))
                .is_some_and(|id| ours.contains(&id));
            in_ns || cmdline(*pid).is_some_and(|args| names_lab(plan, &args))
        })
        .collect()
}

/// Ends `pids` (SIGTERM, wait, SIGKILL, wait). Returns the PIDs that were still running and
/// were signalled, and the ones that survived everything.
pub fn terminate(pids: &BTreeSet<u32>) -> (Vec<u32>, Vec<u32>) {
    let running: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    signal_all(&running, Signal::SIGTERM);
    wait_gone(&running, TERM_GRACE);
    let stubborn: Vec<u32> = running.iter().copied().filter(|p| alive(*p)).collect();
    signal_all(&stubborn, Signal::SIGKILL);
    wait_gone(&stubborn, KILL_GRACE);
    let survivors = stubborn.into_iter().filter(|p| alive(*p)).collect();
    (running, survivors)
}

fn signal_all(pids: &[u32], sig: Signal) {
    for pid in pids {
        if let Ok(raw) = i32::try_from(*pid) {
            // ESRCH (already gone) is success here.
            let _ = kill(Pid::from_raw(raw), sig);
        }
    }
}

fn wait_gone(pids: &[u32], limit: Duration) {
    let deadline = Instant::now() + limit;
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn markers_match_substrings_of_arguments() {
        let a = args("/usr/bin/tortie lab serve --listen 80/tcp --netns lab-p0123456789");
        assert!(has_marker(&a, "lab-p0123456789"));
        assert!(!has_marker(&a, "lab-p99"));
        assert!(!has_marker(&a, ""));
    }

    #[test]
    fn lab_processes_are_recognised_by_what_they_name() {
        let plan = Plan::new("lab").unwrap();
        let agent = args("tortie agent --node n1 --host-netns /run/netns/lab-n1");
        let other_agent = args("tortie agent --node n1 --host-netns /run/netns/lab2-n1");
        let etcd = args("/usr/bin/etcd --name lab --data-dir=/run/tortie/lab/lab/etcd");
        let etcd2 = args("/usr/bin/etcd --data-dir /run/tortie/lab/lab/etcd");
        let other_etcd = args("/usr/bin/etcd --data-dir=/run/tortie/lab/lab2/etcd");
        let editor = args("vim /run/tortie/lab/lab/state.json");
        assert!(names_lab(&plan, &agent));
        assert!(names_lab(&plan, &etcd));
        assert!(names_lab(&plan, &etcd2));
        assert!(!names_lab(&plan, &other_agent));
        assert!(!names_lab(&plan, &other_etcd));
        assert!(!names_lab(&plan, &editor));
    }

    #[test]
    fn this_process_is_alive_and_a_bogus_pid_is_not() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX - 1));
        assert!(cmdline(std::process::id()).is_some_and(|a| !a.is_empty()));
    }

    #[test]
    fn terminating_nothing_is_a_no_op() {
        let (signalled, survivors) = terminate(&BTreeSet::from([u32::MAX - 1]));
        assert!(signalled.is_empty() && survivors.is_empty());
    }
}
