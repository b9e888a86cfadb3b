//! Stand-ins this test binary plays when the lab spawns it: `tortie lab ...`, `tortie agent`
//! and the `tortie-cni` plugin.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, ExitCode};
use std::time::Duration;

use crate::run_cli;

pub fn play_tortie_lab(args: &[String]) -> ExitCode {
    run_cli(args)
}

/// A stand-in agent: answers every request on `--health-listen` with 200, until killed.
pub fn play_agent(args: &[String]) -> ExitCode {
    let value = |flag: &str| {
        args.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .unwrap_or_default()
    };
    if value("--host-netns")
        .split('-')
        .next()
        .is_some_and(|l| l.ends_with('f'))
    {
        eprintln!("stand-in agent: failing on purpose");
        return ExitCode::FAILURE;
    }
    let listener = TcpListener::bind(value("--health-listen")).expect("bind health port");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    }
    ExitCode::SUCCESS
}

/// A stand-in `tortie-cni`: logs each call (env and stdin) as a JSON line to `cni-calls.log`
/// in the lab's state dir; ADD puts 10.244.200.N/32 (or the requested IP) and
/// fd00:10:244::N/128 on the pod's loopback, so only the pod itself reaches them; pods named
/// `fail` get a CNI error. DEL always succeeds.
pub fn play_cni_plugin() -> ExitCode {
    let mut stdin = String::new();
    let _ = std::io::stdin().read_to_string(&mut stdin);
    let conf: serde_json::Value = serde_json::from_str(&stdin).unwrap_or_default();
    let env: serde_json::Map<String, serde_json::Value> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CNI_") || k == "TORTIE_HOST_NETNS")
        .map(|(k, v)| (k, v.into()))
        .collect();
    let store = conf["datastore"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("file:");
    let dir = std::path::Path::new(store)
        .parent()
        .expect("state dir")
        .to_path_buf();
    let log = dir.join("cni-calls.log");
    let previous = std::fs::read_to_string(&log).unwrap_or_default();
    let call = serde_json::json!({"env": env, "stdin": conf});
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log");
    writeln!(f, "{call}").expect("write log");
    let get = |k: &str| {
        env.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    if get("CNI_COMMAND") != "ADD" {
        return ExitCode::SUCCESS;
    }
    if get("CNI_ARGS").contains("K8S_POD_NAME=fail;") {
        println!(
            r#"{{"cniVersion":"1.0.0","code":11,"msg":"stand-in refuses","details":"pod fail"}}"#
        );
        return ExitCode::FAILURE;
    }
    let n = previous
        .lines()
        .filter(|l| l.contains(r#""CNI_COMMAND":"ADD""#))
        .count()
        + 1;
    let v4 = conf["runtimeConfig"]["ips"][0]
        .as_str()
        .map_or_else(|| format!("10.244.200.{n}"), str::to_string);
    let v6 = format!("fd00:10:244::{n}");
    let ns = get("CNI_NETNS")
        .trim_start_matches("/run/netns/")
        .to_string();
    for addr in [format!("{v4}/32"), format!("{v6}/128")] {
        let st = Command::new("ip")
            .args(["-n", &ns, "addr", "add", &addr, "dev", "lo"])
            .args(if addr.contains(':') {
                &["nodad"][..]
            } else {
                &[][..]
            })
            .status();
        if !st.is_ok_and(|s| s.success()) {
            println!(r#"{{"cniVersion":"1.0.0","code":999,"msg":"cannot add {addr}"}}"#);
            return ExitCode::FAILURE;
        }
    }
    println!(
        "{}",
        serde_json::json!({"cniVersion": "1.0.0",
            "ips": [{"address": format!("{v6}/128")}, {"address": format!("{v4}/32")}]})
    );
    ExitCode::SUCCESS
}
