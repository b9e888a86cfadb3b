//! The calculation at scale: 10k workload endpoints (100 nodes x 100), 50 namespaces and 1k
//! policies (600 Kubernetes, 300 Calico namespaced, 100 global). Measures the world's build
//! time and memory, the time to compute one node's dataplane model, and the time from one
//! pod-label or one policy change to the node's new model (what the agent does per change).
//!
//! `cargo bench -p tortie-calc --bench scale` (prints a markdown table; medians of 5 runs).

use std::time::{Duration, Instant};

use tortie_api::codec::decode;
use tortie_api::resource::Resource;
use tortie_calc::World;
use tortie_calc::dataplane::{self, NodeConfig};
use tortie_calc::graph::CalcGraph;

const ENDPOINTS: usize = 10_000;
const NODES: usize = 100;
const NAMESPACES: usize = 50;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn one(text: &str) -> Resource {
    let (_, mut r) = decode("bench", text, "default")
        .pop()
        .expect("one doc")
        .expect("decodes");
    r.default_and_validate().expect("valid");
    r
}

fn wep(i: usize, extra: &str) -> Resource {
    let ns = i % NAMESPACES;
    let node = i % NODES;
    one(&format!(
        r#"{{"apiVersion":"projectcalico.org/v3","kind":"WorkloadEndpoint",
        "metadata":{{"name":"n{node}-k8s-p{i}-eth0","namespace":"ns{ns}",
          "labels":{{"app":"a{}","tier":"{}","version":"v{}","projectcalico.org/namespace":"ns{ns}",
                     "projectcalico.org/orchestrator":"k8s"{extra}}}}},
        "spec":{{"orchestrator":"k8s","node":"n{node}","pod":"p{i}","endpoint":"eth0",
          "interfaceName":"cali{i:011x}","ipNetworks":["10.{}.{}.{}/32"],
          "profiles":["kns.ns{ns}"],"ports":[{{"name":"http","protocol":"TCP","port":8080}}]}}}}"#,
        i % 200,
        ["web", "db", "cache"][i % 3],
        i % 5,
        64 + i / 65536,
        (i / 256) % 256,
        i % 256
    ))
}

fn policies() -> Vec<Resource> {
    let mut out = Vec::new();
    for j in 0..600 {
        out.push(one(&format!(
            r#"{{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
            "metadata":{{"name":"k{j}","namespace":"ns{}"}},
            "spec":{{"podSelector":{{"matchLabels":{{"app":"a{}"}}}},
              "ingress":[{{"from":[{{"podSelector":{{"matchLabels":{{"tier":"web"}}}},
                                   "namespaceSelector":{{"matchLabels":{{"team":"t{}"}}}}}}],
                           "ports":[{{"port":80}},{{"port":"http"}}]}}]}}}}"#,
            j % NAMESPACES,
            j % 200,
            j % 10
        )));
    }
    for j in 0..300 {
        out.push(one(&format!(
            r#"{{"apiVersion":"projectcalico.org/v3","kind":"NetworkPolicy",
            "metadata":{{"name":"c{j}","namespace":"ns{}"}},
            "spec":{{"order":{},"selector":"app == 'a{}'",
              "egress":[{{"action":"Allow","protocol":"TCP",
                          "destination":{{"selector":"tier == 'db' && version == 'v{}'","ports":[5432]}}}},
                        {{"action":"Deny"}}]}}}}"#,
            j % NAMESPACES,
            j % 7,
            (j * 7) % 200,
            j % 5
        )));
    }
    for j in 0..100 {
        out.push(one(&format!(
            r#"{{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy",
            "metadata":{{"name":"g{j}"}},
            "spec":{{"order":{j},"selector":"tier == 'cache' && version == 'v{}'",
              "namespaceSelector":"env == 'prod'",
              "ingress":[{{"action":"Allow","source":{{"nets":["192.0.2.{}/32"]}}}},
                         {{"action":"Pass","source":{{"selector":"app == 'a{}'"}}}}]}}}}"#,
            j % 5,
            j,
            j % 200
        )));
    }
    out
}

