//! Helpers shared by the root tests: running the CLI, lab guards, reachability checks.

use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::{Command, ExitCode};
use std::time::Duration;

use tortie_lab::state::LabState;
use tortie_lab::{Plan, netns, process};

use crate::run_cli;

/// Runs `<this> lab <args>` as a child process with the stand-in CNI plugin; returns success
/// and stdout.
pub fn lab_child(args: &[&str]) -> (bool, String) {
    let exe = std::env::current_exe().expect("exe");
    let out = Command::new(&exe)
        .arg("lab")
        .args(args)
        .env("TORTIE_CNI_BIN", &exe)
        .output()
        .expect("run lab child");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `tortie <args>` where args start with `lab`.
pub fn lab(args: &str) -> ExitCode {
    let mut v = vec!["tortie".to_string()];
    v.extend(args.split_whitespace().map(str::to_string));
    run_cli(&v)
}

pub fn ok(args: &str) {
    assert_eq!(lab(args), ExitCode::SUCCESS, "tortie {args}");
}

/// A lab name unique to this run and test.
pub fn lab_name(suffix: char) -> String {
    format!("tl{}{suffix}", std::process::id() % 1_000_000)
}

/// Runs `down` for the lab when dropped, whatever happened.
pub struct LabGuard(pub Plan);

impl LabGuard {
    pub fn new(suffix: char) -> Self {
        let plan = Plan::new(&lab_name(suffix)).expect("lab name");
        // A leftover from an earlier crashed run with the same PID would make `up` refuse.
        tortie_lab::down(&plan);
        LabGuard(plan)
    }

    pub fn name(&self) -> &str {
        &self.0.lab
    }

    pub fn state(&self) -> LabState {
        LabState::load(&self.0).expect("state")
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let report = tortie_lab::down(&self.0);
        if !report.is_clean() {
            eprintln!("cleanup of {}: {report}", self.0.lab);
        }
    }
}

/// Whether a TCP connection from namespace `from` reaches a listener bound in namespace `to`
/// (the machine has no `ping`; this checks the same path without external tools).
pub fn reachable(from: &str, to: &str, to_ip: &str) -> bool {
    let ip: IpAddr = to_ip.parse().expect("ip");
    let listener = netns::run_in(to, || TcpListener::bind(("::", 0)))
        .expect("enter netns")
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    netns::run_in(from, || {
        TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2)).is_ok()
    })
    .expect("enter netns")
}

pub fn root_links() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

pub fn root_routes_mention(needle: &str) -> bool {
    ["-4", "-6"].iter().any(|fam| {
        let out = Command::new("ip")
            .args([fam, "route", "show", "table", "all"])
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout).contains(needle)
    })
}

/// Asserts that nothing of lab `plan` is left on the machine.
pub fn assert_gone(plan: &Plan) {
    assert!(
        netns::list_with_prefix(&plan.prefix()).is_empty(),
        "namespaces left: {:?}",
        netns::list_with_prefix(&plan.prefix())
    );
    assert!(!plan.state_dir().exists(), "state dir left");
    assert!(process::scan_lab(plan).is_empty(), "processes left");
}
