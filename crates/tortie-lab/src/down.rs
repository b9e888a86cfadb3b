//! `lab down`: removes everything a lab made, from what the state file recorded and, because
//! the state file may be missing or corrupt after a crash, from what the machine shows:
//! processes inside the lab's namespaces or naming them, and namespaces named `L-...`.
//!
//! Order: processes first (so namespaces are not kept alive), then namespaces (pods, hosts,
//! nodes, the fabric last), then the state dir. Every step runs even if an earlier one failed;
//! every failure is reported; something already gone counts as removed. Idempotent.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::state::{LabState, Plan, StateError};
use crate::{netns, process, topology};

/// What `down` removed and what it could not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DownReport {
    pub lab: String,
    /// PIDs that were running and were ended.
    pub processes: Vec<u32>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// The state dir, if it existed and was removed.
    pub state_dir: Option<PathBuf>,
    /// Why the state file could not be used, if it could not (the sweep ran anyway).
    pub state_note: Option<String>,
    pub errors: Vec<String>,
}

impl DownReport {
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn removed_nothing(&self) -> bool {
        self.processes.is_empty() && self.namespaces.is_empty() && self.state_dir.is_none()
    }
}

impl fmt::Display for DownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(note) = &self.state_note {
            writeln!(f, "note: {note}; removing the lab by its names instead")?;
        }
        if self.removed_nothing() && self.errors.is_empty() {
            return writeln!(f, "lab {}: nothing to remove", self.lab);
        }
        writeln!(f, "lab {}:", self.lab)?;
        if !self.processes.is_empty() {
            let pids: Vec<String> = self.processes.iter().map(ToString::to_string).collect();
            writeln!(f, "  ended {} process(es): {}", pids.len(), pids.join(" "))?;
        }
        if !self.namespaces.is_empty() {
            writeln!(
                f,
                "  deleted {} network namespace(s): {}",
                self.namespaces.len(),
                self.namespaces.join(" ")
            )?;
        }
        if let Some(dir) = &self.state_dir {
            writeln!(f, "  removed {}", dir.display())?;
        }
        for e in &self.errors {
            writeln!(f, "  error: {e}")?;
        }
        Ok(())
    }
}

/// Deletion order: pods, hosts, nodes, then the fabric that links them.
fn rank(plan: &Plan, name: &str) -> u8 {
    let rest = name.strip_prefix(&plan.prefix()).unwrap_or(name);
    if name == plan.fabric_netns() {
        3
    } else if rest.starts_with('n') {
        2
    } else if rest.starts_with("h-") {
        1
    } else {
        0
    }
}

/// Removes lab `plan`; never fails part-way, see the module docs.
pub fn down(plan: &Plan) -> DownReport {
    let mut report = DownReport {
        lab: plan.lab.clone(),
        ..DownReport::default()
    };
    let mut pids = BTreeSet::new();
    match LabState::load(plan) {
        Ok(state) => pids.extend(
            state
                .processes()
                .iter()
                .filter(|r| process::still_ours(r))
                .map(|r| r.pid),
        ),
        Err(StateError::Missing { .. }) if !plan.state_dir().exists() => {}
        Err(StateError::Missing { .. }) => {
            report.state_note = Some(format!("{} is missing", plan.state_file().display()));
        }
        Err(e) => report.state_note = Some(e.to_string()),
    }
    pids.extend(process::scan_lab(plan));
    let (ended, survivors) = process::terminate(&pids);
    report.processes = ended;
    for pid in survivors {
        report
            .errors
            .push(format!("process {pid} is still running after SIGKILL"));
    }

    let mut names = netns::list_with_prefix(&plan.prefix());
    names.sort_by_key(|n| (rank(plan, n), n.clone()));
    for name in names {
        match topology::run_one(&topology::delete_netns_step(&name)) {
            Ok(()) => report.namespaces.push(name),
            Err(_) if !netns::exists(&name) => report.namespaces.push(name),
            Err(e) => report.errors.push(e.to_string()),
        }
    }

    let dir = plan.state_dir();
    if dir.exists() {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => report.state_dir = Some(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report
                .errors
                .push(format!("cannot remove {}: {e}", dir.display())),
        }
    }
    report
}

/// `lab down`: prints the report; exit 1 if anything could not be removed.
pub fn down_cmd(plan: &Plan) -> ExitCode {
    let report = down(plan);
    print!("{report}");
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_go_pods_first_fabric_last() {
        let plan = Plan::new("lab").unwrap();
        let mut names = vec![
            plan.fabric_netns(),
            plan.node_netns(1),
            plan.host_netns("ext"),
            plan.pod_netns("x", "a"),
            plan.node_netns(2),
        ];
        names.sort_by_key(|n| (rank(&plan, n), n.clone()));
        let p = plan.pod_netns("x", "a");
        assert_eq!(
            names,
            [p.as_str(), "lab-h-ext", "lab-n1", "lab-n2", "lab-fab"]
        );
    }

    #[test]
    fn report_wording() {
        let mut r = DownReport {
            lab: "lab".into(),
            ..DownReport::default()
        };
        assert_eq!(r.to_string(), "lab lab: nothing to remove\n");
        r.processes = vec![10, 11];
        r.namespaces = vec!["lab-n1".into(), "lab-fab".into()];
        r.state_dir = Some("/run/tortie/lab/lab".into());
        assert_eq!(
            r.to_string(),
            "lab lab:\n  ended 2 process(es): 10 11\n  deleted 2 network namespace(s): lab-n1 lab-fab\n  removed /run/tortie/lab/lab\n"
        );
    }
}
