//! End-to-end tests of the `tortie` binary against real datastores: the embedded file store
//! and a real etcd started by the test.

#[path = "../../tortie-store/tests/support/etcd_server.rs"]
mod etcd_server;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Env {
    dir: tempfile::TempDir,
    datastore: String,
}

impl Env {
    fn file() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let datastore = format!("file:{}", dir.path().join("store.db").display());
        Env { dir, datastore }
    }

    fn with_datastore(datastore: String) -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
            datastore,
        }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write manifest");
        p.display().to_string()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, None)
    }

    fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tortie"));
        cmd.args(args)
            .env("TORTIE_DATASTORE", &self.datastore)
            .env_remove("DATASTORE_TYPE")
            .env_remove("ETCD_ENDPOINTS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tortie");
        if let Some(s) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(s.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("wait tortie")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tortie {args:?} failed ({:?}):\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    fn fail(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "tortie {args:?}: expected exit {code}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).expect("utf8")
    }
}

const POOLS: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
  labels: {env: prod}
spec:
  cidr: 10.244.0.0/16
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-b
spec:
  cidr: fd00:10:244::/56
  blockSize: 120
";

const POLICIES: &str = "apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: shop}
spec:
  tier: security
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [80, '8000:8080']}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec: {podSelector: {}}
";

/// Every CLI scenario, run against one datastore.
fn scenario(env: &Env) {
    let pools = env.write("pools.yaml", POOLS);
    let out = env.ok(&["apply", "-f", &pools]);
    assert!(
        out.contains("Successfully applied 2 'IPPool' resource(s)"),
        "{out}"
    );

    // Tables follow calicoctl's layout.
    let table = env.ok(&["get", "ippools"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "CIDR", "SELECTOR"]
    );
    assert!(
        lines[1].starts_with("pool-a")
            && lines[1].contains("10.244.0.0/16")
            && lines[1].contains("all()")
    );

    // -o yaml round-trips: what get prints, apply accepts unchanged.
    let yaml = env.ok(&["get", "ippool", "pool-b", "-o", "yaml"]);
    assert!(
        yaml.contains("blockSize: 120") && yaml.contains("resourceVersion"),
        "{yaml}"
    );
    let again = env.write("again.yaml", &yaml);
    env.ok(&["apply", "-f", &again]);
    let listed = env.ok(&["get", "ippools", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(v["kind"], "IPPoolList");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2));

    // Selector filtering with -l.
    let filtered = env.ok(&["get", "ippools", "-l", "env == 'prod'"]);
    assert!(
        filtered.contains("pool-a") && !filtered.contains("pool-b"),
        "{filtered}"
    );

    // get -f shows what a file names.
    let named = env.ok(&["get", "-f", &pools]);
    assert!(named.contains("pool-a") && named.contains("pool-b"));

    // create fails when present; replace fails when absent.
    let err = env.fail(&["create", "-f", &pools], 1);
    assert!(err.contains("already exists"), "{err}");
    env.ok(&["create", "--skip-exists", "-f", &pools]);
    let missing = env.write("missing.yaml", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: nope}\nspec: {cidr: 10.9.0.0/16}\n");
    let err = env.fail(&["replace", "-f", &missing], 1);
    assert!(err.contains("does not exist"), "{err}");

    // Immutable fields.
    let changed = env.write(
        "changed.yaml",
        &POOLS.replace("10.244.0.0/16", "10.245.0.0/16"),
    );
    let err = env.fail(&["apply", "-f", &changed], 1);
    assert!(
        err.contains("spec.cidr") && err.contains("immutable"),
        "{err}"
    );

    // Policies: kinds by alias; the two NetworkPolicy kinds are told apart.
    let pol = env.write("pol.yaml", POLICIES);
    env.ok(&["apply", "-f", &pol]);
    let np = env.ok(&["get", "networkpolicy", "-n", "shop"]);
    assert!(np.contains("allow-web") && !np.contains("deny-all"), "{np}");
    let knp = env.ok(&["get", "networkpolicy.networking.k8s.io", "-n", "shop"]);
    assert!(
        knp.contains("deny-all") && !knp.contains("allow-web"),
        "{knp}"
    );
    let all = env.ok(&["get", "NetworkPolicies", "-A", "-o", "wide"]);
    assert!(
        all.starts_with("NAMESPACE") && all.contains("security"),
        "{all}"
    );
    let tiers = env.ok(&["get", "tiers"]);
    assert!(
        tiers.contains("default") && tiers.contains("security"),
        "{tiers}"
    );

    // Labels.
    env.ok(&["label", "ippool", "pool-b", "team=net"]);
    let err = env.fail(&["label", "ippool", "pool-b", "team=other"], 1);
    assert!(err.contains("--overwrite"), "{err}");
    env.ok(&["label", "ippool", "pool-b", "team=other", "--overwrite"]);
    assert!(
        env.ok(&["get", "ippools", "-l", "team == 'other'"])
            .contains("pool-b")
    );
    env.ok(&["label", "ippool", "pool-b", "team-"]);
    assert!(
        !env.ok(&["get", "ippools", "-l", "has(team)"])
            .contains("pool-b")
    );

    // Stale resourceVersion: CAS conflict, nothing changes.
    let stale = env.write("stale.yaml", &yaml);
    let err = env.fail(&["replace", "-f", &stale], 1);
    assert!(err.contains("conflict"), "{err}");

    // Delete by name and by file; skip-not-exists.
    env.ok(&["delete", "ippool", "pool-a"]);
    let err = env.fail(&["delete", "ippool", "pool-a"], 1);
    assert!(err.contains("does not exist"), "{err}");
    env.ok(&["delete", "-s", "ippool", "pool-a"]);
    env.ok(&["delete", "-f", &pol]);
    assert!(
        !env.ok(&["get", "networkpolicy", "-A"])
            .contains("allow-web")
    );
}

