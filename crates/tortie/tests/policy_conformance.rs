//! The policy conformance suite (`conformance/policy/`): namespaces x, y, z with pods a, b, c
//! serving 80 and 81 over TCP and UDP; each case applies policies (and changes labels, and
//! deletes) step by step and states the whole truth table after every step.
//!
//! - `offline_matrix_matches_every_case`: `tortie policy matrix -f` on the cluster and the
//!   step's resources, compared with the table. Runs everywhere.
//! - `invalid_policies_are_rejected_with_the_field`: every file in `invalid/` fails
//!   `tortie validate` and `tortie policy matrix -f`, naming the field.
//! - `lab_matrix_matches_every_case`: the same cases in a real 3-node lab — policies applied
//!   to the datastore, enforced by the agents' nftables, probed with real packets through
//!   `tortie lab matrix`; after every step the IPv6 matrix of the kernel is also compared
//!   with `tortie policy matrix --ipv6` on the lab's datastore. Needs root; with `CI=true` it
//!   must not skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{Value, json};

mod support {
    pub mod lab;
}

use support::lab::{Lab, must, root_or_skip, run_tortie};
const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PORT_PROTOS: [&str; 4] = ["80/tcp", "81/tcp", "80/udp", "81/udp"];

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/policy")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    #[allow(dead_code, reason = "documentation for readers of the case")]
    reference: String,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Step {
    #[serde(default)]
    apply: Option<String>,
    #[serde(default)]
    delete: Option<String>,
    #[serde(default)]
    pod_labels: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    expect: Vec<Expect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    ports: Vec<String>,
    grid: String,
}

type Matrix = BTreeMap<String, BTreeMap<String, BTreeMap<String, bool>>>;

fn load_cases() -> Vec<(String, Case)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("conformance/policy exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let cases: Vec<(String, Case)> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read case");
            let case: Case =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f.file_stem().unwrap().to_string_lossy().into_owned(), case)
        })
        .collect();
    assert!(
        cases.len() >= 40,
        "expected dozens of cases, found {}",
        cases.len()
    );
    cases
}

/// The expected matrix of a step, checked for completeness.
fn expected(name: &str, step: usize, s: &Step) -> Matrix {
    let pods: Vec<String> = NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect();
    let mut m = Matrix::new();
    for e in &s.expect {
        let mut lines = e.grid.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines
            .next()
            .expect("grid header")
            .split_whitespace()
            .collect();
        assert_eq!(header, pods, "{name} step {step}: grid columns");
        let mut grid = BTreeMap::new();
        for line in lines {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells.len(), 10, "{name} step {step}: row {line:?}");
            let row: BTreeMap<String, bool> = pods
                .iter()
                .zip(&cells[1..])
                .map(|(to, c)| match *c {
                    "." => (to.clone(), true),
                    "X" => (to.clone(), false),
                    other => panic!("{name} step {step}: cell {other:?}"),
                })
                .collect();
            grid.insert(cells[0].to_string(), row);
        }
        assert_eq!(grid.keys().cloned().collect::<Vec<_>>(), {
            let mut p = pods.clone();
            p.sort();
            p
        });
        for pp in &e.ports {
            assert!(PORT_PROTOS.contains(&pp.as_str()), "{name}: port {pp}");
            assert!(
                m.insert(pp.clone(), grid.clone()).is_none(),
                "{name} step {step}: {pp} twice"
            );
        }
    }
    assert_eq!(m.len(), 4, "{name} step {step}: every port/protocol once");
    m
}

fn diff(want: &Matrix, got: &Matrix) -> Vec<String> {
    let mut out = Vec::new();
    for (pp, rows) in want {
        for (from, cols) in rows {
            for (to, w) in cols {
                let g = got
                    .get(pp)
                    .and_then(|r| r.get(from))
                    .and_then(|c| c.get(to));
                if g != Some(w) {
                    out.push(format!(
                        "{pp} {from} -> {to}: want {}, got {}",
                        if *w { "allowed" } else { "denied" },
                        match g {
                            Some(true) => "allowed",
                            Some(false) => "denied",
                            None => "missing",
                        }
                    ));
                }
            }
        }
    }
    out
}

