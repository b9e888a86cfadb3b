//! Root tests of the lab without pods: topology, hosts, the built-in server, crash
//! recovery, agent start-up and etcd.

use std::io::Read;
use std::net::{IpAddr, TcpStream};
use std::process::{Command, ExitCode};
use std::time::Duration;

use tortie_lab::{PortProto, Protocol, netns, probe, process};

use crate::helpers::*;
use crate::run_cli;

pub fn topology_up_status_down() {
    let g = LabGuard::new('a');
    let name = g.name().to_string();
    let links_before = root_links();
    let forwarding = || std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("sysctl");
    let root_forwarding_before = forwarding();
    ok(&format!("lab up --name {name} --nodes 3 --no-agents"));
    let plan = g.0.clone();
    let names = netns::list_with_prefix(&plan.prefix());
    assert_eq!(
        names,
        [
            plan.fabric_netns(),
            plan.node_netns(1),
            plan.node_netns(2),
            plan.node_netns(3)
        ]
    );
    // Underlay reachability both ways, both families.
    let (n1, n2, n3) = (plan.node_netns(1), plan.node_netns(2), plan.node_netns(3));
    assert!(reachable(&n1, &n2, "198.18.0.12"));
    assert!(reachable(&n3, &n1, "198.18.0.11"));
    assert!(reachable(&n2, &n3, "fd00:198:18::13"));
    assert!(
        !reachable(&n1, &n2, "198.18.0.13"),
        "n3 does not hold n2's listener"
    );
    for i in 1..=3 {
        let ns = plan.node_netns(i);
        let fwd = Command::new("ip")
            .args(["netns", "exec", &ns, "cat", "/proc/sys/net/ipv4/ip_forward"])
            .output()
            .expect("cat");
        assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1", "{ns}");
    }
    // The root namespace is untouched.
    assert_eq!(
        forwarding(),
        root_forwarding_before,
        "root ip_forward changed"
    );
    let new_links: Vec<String> = root_links().difference(&links_before).cloned().collect();
    for l in &new_links {
        assert!(
            !matches!(l.as_str(), "br0" | "eth0" | "n1" | "n2" | "n3"),
            "root link {l}"
        );
    }
    assert!(
        !root_routes_mention("198.18.0."),
        "a lab route in the root namespace"
    );
    // State and datastore.
    let state = g.state();
    assert_eq!(state.nodes.len(), 3);
    assert_eq!(state.datastore.kind, "embedded");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let pools = rt.block_on(async {
        let store = tortie_lab::datastore::open(&state.datastore.url)
            .await
            .expect("store");
        store
            .list("/calico/resources/v3/projectcalico.org/ippools/")
            .await
            .expect("list")
    });
    assert_eq!(pools.items.len(), 2);
    let v = tortie_lab::status_value(&state, &Default::default());
    assert_eq!(v["nodes"][0]["name"], "n1");
    assert_eq!(v["nodes"][0]["ip"], "198.18.0.11");
    assert_eq!(v["nodes"][0]["ready"], false);
    assert!(v["hosts"].as_array().is_some_and(Vec::is_empty));
    assert!(v["pods"].as_array().is_some_and(Vec::is_empty));
    assert!(
        v["datastore"]
            .as_str()
            .is_some_and(|d| d.starts_with("file:/run/tortie/lab/"))
    );
    ok(&format!("lab status --name {name}"));
    ok(&format!("lab status --name {name} -o json"));
    ok(&format!("lab env --name {name}"));
    // A second `up` refuses and leaves the lab alone.
    assert_eq!(
        lab(&format!("lab up --name {name} --no-agents")),
        ExitCode::FAILURE
    );
    assert_eq!(netns::list_with_prefix(&plan.prefix()).len(), 4);
    // Down removes everything, and again finds nothing.
    let report = tortie_lab::down(&plan);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.namespaces.len(), 4);
    assert_gone(&plan);
    assert!(tortie_lab::down(&plan).removed_nothing());
    ok(&format!("lab down --name {name}"));
    assert_eq!(lab(&format!("lab status --name {name}")), ExitCode::FAILURE);
}