#[test]
fn embedded_store_end_to_end() {
    scenario(&Env::file());
}

#[tokio::test]
async fn etcd_store_end_to_end() {
    let Some(etcd) = etcd_server::start_or_skip("etcd_store_end_to_end").await else {
        return;
    };
    let url = etcd.url().replace("http://", "etcd://");
    let env = Env::with_datastore(url);
    tokio::task::spawn_blocking(move || scenario(&env))
        .await
        .expect("scenario");
    drop(etcd);
}

fn snapshot(env: &Env) -> String {
    let mut out = String::new();
    for kind in ["ippools", "tiers", "gnp", "networkpolicies"] {
        out.push_str(&env.ok(&["get", kind, "-A", "-o", "json"]));
    }
    out
}

#[test]
fn bad_input_is_rejected_and_changes_nothing() {
    let env = Env::file();
    env.ok(&["apply", "-f", &env.write("pools.yaml", POOLS)]);
    let before = snapshot(&env);
    let cases = [
        (
            "malformed.yaml",
            "apiVersion: projectcalico.org/v3\nkind: [IPPool\n",
            "invalid YAML",
        ),
        (
            "kind.yaml",
            "apiVersion: projectcalico.org/v3\nkind: IPPoool\nmetadata: {name: x}\n",
            "unknown kind",
        ),
        (
            "api.yaml",
            "apiVersion: projectcalico.org/v1\nkind: IPPool\nmetadata: {name: x}\n",
            "apiVersion",
        ),
        (
            "cidr.yaml",
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: x}\nspec: {cidr: 10.0.0.0/40}\n",
            "spec.cidr",
        ),
        (
            "sel.yaml",
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: x}\nspec: {selector: 'a == \"b\" &&'}\n",
            "spec.selector",
        ),
        (
            "tier.yaml",
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: x}\nspec: {tier: missing}\n",
            "spec.tier",
        ),
    ];
    for (name, text, expect) in cases {
        let err = env.fail(&["apply", "-f", &env.write(name, text)], 1);
        assert!(err.contains(expect), "{name}: {err}");
    }
    // A multi-document file with one bad document applies nothing.
    let mixed = format!(
        "{POOLS}---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool-c}}\nspec: {{cidr: 10.0.0.0/99}}\n"
    );
    let err = env.fail(&["apply", "-f", &env.write("mixed.yaml", &mixed)], 1);
    assert!(
        err.contains("document 2") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(
        snapshot(&env),
        before,
        "the datastore changed after rejected input"
    );
}