/// Labels of the base cluster, changed by steps.
#[derive(Debug, Clone)]
struct Cluster {
    ns_labels: BTreeMap<String, BTreeMap<String, String>>,
    pod_labels: BTreeMap<String, BTreeMap<String, String>>,
}

fn pod_ip(ns: &str, pod: &str) -> String {
    let n = 1 + NAMESPACES.iter().position(|x| *x == ns).unwrap();
    let h = 10 + PODS.iter().position(|x| *x == pod).unwrap();
    format!("10.244.{n}.{h}")
}

/// The pod's IPv6 address in the lab (the offline cluster is IPv4 only).
fn pod_ip6(ns: &str, pod: &str) -> String {
    let n = 1 + NAMESPACES.iter().position(|x| *x == ns).unwrap();
    let h = 10 + PODS.iter().position(|x| *x == pod).unwrap();
    format!("fd00:10:244:{n}::{h}")
}

impl Cluster {
    fn base() -> Cluster {
        let mut ns_labels = BTreeMap::new();
        let mut pod_labels = BTreeMap::new();
        for ns in NAMESPACES {
            ns_labels.insert(
                ns.to_string(),
                BTreeMap::from([
                    ("ns".to_string(), ns.to_string()),
                    ("kubernetes.io/metadata.name".to_string(), ns.to_string()),
                ]),
            );
            for p in PODS {
                pod_labels.insert(
                    format!("{ns}/{p}"),
                    BTreeMap::from([("pod".to_string(), p.to_string())]),
                );
            }
        }
        Cluster {
            ns_labels,
            pod_labels,
        }
    }

    fn namespace(&self, ns: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": ns, "labels": self.ns_labels[ns]}})
    }

    fn service_accounts(ns: &str) -> Vec<Value> {
        PODS.iter()
            .map(|p| {
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": format!("sa-{p}"), "namespace": ns, "labels": {"sa": p}}})
            })
            .collect()
    }

    /// The offline documents as one `kind: List` JSON file.
    fn list_json(&self) -> String {
        json!({"apiVersion": "v1", "kind": "List", "items": self.offline_docs()}).to_string()
    }

    /// Everything offline evaluation needs: namespaces, service accounts and pods.
    fn offline_docs(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for ns in NAMESPACES {
            out.push(self.namespace(ns));
            out.extend(Self::service_accounts(ns));
            for p in PODS {
                let ports: Vec<Value> = PORT_PROTOS
                    .iter()
                    .map(|pp| {
                        let (port, proto) = pp.split_once('/').unwrap();
                        json!({"name": format!("serve-{port}-{proto}"),
                               "containerPort": port.parse::<u16>().unwrap(),
                               "protocol": proto.to_uppercase()})
                    })
                    .collect();
                out.push(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": p, "namespace": ns,
                                 "labels": self.pod_labels[&format!("{ns}/{p}")]},
                    "spec": {"serviceAccountName": format!("sa-{p}"),
                             "containers": [{"name": "main", "ports": ports}]},
                    "status": {"podIP": pod_ip(ns, p)}
                }));
            }
        }
        out
    }
}

