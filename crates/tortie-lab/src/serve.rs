//! The built-in server that lab pods and hosts run: on every TCP port it accepts, writes one
//! short line and closes; on every UDP port it echoes each datagram back.
//!
//! Sockets bind the IPv6 wildcard with dual-stack (so IPv4 works too), falling back to the
//! IPv4 wildcard when the namespace has no IPv6. Binding happens in the calling thread's
//! namespace: `lab serve` runs under `ip netns exec`, tests bind on a namespace thread.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::AsyncWriteExt;

use crate::process;
use crate::spec::{PortProto, PortProtoList, Protocol};
use crate::state::ProcessRecord;

/// What the server prints once every socket is bound.
pub const READY_LINE: &str = "tortie lab serve: ready";
/// How long a spawned server gets to bind its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `tortie lab serve` (hidden): the built-in server.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Ports to serve, e.g. 80/tcp,81/tcp,80/udp.
    #[arg(long)]
    pub listen: PortProtoList,
    /// The namespace this server runs in (informational; marks the process as the lab's).
    #[arg(long, default_value = "")]
    pub netns: String,
}

/// Sockets bound for [`serve`].
#[derive(Debug)]
pub struct Bound {
    tcp: Vec<(PortProto, std::net::TcpListener)>,
    udp: Vec<(PortProto, std::net::UdpSocket)>,
}

fn wildcard(port: u16) -> [SocketAddr; 2] {
    [
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
    ]
}

/// Binds every port in the current thread's namespace.
pub fn bind(ports: &[PortProto]) -> anyhow::Result<Bound> {
    let mut bound = Bound {
        tcp: Vec::new(),
        udp: Vec::new(),
    };
    for p in ports {
        let addrs = wildcard(p.port);
        match p.protocol {
            Protocol::Tcp => {
                let l = std::net::TcpListener::bind(&addrs[..])
                    .with_context(|| format!("cannot listen on {p}"))?;
                l.set_nonblocking(true)?;
                bound.tcp.push((*p, l));
            }
            Protocol::Udp => {
                let s = std::net::UdpSocket::bind(&addrs[..])
                    .with_context(|| format!("cannot listen on {p}"))?;
                s.set_nonblocking(true)?;
                bound.udp.push((*p, s));
            }
        }
    }
    Ok(bound)
}

/// Serves the bound sockets until `shutdown` completes.
pub async fn serve(
    bound: Bound,
    name: String,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for (p, l) in bound.tcp {
        let l = tokio::net::TcpListener::from_std(l)?;
        let line = format!("tortie-lab {name} {p}\n");
        tasks.spawn(async move {
            loop {
                if let Ok((mut conn, _)) = l.accept().await {
                    let line = line.clone();
                    tokio::spawn(async move {
                        let write = conn.write_all(line.as_bytes());
                        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
                        let _ = conn.shutdown().await;
                    });
                }
            }
        });
    }
    for (_, s) in bound.udp {
        let s = tokio::net::UdpSocket::from_std(s)?;
        tasks.spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                if let Ok((n, from)) = s.recv_from(&mut buf).await {
                    let _ = s.send_to(&buf[..n], from).await;
                }
            }
        });
    }
    shutdown.await;
    tasks.shutdown().await;
    Ok(())
}

/// Runs the server in this process's namespace until killed (the body of `lab serve`).
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let ports = args.listen.0;
    if ports.is_empty() {
        bail!("give --listen PORT/PROTO,...");
    }
    let bound = bind(&ports)?;
    let listed: Vec<String> = ports.iter().map(ToString::to_string).collect();
    println!("{READY_LINE} on {}", listed.join(","));
    serve(bound, args.netns, std::future::pending()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `serve_main` for binaries that have no async runtime of their own: builds one and runs
/// [`run`]. (Inside a runtime, call [`run`] instead.)
pub fn serve_main(args: ServeArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The binary that plays `tortie` for spawned agents and servers: `TORTIE_BIN`, else the
/// running binary.
pub fn tortie_bin() -> anyhow::Result<std::path::PathBuf> {
    match std::env::var_os("TORTIE_BIN") {
        Some(p) => Ok(p.into()),
        None => std::env::current_exe().context("cannot find the running binary"),
    }
}

/// Starts `<tortie> lab serve` inside `netns` (via `ip netns exec`, which execs in place, so
/// the PID is the server's), logging to `log`, and waits until it has bound every port.
pub fn spawn(netns: &str, ports: &[PortProto], log: &Path) -> anyhow::Result<ProcessRecord> {
    let listen: Vec<String> = ports.iter().map(ToString::to_string).collect();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).arg(tortie_bin()?).args([
        "lab",
        "serve",
        "--listen",
        &listen.join(","),
        "--netns",
        netns,
    ]);
    let _ = std::fs::remove_file(log);
    let mut child = process::spawn_logged(cmd, log).context("cannot start the built-in server")?;
    let record = ProcessRecord {
        pid: child.id(),
        marker: netns.to_string(),
        log: log.to_path_buf(),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains(READY_LINE)) {
            return Ok(record);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the built-in server in {netns} exited with {status}:\n{}",
                crate::datastore::tail(log)
            );
        }
        if Instant::now() >= deadline {
            process::terminate(&[record.pid].into());
            bail!(
                "the built-in server in {netns} did not start within {}s:\n{}",
                START_TIMEOUT.as_secs(),
                crate::datastore::tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