#[test]
fn partial_apply_reports_what_was_and_was_not_applied() {
    let env = Env::file();
    let one = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-b}\nspec: {cidr: 10.8.0.0/16}\n";
    env.ok(&["create", "-f", &env.write("b.yaml", one)]);
    let err = env.fail(&["create", "-f", &env.write("both.yaml", POOLS)], 1);
    assert!(
        err.contains("Partial success") && err.contains("pool-a"),
        "{err}"
    );
    assert!(
        err.contains("Not created") && err.contains("IPPool pool-b"),
        "{err}"
    );
}

#[test]
fn stdin_and_directories() {
    let env = Env::file();
    let out = env.run_stdin(&["apply", "-f", "-"], Some(POOLS));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = env.dir.path().join("manifests");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("a.yaml"), POLICIES).expect("write");
    std::fs::write(dir.join("ignored.txt"), "not yaml").expect("write");
    env.ok(&["apply", "-f", &dir.display().to_string()]);
    assert!(env.ok(&["get", "tier", "security"]).contains("security"));
}

#[test]
fn unreachable_datastore_fails_fast() {
    // Nothing listens on port 1 of loopback.
    let env = Env::with_datastore("etcd://127.0.0.1:1".into());
    let start = Instant::now();
    let err = env.fail(&["get", "ippools"], 1);
    assert!(
        err.contains("unavailable") || err.contains("did not answer"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    let env = Env::with_datastore("file:/proc/no-such-dir/store.db".into());
    let err = env.fail(&["get", "ippools"], 1);
    assert!(err.contains("store.db"), "{err}");
    let env = Env::with_datastore("bogus://x".into());
    let err = env.fail(&["get", "ippools"], 1);
    assert!(err.contains("bogus://x"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::file();
    env.fail(&["get", "--bogus-flag"], 2);
    env.fail(&["frobnicate"], 2);
    env.fail(&["apply"], 2);
}

#[test]
fn selector_check() {
    let env = Env::file();
    let out = env.ok(&[
        "selector",
        "check",
        "b == 'x' && a in {'z', 'y'}",
        "--labels",
        "a=y,b=x",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["canonical"], "(b == \"x\" && a in {\"y\", \"z\"})");
    assert_eq!(v["matches"], true);
    let out = env.ok(&[
        "selector",
        "check",
        "env != 'prod'",
        "--labels",
        "{\"team\": \"a\"}",
        "-o",
        "json",
    ]);
    assert!(out.contains("\"matches\":true"), "{out}");
    let err = env.fail(&["selector", "check", "app == 'a' &&"], 1);
    assert!(err.contains("position"), "{err}");
}

#[test]
fn unknown_kind_is_named() {
    let env = Env::file();
    let err = env.fail(&["get", "ipoolz"], 1);
    assert!(err.contains("ipoolz"), "{err}");
}

#[tokio::test]
async fn ipam_show_check_and_release() {
    let env = Env::file();
    env.ok(&["apply", "-f", &env.write("pools.yaml", POOLS)]);
    let url = tortie_store::DatastoreUrl::parse(&env.datastore).expect("url");
    let store = tortie_store::connect(&url).await.expect("open");
    let ipam = tortie_ipam::Ipam::new(store);
    let req = tortie_ipam::AutoAssignRequest {
        num_v4: 3,
        handle: "k8s-pod-network.c1".into(),
        hostname: "node-1".into(),
        ..Default::default()
    };
    let got = ipam.auto_assign(&req).await.expect("allocate");
    let ip = got.ipv4[0].addr().to_string();
    let env = std::sync::Arc::new(env);
    let e = env.clone();
    let ip2 = ip.clone();
    tokio::task::spawn_blocking(move || {
        let show = e.ok(&["ipam", "show", "--show-blocks"]);
        assert!(
            show.contains("GROUPING") && show.contains("IP Pool") && show.contains("Block"),
            "{show}"
        );
        assert!(show.contains("3 (0%)"), "{show}");
        let one = e.ok(&["ipam", "show", "--ip", &ip2]);
        assert!(
            one.contains("is in use") && one.contains("k8s-pod-network.c1"),
            "{one}"
        );
        let cfg = e.ok(&["ipam", "show", "--show-configuration"]);
        assert!(
            cfg.contains("MaxBlocksPerHost") && cfg.contains("20"),
            "{cfg}"
        );
        let check = e.ok(&["ipam", "check"]);
        assert!(check.contains("found 0 problems"), "{check}");
        // Releasing by address also updates the handle, so the records stay consistent.
        let rel = e.ok(&["ipam", "release", "--ip", &ip2]);
        assert!(rel.contains("Successfully released"), "{rel}");
        assert!(
            e.ok(&["ipam", "show", "--ip", &ip2])
                .contains("is not assigned")
        );
    })
    .await
    .expect("cli");
    let report = ipam.check().await.expect("check");
    assert!(report.is_clean(), "{report}");
}

/// core/v1 Secrets through apply, create, get and delete: `stringData` is stored as base64
/// `data`, `get` never prints the plain text, a bad value or an immutable Secret's change is
/// refused without writing anything.
#[test]
fn secrets_apply_get_delete() {
    let env = Env::file();
    let secret = |extra: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: bgp-passwords, namespace: calico-system}}\n{extra}"
        )
    };
    let f = env.write(
        "s.yaml",
        &secret("data: {peer-a: cGFzc3dvcmQtYQ==}\nstringData: {mesh: hunter2}\n"),
    );
    let out = env.ok(&["create", "-f", &f]);
    assert!(out.contains("Successfully created 1 'Secret'"), "{out}");
    let err = env.fail(&["create", "-f", &f], 1);
    assert!(err.contains("already exists"), "{err}");

    let table = env.ok(&["get", "secrets", "-n", "calico-system"]);
    assert_eq!(
        table,
        "NAME            TYPE     DATA\nbgp-passwords   Opaque   2\n"
    );
    assert!(
        env.ok(&["get", "secrets"]).lines().count() == 1,
        "namespace default has none"
    );
    let all = env.ok(&["get", "secret", "-A"]);
    assert!(
        all.contains("calico-system   bgp-passwords   Opaque   2"),
        "{all}"
    );
    for format in ["yaml", "json"] {
        let shown = env.ok(&[
            "get",
            "secret",
            "bgp-passwords",
            "-n",
            "calico-system",
            "-o",
            format,
        ]);
        assert!(
            !shown.contains("hunter2") && !shown.contains("stringData"),
            "{format}: {shown}"
        );
        assert!(shown.contains("aHVudGVyMg=="), "{format}: {shown}");
        assert!(shown.contains("cGFzc3dvcmQtYQ=="), "{format}: {shown}");
    }

    // A value that is not base64 is refused, naming the field and key, and changes nothing.
    let before = env.ok(&["get", "secret", "-A", "-o", "json"]);
    let bad = env.write("bad.yaml", &secret("data: {peer-a: 'not base64!'}\n"));
    let err = env.fail(&["apply", "-f", &bad], 1);
    assert!(
        err.contains("field data[peer-a]") && err.contains("not base64"),
        "{err}"
    );
    assert!(!err.contains("not base64!"), "the value is echoed: {err}");
    assert_eq!(env.ok(&["get", "secret", "-A", "-o", "json"]), before);

    // Immutable: the data can no longer change.
    let locked = env.write(
        "locked.yaml",
        &secret("immutable: true\nstringData: {mesh: one}\n"),
    );
    env.ok(&["apply", "-f", &locked]);
    let changed = env.write(
        "changed.yaml",
        &secret("immutable: true\nstringData: {mesh: two}\n"),
    );
    let err = env.fail(&["apply", "-f", &changed], 1);
    assert!(err.contains("immutable"), "{err}");
    let retype = env.write(
        "retype.yaml",
        &secret("type: example.com/other\nimmutable: true\nstringData: {mesh: one}\n"),
    );
    let err = env.fail(&["apply", "-f", &retype], 1);
    assert!(err.contains("field type"), "{err}");

    env.ok(&["delete", "secret", "bgp-passwords", "-n", "calico-system"]);
    let err = env.fail(
        &["get", "secret", "bgp-passwords", "-n", "calico-system"],
        1,
    );
    assert!(err.contains("does not exist"), "{err}");
}