fn namespaces() -> Vec<Resource> {
    (0..NAMESPACES)
        .map(|i| {
            one(&format!(
                r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"ns{i}",
                "labels":{{"team":"t{}","env":"{}"}}}}}}"#,
                i % 10,
                if i % 2 == 0 { "prod" } else { "dev" }
            ))
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let cfg = NodeConfig::new("n0");
    let mut inputs = namespaces();
    inputs.extend((0..ENDPOINTS).map(|i| wep(i, "")));
    inputs.extend(policies());

    // From scratch: the World alone, every selector evaluated against every endpoint per build
    // (what `policy explain`/`matrix` and one-off builds use).
    let before = rss_kib();
    let t = Instant::now();
    let mut world = World::from_resources(&inputs);
    let world_build = t.elapsed();
    let world_kib = rss_kib().saturating_sub(before);
    assert!(
        world.errors().is_empty(),
        "{:?}",
        world.errors().iter().next()
    );
    let mut scan_model = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let _ = dataplane::build(&world, &cfg);
        scan_model.push(t.elapsed());
    }
    let mut scan_change = Vec::new();
    for r in 0..3 {
        let t = Instant::now();
        world.upsert(&wep(1 + 100 * r, r#","tier":"db""#));
        let _ = dataplane::build(&world, &cfg);
        scan_change.push(t.elapsed());
    }
    drop(world);

    // Incremental: the agent's CalcGraph (World + label index).
    let before = rss_kib();
    let t = Instant::now();
    let mut graph = CalcGraph::new();
    for r in &inputs {
        graph.upsert(r);
    }
    let graph_build = t.elapsed();
    let graph_kib = rss_kib().saturating_sub(before);
    drop(inputs);
    let mut node_model = Vec::new();
    let mut model = dataplane::build_with(graph.world(), &cfg, &graph);
    for _ in 0..5 {
        let t = Instant::now();
        model = dataplane::build_with(graph.world(), &cfg, &graph);
        node_model.push(t.elapsed());
    }
    let mut label_update = Vec::new();
    let mut label_change = Vec::new();
    let mut policy_change = Vec::new();
    let mut ns_change = Vec::new();
    for r in 0..7 {
        // A pod on another node changes a label that rule selectors look at.
        let t = Instant::now();
        graph.upsert(&wep(1 + 100 * r, r#","tier":"db""#));
        label_update.push(t.elapsed());
        let _ = dataplane::build_with(graph.world(), &cfg, &graph);
        label_change.push(t.elapsed());
        let t = Instant::now();
        graph.upsert(&policies()[r * 7]);
        let _ = dataplane::build_with(graph.world(), &cfg, &graph);
        policy_change.push(t.elapsed());
        let t = Instant::now();
        graph.upsert(&namespaces()[r]);
        let _ = dataplane::build_with(graph.world(), &cfg, &graph);
        ns_change.push(t.elapsed());
    }
    let members: usize = model
        .ip_sets
        .values()
        .map(|s| match &s.members {
            dataplane::IpSetMembers::Nets(n) => n.len(),
            dataplane::IpSetMembers::NamedPorts(n) => n.len(),
        })
        .sum();
    println!(
        "10k endpoints (100 nodes x 100), 50 namespaces, 1000 policies; node n0 has 100 local endpoints"
    );
    println!(
        "node model: {} chains, {} sets, {} members\n",
        model.chains.len(),
        model.ip_sets.len(),
        members
    );
    println!(
        "| path | build all | RSS | node model | pod label change → index | → node model | policy change → node model | namespace change → node model |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| from scratch (World, evaluate every selector) | {} | {} MiB | {} | — | {} | — | — |",
        ms(world_build),
        world_kib / 1024,
        ms(median(scan_model)),
        ms(median(scan_change)),
    );
    println!(
        "| incremental (CalcGraph, label index) | {} | {} MiB | {} | {} | {} | {} | {} |",
        ms(graph_build),
        graph_kib / 1024,
        ms(median(node_model)),
        ms(median(label_update)),
        ms(median(label_change)),
        ms(median(policy_change)),
        ms(median(ns_change)),
    );
}