pub fn hosts_and_builtin_server() {
    let g = LabGuard::new('b');
    let name = g.name().to_string();
    ok(&format!("lab up --name {name} --nodes 1 --no-agents"));
    ok(&format!("lab host add c1 --name {name}"));
    ok(&format!(
        "lab host add srv --serve 80/tcp,81/tcp,80/udp,81/udp --name {name}"
    ));
    assert_eq!(
        lab(&format!("lab host add c1 --name {name}")),
        ExitCode::FAILURE
    );
    let state = g.state();
    let (c1, srv) = (&state.hosts["c1"], &state.hosts["srv"]);
    assert_eq!(c1.ipv4.to_string(), "198.18.0.101");
    assert_eq!(srv.ipv4.to_string(), "198.18.0.102");
    let n1 = g.0.node_netns(1);
    assert!(reachable(&c1.netns, &n1, "198.18.0.11"), "host to node");
    assert!(
        reachable(&n1, &c1.netns, "fd00:198:18::101"),
        "node to host"
    );
    let server = srv.server.clone().expect("server recorded");
    assert!(process::still_ours(&server), "server runs with its marker");

    let t = Duration::from_millis(500);
    let from = &c1.netns;
    let to: IpAddr = srv.ipv4.into();
    for (port, proto, want) in [
        (80, Protocol::Tcp, true),
        (81, Protocol::Tcp, true),
        (80, Protocol::Udp, true),
        (81, Protocol::Udp, true),
        (82, Protocol::Tcp, false),
        (82, Protocol::Udp, false),
    ] {
        let pp = PortProto::new(port, proto);
        assert_eq!(
            probe::probe(from, to, pp, t).expect("probe"),
            want,
            "{pp} over IPv4"
        );
    }
    let to6: IpAddr = srv.ipv6.into();
    for proto in [Protocol::Tcp, Protocol::Udp] {
        let pp = PortProto::new(80, proto);
        assert!(
            probe::probe(from, to6, pp, t).expect("probe"),
            "{pp} over IPv6"
        );
    }
    // TCP: one line, then close.
    let line = netns::run_in(from, || {
        let mut s = TcpStream::connect_timeout(&(to, 80).into(), t)?;
        s.set_read_timeout(Some(t))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok::<_, std::io::Error>(out)
    })
    .expect("netns")
    .expect("read");
    assert!(
        line.starts_with("tortie-lab ") && line.ends_with("80/tcp\n"),
        "{line:?}"
    );
    // The CLI forms.
    ok(&format!(
        "lab probe c1 srv --port 81 --protocol udp --name {name}"
    ));
    ok(&format!(
        "lab probe srv n1 --port 9 --timeout-ms 100 --name {name}"
    ));
    assert_eq!(
        lab(&format!("lab probe c1 nope --port 80 --name {name}")),
        ExitCode::FAILURE
    );
    assert_eq!(
        lab(&format!("lab exec c1 --name {name} -- true")),
        ExitCode::SUCCESS
    );
    let exit3 = [
        "tortie", "lab", "exec", "n1", "--name", &name, "--", "sh", "-c", "exit 3",
    ];
    assert_eq!(run_cli(&exit3.map(String::from)), ExitCode::from(3));
    assert_eq!(
        lab(&format!("lab exec c1 --name {name} -- false")),
        ExitCode::FAILURE
    );

    let plan = g.0.clone();
    let report = tortie_lab::down(&plan);
    assert!(report.is_clean(), "{report}");
    assert!(report.processes.contains(&server.pid), "{report}");
    assert!(!process::alive(server.pid));
    assert_gone(&plan);
}

pub fn down_after_crash() {
    let g = LabGuard::new('c');
    let name = g.name().to_string();
    let plan = g.0.clone();
    for crash in ["deleted", "corrupt"] {
        ok(&format!("lab up --name {name} --nodes 2 --no-agents"));
        ok(&format!("lab host add srv --serve 80/tcp --name {name}"));
        let server = g.state().hosts["srv"].server.clone().expect("server");
        // A process the state never recorded, inside a node namespace.
        let mut stray = Command::new("ip")
            .args(["netns", "exec", &plan.node_netns(1), "sleep", "300"])
            .spawn()
            .expect("spawn sleep");
        std::thread::sleep(Duration::from_millis(200));
        assert!(process::alive(stray.id()));
        if crash == "deleted" {
            std::fs::remove_file(plan.state_file()).expect("rm state.json");
        } else {
            std::fs::write(plan.state_file(), b"{not json").expect("corrupt");
        }
        let report = tortie_lab::down(&plan);
        assert!(report.is_clean(), "{crash}: {report}");
        assert!(report.processes.contains(&server.pid), "{crash}: {report}");
        assert!(report.processes.contains(&stray.id()), "{crash}: {report}");
        assert!(report.state_note.is_some(), "{report}");
        let reaped = (0..100).any(|_| {
            let done = stray.try_wait().ok().flatten().is_some();
            if !done {
                std::thread::sleep(Duration::from_millis(20));
            }
            done
        });
        assert!(reaped, "{crash}: stray process still running");
        assert!(!process::alive(server.pid));
        assert_gone(&plan);
    }
    // A state dir with no namespaces at all (crash right after claiming it).
    std::fs::create_dir_all(plan.state_dir()).expect("mkdir");
    assert!(tortie_lab::down(&plan).is_clean());
    assert_gone(&plan);
}