/// `(kind, namespace, name)` of every document in a YAML text.
fn doc_keys(text: &str) -> Vec<(String, String, String)> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("case YAML parses")
        .into_iter()
        .filter(|d| !d.is_null())
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_string(),
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn offline_matrix_matches_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, case) in load_cases() {
        let mut cluster = Cluster::base();
        // Applied documents by (kind, ns, name), as YAML texts.
        let mut applied: BTreeMap<(String, String, String), String> = BTreeMap::new();
        for (i, step) in case.steps.iter().enumerate() {
            for (ns, l) in &step.namespace_labels {
                cluster.ns_labels.insert(ns.clone(), l.clone());
            }
            for (pod, l) in &step.pod_labels {
                cluster.pod_labels.insert(pod.clone(), l.clone());
            }
            if let Some(d) = &step.delete {
                for k in doc_keys(d) {
                    assert!(
                        applied.remove(&k).is_some(),
                        "{name}: deletes {k:?} it never applied"
                    );
                }
            }
            if let Some(a) = &step.apply {
                for (k, doc) in doc_keys(a).into_iter().zip(split_docs(a)) {
                    applied.insert(k, doc);
                }
            }
            let files = dir.path().join(format!("{name}-{i}"));
            std::fs::create_dir_all(&files).unwrap();
            std::fs::write(files.join("cluster.json"), cluster.list_json()).unwrap();
            std::fs::write(
                files.join("policies.yaml"),
                applied
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n---\n"),
            )
            .unwrap();
            let mut args = vec![
                "policy",
                "matrix",
                "-o",
                "json",
                "--ports",
                "80,81",
                "--protocols",
                "tcp,udp",
                "-f",
            ];
            let c = files.join("cluster.json");
            let p = files.join("policies.yaml");
            args.push(c.to_str().unwrap());
            if !applied.is_empty() {
                args.push("-f");
                args.push(p.to_str().unwrap());
            }
            let out = run_tortie(&args, &[], None);
            if !out.status.success() {
                failures.push(format!(
                    "{name} step {i}: tortie policy matrix failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
                continue;
            }
            let got: Matrix = serde_json::from_slice(&out.stdout).expect("matrix json");
            let d = diff(&expected(&name, i, step), &got);
            checked += 1;
            if !d.is_empty() {
                failures.push(format!(
                    "{name} step {i} ({}):\n    {}",
                    case.description,
                    d.join("\n    ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 60, "only {checked} steps checked");
}

/// The documents of a multi-document YAML text, each as its own text.
fn split_docs(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            out.push(String::new());
        } else {
            let cur = out.last_mut().unwrap();
            cur.push_str(line);
            cur.push('\n');
        }
    }
    out.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    out
}

#[test]
fn invalid_policies_are_rejected_with_the_field() {
    let dir = cases_dir().join("invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "invalid inputs: {}", files.len());
    let tmp = tempfile::tempdir().unwrap();
    let cluster = tmp.path().join("cluster.json");
    std::fs::write(&cluster, Cluster::base().list_json()).unwrap();
    let store = format!("file:{}", tmp.path().join("store.db").display());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let want = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect-error:"))
            .unwrap_or_else(|| panic!("{}: no expect-error line", f.display()))
            .trim()
            .to_string();
        let path = f.to_str().unwrap();
        for args in [
            vec!["validate", "-f", path],
            vec![
                "policy",
                "matrix",
                "-f",
                cluster.to_str().unwrap(),
                "-f",
                path,
            ],
            vec!["apply", "--datastore", &store, "-f", path],
        ] {
            let out = run_tortie(&args, &[], None);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} accepted {}", f.display());
            assert!(
                err.contains(&want),
                "{args:?} on {}: error does not name {want:?}:\n{err}",
                f.display()
            );
        }
    }
    // Nothing was written by the rejected applies.
    let out = must(
        run_tortie(
            &[
                "get",
                "--datastore",
                &store,
                "networkpolicies",
                "-A",
                "-o",
                "json",
            ],
            &[],
            None,
        ),
        "get",
    );
    assert!(
        !out.contains("\"name\""),
        "a rejected policy was stored:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// The kernel side.

/// `lab matrix` over 80/81 TCP/UDP, as JSON (`extra`: `--ipv6`).
fn lab_matrix_with(lab: &Lab, extra: &[&str]) -> Matrix {
    let mut args = vec![
        "lab",
        "matrix",
        "-o",
        "json",
        "--ports",
        "80,81",
        "--protocols",
        "tcp,udp",
        "--timeout-ms",
        "300",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&lab.ok(&args)).expect("lab matrix json")
}

fn lab_matrix(lab: &Lab) -> Matrix {
    lab_matrix_with(lab, &[])
}

/// Over IPv6 the cases' expectations do not all hold (their ipBlocks are IPv4), so the
/// kernel is compared with the model instead: `lab matrix --ipv6` against `policy matrix
/// --ipv6` on the lab's datastore.
fn ipv6_model_vs_kernel(lab: &Lab) -> Vec<String> {
    let out = lab.ok(&[
        "policy",
        "matrix",
        "-o",
        "json",
        "--ports",
        "80,81",
        "--protocols",
        "tcp,udp",
        "--ipv6",
    ]);
    let model: Matrix = serde_json::from_str(&out).expect("policy matrix json");
    diff(&model, &lab_matrix_with(lab, &["--ipv6"]))
}

/// Sets a pod's labels wholesale through the Pod record, as a kubelet-backed API would.
fn set_pod_labels(lab: &Lab, pod: &str, labels: &BTreeMap<String, String>) {
    let (ns, name) = pod.split_once('/').unwrap();
    let got = lab.ok(&["get", "pod", name, "-n", ns, "-o", "json"]);
    let mut v: Value = serde_json::from_str(&got).expect("pod json");
    v["metadata"]["labels"] = json!(labels);
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    lab.ok_stdin(&["apply", "-f", "-"], &v.to_string());
}

#[test]
fn lab_matrix_matches_every_case() {
    if !root_or_skip("policy conformance in the lab") {
        return;
    }
    let lab = Lab::up("tpc", 3);
    let base = Cluster::base();
    let mut setup: Vec<Value> = Vec::new();
    for ns in NAMESPACES {
        setup.push(base.namespace(ns));
        setup.extend(Cluster::service_accounts(ns));
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": setup});
    lab.ok_stdin(&["apply", "-f", "-"], &list.to_string());
    for (i, ns) in NAMESPACES.iter().enumerate() {
        for (j, p) in PODS.iter().enumerate() {
            let node = format!("n{}", 1 + (i + j) % 3);
            lab.ok(&[
                "lab",
                "pod",
                "add",
                &format!("{ns}/{p}"),
                "--node",
                &node,
                "--labels",
                &format!("pod={p}"),
                "--ip",
                &format!("{},{}", pod_ip(ns, p), pod_ip6(ns, p)),
                "--serve",
                "80/tcp,81/tcp,80/udp,81/udp",
                "--service-account",
                &format!("sa-{p}"),
            ]);
        }
    }
    let mut n = 0;
    lab.wait_synced(n);
    let everything = lab_matrix(&lab);
    let all_allowed: Vec<String> = diff(&all_allowed_matrix(), &everything);
    assert!(
        all_allowed.is_empty(),
        "before any policy:\n{}",
        all_allowed.join("\n")
    );

    let only = std::env::var("TORTIE_CONFORMANCE_ONLY").ok();
    let mut failures = Vec::new();
    for (case_name, case) in load_cases() {
        if only.as_deref().is_some_and(|o| !case_name.starts_with(o)) {
            continue;
        }
        let mut applied: BTreeMap<(String, String, String), String> = BTreeMap::new();
        let mut touched_pods = Vec::new();
        let mut touched_ns = Vec::new();
        for (i, step) in case.steps.iter().enumerate() {
            for (ns, l) in &step.namespace_labels {
                let mut c = base.clone();
                c.ns_labels.insert(ns.clone(), l.clone());
                lab.ok_stdin(&["apply", "-f", "-"], &c.namespace(ns).to_string());
                touched_ns.push(ns.clone());
            }
            for (pod, l) in &step.pod_labels {
                set_pod_labels(&lab, pod, l);
                touched_pods.push(pod.clone());
            }
            if let Some(d) = &step.delete {
                lab.ok_stdin(&["delete", "-f", "-"], d);
                for k in doc_keys(d) {
                    applied.remove(&k);
                }
            }
            if let Some(a) = &step.apply {
                lab.ok_stdin(&["apply", "-f", "-"], a);
                for (k, doc) in doc_keys(a).into_iter().zip(split_docs(a)) {
                    applied.insert(k, doc);
                }
            }
            n += 1;
            lab.wait_synced(n);
            let got = lab_matrix(&lab);
            let d = diff(&expected(&case_name, i, step), &got);
            if !d.is_empty() {
                failures.push(format!(
                    "{case_name} step {i} ({}):\n    {}",
                    case.description,
                    d.join("\n    ")
                ));
            }
            let d6 = ipv6_model_vs_kernel(&lab);
            if !d6.is_empty() {
                failures.push(format!(
                    "{case_name} step {i} over IPv6, kernel vs model ({}):\n    {}",
                    case.description,
                    d6.join("\n    ")
                ));
            }
        }
        // Back to the base cluster for the next case.
        if !applied.is_empty() {
            lab.ok_stdin(
                &["delete", "-f", "-"],
                &applied
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n---\n"),
            );
        }
        for ns in touched_ns {
            lab.ok_stdin(&["apply", "-f", "-"], &base.namespace(&ns).to_string());
        }
        for pod in touched_pods {
            set_pod_labels(&lab, &pod, &base.pod_labels[&pod]);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    icmp_and_bad_input(&lab, n + 1);
}

/// One ping from a pod's namespace (bounded: one echo, 1 s).
fn ping(lab: &Lab, from: &str, to: &str) -> bool {
    let state = lab.state();
    let netns = state["pods"][from]["netns"]
        .as_str()
        .expect("pod netns")
        .to_string();
    let ip = state["pods"][to]["ips"][0]
        .as_str()
        .expect("pod ip")
        .to_string();
    Command::new("ip")
        .args([
            "netns", "exec", &netns, "ping", "-n", "-q", "-c", "1", "-W", "1", &ip,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run ping")
        .success()
}

/// ICMP type matching in the kernel and in `policy explain`; then a bad policy is refused and
/// the running rules stay as they were.
fn icmp_and_bad_input(lab: &Lab, n: usize) {
    let policy = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: no-ping-from-x, namespace: \"y\"}
spec:
  selector: all()
  ingress:
  - action: Deny
    protocol: ICMP
    icmp: {type: 8}
    source: {namespaceSelector: ns == 'x'}
  - action: Allow
";
    lab.ok_stdin(&["apply", "-f", "-"], policy);
    lab.wait_synced(n);
    assert!(
        !ping(lab, "x/a", "y/a"),
        "echo request from x must be denied"
    );
    assert!(ping(lab, "z/a", "y/a"), "echo request from z must pass");
    assert!(ping(lab, "y/b", "x/a"), "x is not policed");
    let tcp = lab.ok(&[
        "lab",
        "probe",
        "x/a",
        "y/a",
        "--port",
        "80",
        "--timeout-ms",
        "500",
    ]);
    assert_eq!(tcp.trim(), "allowed", "only ICMP is denied");
    let explained = lab.ok(&[
        "policy",
        "explain",
        "--from",
        "x/a",
        "--to",
        "y/a",
        "--protocol",
        "icmp",
        "--icmp-type",
        "8",
        "-o",
        "json",
    ]);
    let e: Value = serde_json::from_str(&explained).expect("explain json");
    assert_eq!(e["outcome"], "deny", "{e}");
    assert_eq!(e["ingress"]["policy"]["name"], "no-ping-from-x", "{e}");
    assert_eq!(e["ingress"]["rule"], 0, "{e}");

    // A bad policy is refused with the field named, and nothing changes in the kernel.
    let bad = cases_dir().join("invalid/03-ipblock-except-outside-cidr.yaml");
    let out = run_tortie(&["apply", "-f", bad.to_str().unwrap()], &lab.envs(), None);
    assert!(!out.status.success(), "bad policy accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("except"), "error names the field: {err}");
    lab.wait_synced(n + 1);
    assert!(
        !ping(lab, "x/a", "y/a"),
        "rules changed after a refused apply"
    );
    assert!(
        ping(lab, "z/a", "y/a"),
        "rules changed after a refused apply"
    );
    lab.ok_stdin(
        &["delete", "-f", "-"],
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: no-ping-from-x, namespace: \"y\"}\n",
    );
}

fn all_allowed_matrix() -> Matrix {
    let pods: Vec<String> = NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect();
    PORT_PROTOS
        .iter()
        .map(|pp| {
            let rows = pods
                .iter()
                .map(|f| (f.clone(), pods.iter().map(|t| (t.clone(), true)).collect()))
                .collect();
            (pp.to_string(), rows)
        })
        .collect()
}