pub fn agents_start_and_failures_roll_back() {
    let g = LabGuard::new('d');
    let name = g.name().to_string();
    ok(&format!("lab up --name {name} --nodes 2"));
    let state = g.state();
    assert_eq!(state.nodes.len(), 2, "two nodes recorded");
    for node in &state.nodes {
        let agent = node.agent.clone().expect("agent recorded");
        assert!(
            process::still_ours(&agent.process),
            "agent of {}",
            node.name
        );
        assert_eq!(
            tortie_lab::readiness(&agent.health, Duration::from_secs(1)),
            tortie_lab::Readiness::Ready
        );
        let args = process::cmdline(agent.process.pid).expect("cmdline");
        let want = [
            "agent".to_string(),
            "--node".into(),
            node.name.clone(),
            "--node-ip".into(),
            format!("{}/24", node.ipv4),
            "--node-ipv6".into(),
            format!("{}/64", node.ipv6),
            "--host-netns".into(),
            format!("/run/netns/{}", node.netns),
            "--health-listen".into(),
            agent.health.clone(),
            "--routing".into(),
            "static".into(),
            "--datastore".into(),
            state.datastore.url.clone(),
        ];
        assert_eq!(args[1..], want, "agent command line");
    }
    let pids: Vec<u32> = state
        .nodes
        .iter()
        .filter_map(|n| Some(n.agent.as_ref()?.process.pid))
        .collect();
    assert_eq!(pids.len(), 2, "one agent per node");
    let report = tortie_lab::down(&g.0);
    assert!(report.is_clean(), "{report}");
    for pid in pids {
        assert!(!process::alive(pid), "agent {pid} still running");
    }
    assert_gone(&g.0);

    // The stand-in agent fails for labs whose name ends in `f`: `up` must undo everything.
    let f = LabGuard::new('f');
    assert_eq!(
        lab(&format!("lab up --name {} --nodes 2", f.name())),
        ExitCode::FAILURE
    );
    assert_gone(&f.0);
}

pub fn etcd_datastore() {
    let bin = std::path::Path::new(tortie_lab::datastore::DEFAULT_ETCD_BIN);
    if !bin.is_file() && std::env::var_os("TORTIE_ETCD_BIN").is_none() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "etcd is missing at {} and CI=true requires this test to run",
            bin.display()
        );
        eprintln!("skipping etcd_datastore: no etcd at {}", bin.display());
        return;
    }
    let g = LabGuard::new('e');
    let name = g.name().to_string();
    assert_eq!(
        lab(&format!("lab up --name {name} --datastore bogus")),
        ExitCode::FAILURE
    );
    assert_gone(&g.0);
    ok(&format!(
        "lab up --name {name} --nodes 1 --no-agents --datastore etcd"
    ));
    let state = g.state();
    assert_eq!(state.datastore.kind, "etcd");
    assert!(state.datastore.url.starts_with("etcd://127.0.0.1:"));
    let etcd = state.datastore.etcd.clone().expect("etcd recorded");
    assert!(process::still_ours(&etcd));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let pools = rt.block_on(async {
        let store = tortie_lab::datastore::open(&state.datastore.url)
            .await
            .expect("store");
        store
            .list("/calico/resources/v3/projectcalico.org/ippools/")
            .await
            .expect("list")
    });
    assert_eq!(pools.items.len(), 2);
    let report = tortie_lab::down(&g.0);
    assert!(report.is_clean(), "{report}");
    assert!(report.processes.contains(&etcd.pid), "{report}");
    assert!(!process::alive(etcd.pid));
    assert_gone(&g.0);
}
