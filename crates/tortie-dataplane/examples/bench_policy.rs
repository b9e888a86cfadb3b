//! Benchmarks B3 and B4 of `shared/design/benchmarks.md` for the nftables policy dataplane,
//! each beside its peers in one run. Driven by `scripts/bench-policy.sh`; write-up in
//! `docs/bench-notes/policy.md`.
//!
//! Topology ("lab", one per ruleset family, built with `ip` inside namespaces this program
//! creates, named `<prefix>-<lab>-{h,a,b}`): a host namespace (forwarding on) with two pod
//! namespaces behind veths `calia1` (A = 10.244.1.10) and `calib2` (B = 10.244.2.11), wired as
//! tortie-cni wires pods (/32 addresses, 169.254.1.1 gateway with permanent neighbours). B
//! runs `iperf3 -s` and a 1-byte echo server on :80. The `main` lab carries tortie's table, the
//! full `nft -f` reloads and iptables-nft; the `legacy` lab carries iptables-legacy (its
//! x_tables hooks stay registered in a namespace once used, so it gets its own).
//!
//! Policy: B admits TCP 5201 and 80 from `app == 'a'` (a Calico v3 NetworkPolicy); the
//! selector matches pod A and a NetworkSet of N extra /32s, odd addresses in 10.96.0.0/12 (the
//! service range, routed nowhere; odd so that aggregation cannot merge them). The tortie path
//! is the agent's: resources → `CalcGraph` (world + label index) → `dataplane::build_with` →
//! `NftManager::apply`, with `nft` run in the host namespace (`NftCommand::new()` on a thread
//! inside it, as the agent runs on a node). The iptables peer is the same policy as a linear
//! ruleset: conntrack ESTABLISHED,RELATED accept, INVALID drop, `-o calib2 -p tcp --dports
//! 80,5201 -j tw-calib2`, `-o calib2 -j DROP`, and in `tw-calib2` one `-s <ip>/32 -j ACCEPT`
//! per set member in the set's (numeric) order, which puts A last, then DROP.
//!
//! B3: per N, RUNS rounds; each round installs every case afresh (rotating the order), checks
//! it (A→B:80 connects; A→B:81 times out under policy, is refused without), then runs
//! `iperf3 -t SECS` A→B and a connection-rate loop (new TCP connection per 1-byte request and
//! response, sequential, for CRR_SECS). Cases: no ruleset, tortie, iptables-nft,
//! iptables-legacy.
//!
//! B4: per N, start with A outside B's allowed set; REPS times: check A→B:80 is denied, start a
//! probe in A (TCP connect to B:80 with a 1 ms timeout, retried until one succeeds), timestamp,
//! make the change (A's label back, so the selector matches it), record the first successful
//! connect; then take A out again (apply timed, verdict not probed). Methods: tortie (world update + build + incremental
//! `NftManager::apply`), a full `nft -f` of the whole rendered table (build + render +
//! `full_script`), a full `iptables-restore` of the linear ruleset (nft and legacy backends),
//! and a naive incremental peer: the whole table rendered afresh and diffed against the
//! last one (`diff::script`, no set reuse or patching), applied with one `nft -f`.
//!
//! Every loop is bounded in count or time; every namespace and process is removed on exit
//! (drop guards; the script's trap covers signals). Output: markdown on stdout, progress on
//! stderr, raw samples as TSV with `--raw FILE`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tortie_api::Resource;
use tortie_calc::dataplane::{
    self, DataplaneModel, EndpointToHost, IpSetMembers, NatOutgoing, NodeConfig,
};
use tortie_calc::graph::CalcGraph;
use tortie_dataplane::{
    ApplyMode, NftCommand, NftError, NftManager, NftRunner, NftTable, SetElements, diff, render,
};
use tortie_netlink::NetNs;
use tortie_netlink::sysctl::write_sysctls;

type Res<T> = Result<T, String>;

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 11);
const HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
const NODE: &str = "node1";
const ECHO_PORT: u16 = 80;
const CLOSED_PORT: u16 = 81;
/// Timeout of one probe attempt (B4) and the retry period.
const PROBE_ATTEMPT: Duration = Duration::from_millis(1);
/// A probe that has not connected after this long is a failure.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench-policy] {}", msg.as_ref());
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ----------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Opts {
    prefix: String,
    b3_sizes: Vec<usize>,
    b4_sizes: Vec<usize>,
    runs: usize,
    secs: u32,
    crr_secs: u32,
    reps: usize,
    legacy: bool,
    naive: bool,
    b3: bool,
    b4: bool,
    raw: Option<String>,
    pid_file: Option<String>,
}

fn parse_opts() -> Res<Opts> {
    let mut o = Opts {
        prefix: format!("bp{}", std::process::id()),
        b3_sizes: vec![0, 1000, 10_000, 50_000],
        b4_sizes: vec![1000, 10_000, 50_000],
        runs: 3,
        secs: 5,
        crr_secs: 3,
        reps: 30,
        legacy: true,
        naive: true,
        b3: true,
        b4: true,
        raw: None,
        pid_file: None,
    };
    let sizes = |v: &str| -> Res<Vec<usize>> {
        v.split(',')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= 200_000)
                    .ok_or_else(|| format!("bad size {s:?} (0..=200000)"))
            })
            .collect()
    };
    let small = |v: &str, max: usize| -> Res<usize> {
        v.parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("bad number {v:?} (1..={max})"))
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--prefix" => o.prefix = val()?,
            "--b3-sizes" => o.b3_sizes = sizes(&val()?)?,
            "--b4-sizes" => o.b4_sizes = sizes(&val()?)?,
            "--runs" => o.runs = small(&val()?, 20)?,
            "--secs" => o.secs = u32::try_from(small(&val()?, 60)?).unwrap_or(5),
            "--crr-secs" => o.crr_secs = u32::try_from(small(&val()?, 60)?).unwrap_or(3),
            "--reps" => o.reps = small(&val()?, 500)?,
            "--no-legacy" => o.legacy = false,
            "--no-naive" => o.naive = false,
            "--only" => match val()?.as_str() {
                "b3" => o.b4 = false,
                "b4" => o.b3 = false,
                other => return Err(format!("--only b3|b4, not {other}")),
            },
            "--raw" => o.raw = Some(val()?),
            "--pid-file" => o.pid_file = Some(val()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.prefix.is_empty()
        || o.prefix.len() > 20
        || !o.prefix.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err("--prefix must be 1-20 ASCII letters or digits".into());
    }
    Ok(o)
}

// ----------------------------------------------------------------------------------------
// Commands

fn run_cmd(prog: &str, args: &[&str]) -> Res<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `prog` (in the calling thread's namespace) with `input` on stdin.
fn run_stdin(prog: &str, args: &[&str], input: &str) -> Res<()> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{prog}: {e}"))?;
    let pipe = child.stdin.take();
    let out = std::thread::scope(|s| {
        if let Some(mut p) = pipe {
            s.spawn(move || {
                let _ = p.write_all(input.as_bytes());
            });
        }
        child.wait_with_output()
    })
    .map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{prog}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

// ----------------------------------------------------------------------------------------
// The lab: host + pods A and B

/// What the client worker in pod A does on request.
#[derive(Debug)]
enum Req {
    Connect { port: u16, timeout: Duration },
    Probe,
    Crr { secs: u32 },
}

#[derive(Debug)]
enum Resp {
    Connect(Result<(), ErrorKind>),
    ProbeStarted,
    /// When the first connect succeeded, and after how many attempts.
    Probe(Option<(Instant, u32)>),
    Crr(CrrResult),
}

#[derive(Debug, Clone, Default)]
struct CrrResult {
    conns: usize,
    errors: usize,
    elapsed: Duration,
    /// Per-connection time (connect + request + response), microseconds.
    lat_us: Vec<u32>,
}

impl CrrResult {
    fn rate(&self) -> f64 {
        self.conns as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug)]
struct Client {
    tx: Option<mpsc::Sender<Req>>,
    rx: mpsc::Receiver<Resp>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Lab {
    label: &'static str,
    host: String,
    a: String,
    b: String,
    made: Vec<String>,
    host_ns: Option<NetNs>,
    iperf: Option<Child>,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
    /// A duplicate of the server's listening socket, to wake it on drop.
    listener: Option<TcpListener>,
    client: Option<Mutex<Client>>,
}

impl Lab {
    fn new(prefix: &str, label: &'static str, pid_file: Option<&str>) -> Res<Lab> {
        let mut lab = Lab {
            label,
            host: format!("{prefix}-{label}-h"),
            a: format!("{prefix}-{label}-a"),
            b: format!("{prefix}-{label}-b"),
            made: Vec::new(),
            host_ns: None,
            iperf: None,
            stop: Arc::new(AtomicBool::new(false)),
            server: None,
            listener: None,
            client: None,
        };
        lab.build(pid_file)?;
        Ok(lab)
    }

    fn build(&mut self, pid_file: Option<&str>) -> Res<()> {
        for ns in [self.host.clone(), self.a.clone(), self.b.clone()] {
            self.made.push(ns.clone());
            run_cmd("ip", &["netns", "add", &ns])?;
            run_cmd("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let host = self.host.clone();
        for (pod, iface, ip, mac) in [
            (self.a.clone(), "calia1", A_IP, "02:00:00:00:00:01"),
            (self.b.clone(), "calib2", B_IP, "02:00:00:00:00:02"),
        ] {
            let ip = ip.to_string();
            run_cmd(
                "ip",
                &[
                    "-n", &host, "link", "add", iface, "address", HOST_MAC, "type", "veth", "peer",
                    "name", "eth0", "address", mac, "netns", &pod,
                ],
            )?;
            run_cmd("ip", &["-n", &host, "link", "set", iface, "up"])?;
            run_cmd("ip", &["-n", &pod, "link", "set", "eth0", "up"])?;
            run_cmd(
                "ip",
                &[
                    "-n",
                    &pod,
                    "addr",
                    "add",
                    &format!("{ip}/32"),
                    "dev",
                    "eth0",
                ],
            )?;
            run_cmd(
                "ip",
                &[
                    "-n",
                    &pod,
                    "route",
                    "add",
                    "169.254.1.1",
                    "dev",
                    "eth0",
                    "scope",
                    "link",
                ],
            )?;
            run_cmd(
                "ip",
                &[
                    "-n",
                    &pod,
                    "route",
                    "add",
                    "default",
                    "via",
                    "169.254.1.1",
                    "dev",
                    "eth0",
                    "onlink",
                ],
            )?;
            run_cmd(
                "ip",
                &[
                    "-n",
                    &pod,
                    "neigh",
                    "replace",
                    "169.254.1.1",
                    "lladdr",
                    HOST_MAC,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ],
            )?;
            run_cmd(
                "ip",
                &[
                    "-n",
                    &host,
                    "route",
                    "add",
                    &format!("{ip}/32"),
                    "dev",
                    iface,
                ],
            )?;
            run_cmd(
                "ip",
                &[
                    "-n",
                    &host,
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    mac,
                    "dev",
                    iface,
                    "nud",
                    "permanent",
                ],
            )?;
        }
        let host_ns = NetNs::named(&self.host).map_err(|e| e.to_string())?;
        let a_ns = NetNs::named(&self.a).map_err(|e| e.to_string())?;
        let b_ns = NetNs::named(&self.b).map_err(|e| e.to_string())?;
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        // Forwarding in the host namespace only.
        write_sysctls(&host_ns, &[kv("net/ipv4/ip_forward", "1")]).map_err(|e| e.to_string())?;
        // The connection-rate loop opens tens of thousands of connections: the client may
        // reuse ports in TIME_WAIT (after 1 s, with timestamps) from a wide range, and the
        // host's conntrack forgets TIME_WAIT entries after 2 s (its table would otherwise fill
        // up at 120 s each). Same for every case.
        write_sysctls(
            &a_ns,
            &[
                kv("net/ipv4/tcp_tw_reuse", "1"),
                kv("net/ipv4/ip_local_port_range", "10000 65000"),
            ],
        )
        .map_err(|e| e.to_string())?;
        if let Err(e) = write_sysctls(
            &host_ns,
            &[kv("net/netfilter/nf_conntrack_tcp_timeout_time_wait", "2")],
        ) {
            log(format!(
                "warning: cannot shorten conntrack TIME_WAIT in {}: {e}",
                self.host
            ));
        }
        self.host_ns = Some(host_ns);

        // B: echo server on :80 (the connection-rate server and the B4 probe's sink).
        let addr = SocketAddr::from((B_IP, ECHO_PORT));
        let listener = b_ns
            .run(move || TcpListener::bind(addr))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("bind {addr} in {}: {e}", self.b))?;
        self.listener = Some(
            listener
                .try_clone()
                .map_err(|e| format!("dup listener: {e}"))?,
        );
        let stop = self.stop.clone();
        self.server = Some(std::thread::spawn(move || serve(&listener, &stop)));

        // B: iperf3 server (a child; killed by PID on drop).
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.b,
                "iperf3",
                "-s",
                "-B",
                &B_IP.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3 -s: {e}"))?;
        if let Some(f) = pid_file {
            let mut text = std::fs::read_to_string(f).unwrap_or_default();
            let _ = writeln!(text, "{}", child.id());
            std::fs::write(f, text).map_err(|e| format!("{f}: {e}"))?;
        }
        self.iperf = Some(child);

        // A: the client worker.
        let (req_tx, req_rx) = mpsc::channel::<Req>();
        let (resp_tx, resp_rx) = mpsc::channel::<Resp>();
        let thread = std::thread::spawn(move || {
            let _ = a_ns.run(move || client_worker(&req_rx, &resp_tx));
        });
        self.client = Some(Mutex::new(Client {
            tx: Some(req_tx),
            rx: resp_rx,
            thread: Some(thread),
        }));
        // Wait (bounded) until both servers answer.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let echo = self.connect(ECHO_PORT, Duration::from_millis(200));
            let iperf = self.connect(5201, Duration::from_millis(200));
            if echo.is_ok() && iperf.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "lab {}: servers not reachable (echo {echo:?}, iperf3 {iperf:?})",
                    self.label
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn host_ns(&self) -> &NetNs {
        self.host_ns
            .as_ref()
            .expect("host namespace is open after build")
    }

    fn request(&self, req: Req) -> Res<Resp> {
        let c = lock(self.client.as_ref().ok_or("no client")?);
        c.tx.as_ref()
            .ok_or("client closed")?
            .send(req)
            .map_err(|_| "client worker gone".to_string())?;
        c.rx.recv_timeout(Duration::from_secs(120))
            .map_err(|e| format!("client worker: {e}"))
    }

    /// One TCP connect from A to B:`port`.
    fn connect(&self, port: u16, timeout: Duration) -> Result<(), ErrorKind> {
        match self.request(Req::Connect { port, timeout }) {
            Ok(Resp::Connect(r)) => r,
            _ => Err(ErrorKind::Other),
        }
    }

    fn crr(&self, secs: u32) -> Res<CrrResult> {
        match self.request(Req::Crr { secs })? {
            Resp::Crr(r) => Ok(r),
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// Starts the B4 probe; returns once it runs. Collect with [`Lab::probe_result`].
    fn probe_start(&self) -> Res<()> {
        let c = lock(self.client.as_ref().ok_or("no client")?);
        c.tx.as_ref()
            .ok_or("client closed")?
            .send(Req::Probe)
            .map_err(|_| "client worker gone".to_string())?;
        match c.rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Resp::ProbeStarted) => Ok(()),
            other => Err(format!("probe did not start: {other:?}")),
        }
    }

    fn probe_result(&self) -> Res<Option<(Instant, u32)>> {
        let c = lock(self.client.as_ref().ok_or("no client")?);
        match c.rx.recv_timeout(PROBE_DEADLINE + Duration::from_secs(5)) {
            Ok(Resp::Probe(r)) => Ok(r),
            other => Err(format!("probe: {other:?}")),
        }
    }

    /// Runs `f` on a thread inside the host namespace (programs it starts run there too).
    fn in_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Res<T> {
        self.host_ns().run(f).map_err(|e| e.to_string())
    }

    /// Removes every ruleset from the host namespace and checks nothing is left.
    fn flush(&self) -> Res<()> {
        run_cmd(
            "ip",
            &["netns", "exec", &self.host, "nft", "flush", "ruleset"],
        )?;
        let left = run_cmd(
            "ip",
            &["netns", "exec", &self.host, "nft", "list", "ruleset"],
        )?;
        if !left.trim().is_empty() {
            return Err(format!("ruleset left in {}: {left}", self.host));
        }
        if self.label == "legacy" {
            for args in [["-F"], ["-X"]] {
                let mut a = vec!["netns", "exec", &self.host, "iptables-legacy", "-w"];
                a.extend(args);
                run_cmd("ip", &a)?;
            }
        }
        Ok(())
    }

    /// Checks the expected verdicts: A→B:80 connects; A→B:81 times out under policy and is
    /// refused (nothing listens) without.
    fn check(&self, policy: bool) -> Res<()> {
        let ok = self.connect(ECHO_PORT, Duration::from_millis(500));
        let closed = self.connect(CLOSED_PORT, Duration::from_millis(200));
        let want_closed = if policy {
            Err(ErrorKind::TimedOut)
        } else {
            Err(ErrorKind::ConnectionRefused)
        };
        if ok != Ok(()) || closed != want_closed {
            return Err(format!(
                "lab {}: A→B:80 {ok:?} (want Ok), A→B:81 {closed:?} (want {want_closed:?})",
                self.label
            ));
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(c) = self.client.take() {
            let mut c = c.into_inner().unwrap_or_else(PoisonError::into_inner);
            c.tx = None; // ends the worker loop
            if let Some(t) = c.thread.take() {
                let _ = t.join();
            }
        }
        if let Some(server) = self.server.take() {
            // shutdown(2) on the listening socket wakes the server's blocking accept.
            if let Some(l) = self.listener.take() {
                let _ = TcpStream::from(OwnedFd::from(l)).shutdown(Shutdown::Both);
            }
            let _ = server.join();
        }
        if let Some(mut c) = self.iperf.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.host_ns = None;
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "delete", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// B's echo server: per connection, read one byte, answer one byte, wait for the client to
/// close. Sequential (one client at a time). Ends when `stop` is set and it is woken.
fn serve(l: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let Ok((mut s, _)) = l.accept() else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Ok(1)) && s.write_all(&b).is_ok() {
            // Wait for the client's FIN so the client closes first (TIME_WAIT stays in A).
            let _ = s.read(&mut b);
        }
    }
}

/// A's client worker: serves requests until the channel closes.
fn client_worker(rx: &mpsc::Receiver<Req>, tx: &mpsc::Sender<Resp>) {
    let b = |port| SocketAddr::from((B_IP, port));
    while let Ok(req) = rx.recv() {
        let resp = match req {
            Req::Connect { port, timeout } => Resp::Connect(
                TcpStream::connect_timeout(&b(port), timeout)
                    .map(drop)
                    .map_err(|e| e.kind()),
            ),
            Req::Probe => {
                if tx.send(Resp::ProbeStarted).is_err() {
                    return;
                }
                Resp::Probe(probe(b(ECHO_PORT)))
            }
            Req::Crr { secs } => Resp::Crr(crr(b(ECHO_PORT), secs)),
        };
        if tx.send(resp).is_err() {
            return;
        }
    }
}

/// Retries a non-blocking connect with a 1 ms timeout until one succeeds (bounded).
fn probe(addr: SocketAddr) -> Option<(Instant, u32)> {
    let start = Instant::now();
    let mut attempts = 0u32;
    while start.elapsed() < PROBE_DEADLINE {
        attempts += 1;
        match TcpStream::connect_timeout(&addr, PROBE_ATTEMPT) {
            Ok(_) => return Some((Instant::now(), attempts)),
            Err(e) if e.kind() == ErrorKind::TimedOut => {}
            Err(_) => std::thread::sleep(PROBE_ATTEMPT),
        }
    }
    None
}

/// Sequential connection/request/response loop for `secs` seconds (at most 2 M connections;
/// gives up after 100 errors).
fn crr(addr: SocketAddr, secs: u32) -> CrrResult {
    let mut r = CrrResult::default();
    let start = Instant::now();
    let end = start + Duration::from_secs(u64::from(secs));
    let one = || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        Ok(())
    };
    while Instant::now() < end && r.conns < 2_000_000 && r.errors < 100 {
        let t = Instant::now();
        match one() {
            Ok(()) => {
                r.conns += 1;
                r.lat_us
                    .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            Err(_) => r.errors += 1,
        }
    }
    r.elapsed = start.elapsed();
    r
}

// ----------------------------------------------------------------------------------------
// Models and rulesets

fn extra_addr(k: usize) -> Ipv4Addr {
    // Odd addresses of 10.96.0.0/12: no two are adjacent, so the set keeps N elements.
    let base = u32::from(Ipv4Addr::new(10, 96, 0, 0));
    let off = u32::try_from(2 * k + 1).expect("small");
    assert!(off < (1 << 20), "stays inside 10.96.0.0/12");
    Ipv4Addr::from(base + off)
}

fn wep(pod: &str, app: &str, iface: &str, ip: Ipv4Addr) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {NODE}-k8s-{pod}-eth0
  namespace: x
  labels:
    app: {app}
    projectcalico.org/namespace: x
    projectcalico.org/orchestrator: k8s
spec:
  node: {NODE}
  orchestrator: k8s
  endpoint: eth0
  pod: {pod}
  interfaceName: {iface}
  ipNetworks:
  - {ip}/32
  profiles:
  - kns.x
"
    )
}

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n";

/// B admits TCP 5201 and 80 from `app == 'a'` (pod A and the NetworkSet).
const POLICY: &str = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-a
  namespace: x
spec:
  selector: app == 'b'
  types:
  - Ingress
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: app == 'a'
    destination:
      ports:
      - 5201
      - 80
";

fn decode(text: &str) -> Res<Vec<Resource>> {
    tortie_api::decode("bench.yaml", text, "default")
        .into_iter()
        .map(|r| r.map(|(_, res)| res).map_err(|e| e.to_string()))
        .collect()
}

/// The world for N extra addresses, and A's endpoint inside and outside the selector.
#[derive(Debug)]
struct Scenario {
    n: usize,
    /// The agent's incremental calculation (world + label index).
    graph: CalcGraph,
    a_in: Resource,
    a_out: Resource,
    cfg: NodeConfig,
}

impl Scenario {
    fn new(n: usize) -> Res<Scenario> {
        let mut docs = vec![
            NAMESPACE.to_string(),
            wep("b", "b", "calib2", B_IP),
            POLICY.to_string(),
        ];
        if n > 0 {
            let mut nets = String::with_capacity(n * 16);
            for k in 0..n {
                if k > 0 {
                    nets.push_str(", ");
                }
                let _ = write!(nets, "{}/32", extra_addr(k));
            }
            docs.push(format!(
                "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata:\n  name: extra\n  namespace: x\n  labels:\n    app: a\nspec:\n  nets: [{nets}]\n"
            ));
        }
        let resources = decode(&docs.join("---\n"))?;
        let mut graph = CalcGraph::new();
        for r in &resources {
            graph.upsert(r);
        }
        if !graph.world().errors().is_empty() {
            return Err(format!("world errors: {:?}", graph.world().errors()));
        }
        let one = |app: &str| -> Res<Resource> {
            let mut r = decode(&wep("a", app, "calia1", A_IP))?;
            r.pop().ok_or_else(|| "no resource".to_string())
        };
        let a_in = one("a")?;
        let a_out = one("a-off")?;
        graph.upsert(&a_in);
        let s = Scenario {
            n,
            graph,
            a_in,
            a_out,
            cfg: NodeConfig {
                node: NODE.into(),
                endpoint_to_host: EndpointToHost::Drop,
                // No pools: no NAT chain, so the comparison is policy only.
                nat: NatOutgoing::default(),
                ..NodeConfig::new(NODE)
            },
        };
        // Sanity: the selector set holds A and the N extras.
        let m = s.model();
        let members = selector_members(&m)?;
        if members.len() != n + 1 || !members.contains(&IpNet::from(std::net::IpAddr::V4(A_IP))) {
            return Err(format!("set has {} members, want {}", members.len(), n + 1));
        }
        Ok(s)
    }

    fn set_a(&mut self, inside: bool) {
        let r = if inside { &self.a_in } else { &self.a_out };
        self.graph.upsert(r);
    }

    /// What the agent computes: `dataplane::build_with` over the incremental graph.
    fn model(&self) -> DataplaneModel {
        dataplane::build_with(self.graph.world(), &self.cfg, &self.graph)
    }
}

/// Members of the model's one IPv4 selector set.
fn selector_members(m: &DataplaneModel) -> Res<BTreeSet<IpNet>> {
    let sets: Vec<_> = m
        .ip_sets
        .iter()
        .filter(|(k, _)| k.starts_with("s4-"))
        .collect();
    match sets.as_slice() {
        [(_, set)] => match &set.members {
            IpSetMembers::Nets(n) => Ok(n.clone()),
            IpSetMembers::NamedPorts(_) => Err("named-port set".into()),
        },
        other => Err(format!("want one s4 set, have {}", other.len())),
    }
}

/// The same policy as a linear iptables ruleset (for `iptables-restore`, replacing the
/// filter table).
fn iptables_rules(m: &DataplaneModel) -> Res<String> {
    let members = selector_members(m)?;
    let mut s = String::with_capacity(members.len() * 40 + 512);
    s.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    s.push_str(":tw-calib2 - [0:0]\n");
    s.push_str("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    s.push_str("-A FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    s.push_str("-A FORWARD -o calib2 -p tcp -m multiport --dports 80,5201 -j tw-calib2\n");
    s.push_str("-A FORWARD -o calib2 -j DROP\n");
    for n in &members {
        let _ = writeln!(s, "-A tw-calib2 -s {n} -j ACCEPT");
    }
    s.push_str("-A tw-calib2 -j DROP\nCOMMIT\n");
    Ok(s)
}

// ----------------------------------------------------------------------------------------
// nft runner that times its calls

#[derive(Debug, Default, Clone, Copy)]
struct RunLog {
    run: Option<Duration>,
    run_done: Option<Instant>,
    list: Option<Duration>,
}

#[derive(Debug, Default)]
struct TimedNft {
    inner: NftCommand,
    log: Mutex<RunLog>,
}

impl TimedNft {
    fn take(&self) -> RunLog {
        std::mem::take(&mut *lock(&self.log))
    }
}

impl NftRunner for TimedNft {
    fn run(&self, script: &str) -> Result<(), NftError> {
        let t = Instant::now();
        let r = self.inner.run(script);
        let mut l = lock(&self.log);
        l.run = Some(t.elapsed());
        l.run_done = Some(Instant::now());
        r
    }

    fn list(&self) -> Result<String, NftError> {
        let t = Instant::now();
        let r = self.inner.list();
        lock(&self.log).list = Some(t.elapsed());
        r
    }

    fn generation(&self) -> Option<u32> {
        self.inner.generation()
    }

    /// Timed as a commit, like `run` (it is one, without the `nft` process).
    fn update_elements(&self, changes: &[SetElements]) -> Result<bool, NftError> {
        let t = Instant::now();
        let r = self.inner.update_elements(changes);
        let mut l = lock(&self.log);
        l.run = Some(t.elapsed());
        l.run_done = Some(Instant::now());
        r
    }
}

// ----------------------------------------------------------------------------------------
// Statistics and output

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile.
fn pct(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[derive(Debug, Default)]
struct Raw(String);

impl Raw {
    fn add(&mut self, fields: &[String]) {
        self.0.push_str(&fields.join("\t"));
        self.0.push('\n');
    }
}

// ----------------------------------------------------------------------------------------
// B3

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum B3Case {
    None,
    Tortie,
    IptNft,
    IptLegacy,
}

impl B3Case {
    fn name(self) -> &'static str {
        match self {
            B3Case::None => "no ruleset",
            B3Case::Tortie => "tortie",
            B3Case::IptNft => "iptables-nft",
            B3Case::IptLegacy => "iptables-legacy",
        }
    }
}

#[derive(Debug, Default)]
struct B3Cell {
    gbps: Vec<f64>,
    rate: Vec<f64>,
    lat_us: Vec<f64>,
    errors: usize,
    install_ms: Vec<f64>,
}

fn iperf(lab: &Lab, secs: u32) -> Res<f64> {
    let t = (secs + 20).to_string();
    let b = B_IP.to_string();
    let s = secs.to_string();
    let mut last = String::new();
    for _try in 0..2 {
        match run_cmd(
            "timeout",
            &[
                &t,
                "ip",
                "netns",
                "exec",
                &lab.a,
                "iperf3",
                "-c",
                &b,
                "-t",
                &s,
                "-J",
                "--connect-timeout",
                "3000",
            ],
        ) {
            Ok(out) => {
                let v: serde_json::Value =
                    serde_json::from_str(&out).map_err(|e| format!("iperf3 json: {e}"))?;
                if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
                    return Ok(bps / 1e9);
                }
                last = v["error"].to_string();
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(format!("iperf3 failed twice: {last}"))
}

/// Installs `case`'s ruleset for model `m` in `lab` (after a flush); returns the install time.
fn install(lab: &Lab, case: B3Case, m: &DataplaneModel) -> Res<Duration> {
    lab.flush()?;
    let t = Instant::now();
    match case {
        B3Case::None => {}
        B3Case::Tortie => {
            lab.in_host(|| {
                let mut mgr = NftManager::new(NftCommand::new());
                mgr.apply(m).map(drop).map_err(|e| e.to_string())
            })??;
        }
        B3Case::IptNft | B3Case::IptLegacy => {
            let rules = iptables_rules(m)?;
            let prog = if case == B3Case::IptNft {
                "iptables-nft-restore"
            } else {
                "iptables-legacy-restore"
            };
            lab.in_host(|| run_stdin(prog, &["-w"], &rules))??;
        }
    }
    Ok(t.elapsed())
}

fn b3(opts: &Opts, main: &Lab, legacy: Option<&Lab>, raw: &mut Raw, out: &mut String) -> Res<()> {
    let mut cases = vec![B3Case::None, B3Case::Tortie, B3Case::IptNft];
    if legacy.is_some() {
        cases.push(B3Case::IptLegacy);
    }
    let mut table: Vec<(usize, Vec<B3Cell>)> = Vec::new();
    for &n in &opts.b3_sizes {
        log(format!("B3: N = {n}: building the model"));
        let sc = Scenario::new(n)?;
        let m = sc.model();
        let mut cells: Vec<B3Cell> = cases.iter().map(|_| B3Cell::default()).collect();
        for r in 0..opts.runs {
            for k in 0..cases.len() {
                let i = (k + r) % cases.len();
                let case = cases[i];
                let lab = if case == B3Case::IptLegacy {
                    legacy.ok_or("no legacy lab")?
                } else {
                    main
                };
                let took = install(lab, case, &m)?;
                lab.check(case != B3Case::None)?;
                let g = iperf(lab, opts.secs)?;
                let c = lab.crr(opts.crr_secs)?;
                log(format!(
                    "  N={n} round {} {:<16} install {:>7.1} ms  {g:6.2} Gbit/s  {:7.0} conn/s  ({} errors)",
                    r + 1,
                    case.name(),
                    ms(took),
                    c.rate(),
                    c.errors
                ));
                raw.add(&[
                    "b3".into(),
                    n.to_string(),
                    case.name().into(),
                    (r + 1).to_string(),
                    format!("{g:.3}"),
                    format!("{:.1}", c.rate()),
                    c.conns.to_string(),
                    c.errors.to_string(),
                    format!("{:.1}", pct(&lat(&c), 0.5)),
                    format!("{:.1}", pct(&lat(&c), 0.99)),
                    format!("{:.1}", ms(took)),
                ]);
                let cell = &mut cells[i];
                cell.gbps.push(g);
                cell.rate.push(c.rate());
                cell.lat_us.extend(lat(&c));
                cell.errors += c.errors;
                cell.install_ms.push(ms(took));
            }
        }
        main.flush()?;
        if let Some(l) = legacy {
            l.flush()?;
        }
        table.push((n, cells));
    }

    // Report.
    let idx = |c: B3Case| cases.iter().position(|x| *x == c);
    let med = |cells: &[B3Cell], c: B3Case, f: fn(&B3Cell) -> &Vec<f64>| {
        idx(c).map_or(f64::NAN, |i| median(f(&cells[i])))
    };
    let base_rate = table
        .first()
        .map_or(f64::NAN, |(_, c)| med(c, B3Case::Tortie, |x| &x.rate));
    let base_gbps = table
        .first()
        .map_or(f64::NAN, |(_, c)| med(c, B3Case::Tortie, |x| &x.gbps));
    let first_n = table.first().map_or(0, |(n, _)| *n);
    let _ = writeln!(
        out,
        "\n## B3: cost vs number of selected IPs (median of {} rounds; iperf3 -t {}; connection rate {} s)\n",
        opts.runs, opts.secs, opts.crr_secs
    );
    let _ = writeln!(
        out,
        "N = extra addresses in B's allowed set (the set holds N + 1 with A). \"vs N={first_n}\" compares tortie with its own first row;"
    );
    let _ = writeln!(
        out,
        "\"÷ ipt-nft\" is tortie over iptables-nft at the same N. conn/s: sequential new TCP connection, 1-byte request and response.\n"
    );
    let legacy_on = idx(B3Case::IptLegacy).is_some();
    let _ = write!(
        out,
        "| N | tortie Gbit/s | tortie conn/s | iptables-nft Gbit/s | iptables-nft conn/s |"
    );
    if legacy_on {
        let _ = write!(out, " iptables-legacy Gbit/s | iptables-legacy conn/s |");
    }
    let _ = writeln!(
        out,
        " no-ruleset Gbit/s | no-ruleset conn/s | tortie Gbit/s vs N={first_n} | tortie conn/s vs N={first_n} | tortie ÷ ipt-nft conn/s |"
    );
    let cols = if legacy_on { 11 } else { 9 };
    let _ = writeln!(out, "| ---: |{}", " ---: |".repeat(cols));
    for (n, cells) in &table {
        let tg = med(cells, B3Case::Tortie, |x| &x.gbps);
        let tr = med(cells, B3Case::Tortie, |x| &x.rate);
        let ig = med(cells, B3Case::IptNft, |x| &x.gbps);
        let ir = med(cells, B3Case::IptNft, |x| &x.rate);
        let _ = write!(out, "| {n} | {tg:.2} | {tr:.0} | {ig:.2} | {ir:.0} |");
        if legacy_on {
            let lg = med(cells, B3Case::IptLegacy, |x| &x.gbps);
            let lr = med(cells, B3Case::IptLegacy, |x| &x.rate);
            let _ = write!(out, " {lg:.2} | {lr:.0} |");
        }
        let ng = med(cells, B3Case::None, |x| &x.gbps);
        let nr = med(cells, B3Case::None, |x| &x.rate);
        let _ = writeln!(
            out,
            " {ng:.2} | {nr:.0} | {:+.1} % | {:+.1} % | {:.2}× |",
            (tg / base_gbps - 1.0) * 100.0,
            (tr / base_rate - 1.0) * 100.0,
            tr / ir
        );
    }
    let _ = writeln!(
        out,
        "\nEvery case against its own N={first_n} row and against the no-ruleset case of the same N (ratios of medians):\n"
    );
    let _ = writeln!(
        out,
        "| N | case | Gbit/s vs N={first_n} | conn/s vs N={first_n} | Gbit/s ÷ no ruleset | conn/s ÷ no ruleset |"
    );
    let _ = writeln!(out, "| ---: | --- | ---: | ---: | ---: | ---: |");
    let first = table.first().map(|(_, c)| c);
    for (n, cells) in &table {
        for &c in cases.iter().filter(|c| **c != B3Case::None) {
            let g = med(cells, c, |x| &x.gbps);
            let r = med(cells, c, |x| &x.rate);
            let g0 = first.map_or(f64::NAN, |f| med(f, c, |x| &x.gbps));
            let r0 = first.map_or(f64::NAN, |f| med(f, c, |x| &x.rate));
            let _ = writeln!(
                out,
                "| {n} | {} | {:+.1} % | {:+.1} % | {:.2}× | {:.2}× |",
                c.name(),
                (g / g0 - 1.0) * 100.0,
                (r / r0 - 1.0) * 100.0,
                g / med(cells, B3Case::None, |x| &x.gbps),
                r / med(cells, B3Case::None, |x| &x.rate)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nPer-connection time (connect + request + response), µs, pooled over rounds (p50 / p99), errors, and ruleset install time (median ms):\n"
    );
    let _ = write!(out, "| N |");
    for c in &cases {
        let _ = write!(
            out,
            " {} p50 / p99 µs | {} install ms |",
            c.name(),
            c.name()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| ---: |{}", " ---: | ---: |".repeat(cases.len()));
    for (n, cells) in &table {
        let _ = write!(out, "| {n} |");
        for c in cells {
            let err = if c.errors > 0 {
                format!(" ({} errors)", c.errors)
            } else {
                String::new()
            };
            let _ = write!(
                out,
                " {:.0} / {:.0}{err} | {:.1} |",
                pct(&c.lat_us, 0.5),
                pct(&c.lat_us, 0.99),
                median(&c.install_ms)
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "\nEvery round, per N and case:\n");
    let _ = writeln!(out, "| N | case | Gbit/s per round | conn/s per round |");
    let _ = writeln!(out, "| ---: | --- | --- | --- |");
    for (n, cells) in &table {
        for (c, cell) in cases.iter().zip(cells) {
            let g: Vec<String> = cell.gbps.iter().map(|x| format!("{x:.2}")).collect();
            let r: Vec<String> = cell.rate.iter().map(|x| format!("{x:.0}")).collect();
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {} |",
                c.name(),
                g.join(" "),
                r.join(" ")
            );
        }
    }
    Ok(())
}

fn lat(c: &CrrResult) -> Vec<f64> {
    c.lat_us.iter().map(|&x| f64::from(x)).collect()
}

// ----------------------------------------------------------------------------------------
// B4

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum B4Method {
    Tortie,
    NftFull,
    IptNft,
    IptLegacy,
    NaiveDiff,
}

impl B4Method {
    fn name(self) -> &'static str {
        match self {
            B4Method::Tortie => "tortie: build + NftManager::apply (incremental)",
            B4Method::NftFull => "peer: build + render + full `nft -f` reload",
            B4Method::IptNft => "peer: full `iptables-nft-restore`",
            B4Method::IptLegacy => "peer: full `iptables-legacy-restore`",
            B4Method::NaiveDiff => "peer: build + full render + diff + `nft -f` (no set reuse)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            B4Method::Tortie => "tortie",
            B4Method::NftFull => "nft-full",
            B4Method::IptNft => "ipt-nft",
            B4Method::IptLegacy => "ipt-legacy",
            B4Method::NaiveDiff => "naive-diff",
        }
    }
}

/// One timed change (A into the set).
#[derive(Debug, Default, Clone)]
struct Sample {
    /// Change → first successful connect.
    verdict: Duration,
    /// Change → the commit returned (`nft -f` / `iptables-restore` exited).
    committed: Duration,
    /// World update + `dataplane::build`.
    build: Duration,
    /// The apply step after the build (tortie: the `NftManager::apply` call).
    apply: Duration,
    /// Of which: the commit (`nft -f`, or netlink element updates) and a read-back `nft list table`.
    nft_run: Option<Duration>,
    nft_list: Option<Duration>,
    script_bytes: usize,
    attempts: u32,
}

/// State a method keeps between changes.
#[derive(Debug)]
enum State {
    Tortie(NftManager<TimedNft>),
    Nft {
        runner: TimedNft,
        last: Option<NftTable>,
    },
    Ipt(&'static str),
}

impl State {
    /// Applies the current world; fills the apply part of `s`.
    fn change(&mut self, method: B4Method, sc: &Scenario, s: &mut Sample) -> Res<()> {
        let t = Instant::now();
        let m = sc.model();
        s.build += t.elapsed();
        let t = Instant::now();
        match self {
            State::Tortie(mgr) => {
                mgr.runner().take();
                let st = mgr.apply(&m).map_err(|e| e.to_string())?;
                if st.mode != ApplyMode::Incremental || st.retried_full || !st.elements_only {
                    return Err(format!(
                        "apply was {:?} (retried_full {}, elements_only {})",
                        st.mode, st.retried_full, st.elements_only
                    ));
                }
                s.apply = t.elapsed();
                let l = mgr.runner().take();
                s.nft_run = l.run;
                s.nft_list = l.list;
                s.committed = l.run_done.map_or(Duration::ZERO, |d| d - t);
                s.script_bytes = st.script.len();
            }
            State::Nft { runner, last } => {
                let table = render(&m);
                let script = if method == B4Method::NaiveDiff {
                    diff::script(last.as_ref(), &table)
                } else {
                    diff::full_script(&table)
                };
                runner.take();
                runner.run(&script).map_err(|e| e.to_string())?;
                s.apply = t.elapsed();
                s.nft_run = runner.take().run;
                s.committed = s.apply;
                s.script_bytes = script.len();
                *last = Some(table);
            }
            State::Ipt(prog) => {
                let rules = iptables_rules(&m)?;
                let t2 = Instant::now();
                run_stdin(prog, &["-w"], &rules)?;
                s.apply = t.elapsed();
                s.nft_run = Some(t2.elapsed());
                s.committed = s.apply;
                s.script_bytes = rules.len();
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct B4Row {
    samples: Vec<Sample>,
    /// Apply times of the reverse change (A taken out again).
    out_apply: Vec<f64>,
}

fn b4_method(
    lab: &Lab,
    sc: &mut Scenario,
    method: B4Method,
    reps: usize,
    raw: &mut Raw,
) -> Res<B4Row> {
    lab.flush()?;
    sc.set_a(false);
    let n = sc.n;
    let row = lab.in_host(|| -> Res<B4Row> {
        // Initial state: A outside the set, applied in full.
        let mut state = match method {
            B4Method::Tortie => {
                let mut mgr = NftManager::new(TimedNft::default());
                mgr.apply(&sc.model()).map_err(|e| e.to_string())?;
                State::Tortie(mgr)
            }
            B4Method::NftFull | B4Method::NaiveDiff => {
                let runner = TimedNft::default();
                let t = render(&sc.model());
                runner
                    .run(&diff::full_script(&t))
                    .map_err(|e| e.to_string())?;
                State::Nft {
                    runner,
                    last: Some(t),
                }
            }
            B4Method::IptNft => State::Ipt("iptables-nft-restore"),
            B4Method::IptLegacy => State::Ipt("iptables-legacy-restore"),
        };
        if let State::Ipt(prog) = &state {
            run_stdin(prog, &["-w"], &iptables_rules(&sc.model())?)?;
        }
        let mut row = B4Row::default();
        for rep in 0..reps {
            // A must be denied now.
            let denied = lab.connect(ECHO_PORT, Duration::from_millis(50));
            if denied != Err(ErrorKind::TimedOut) {
                return Err(format!(
                    "rep {rep}: A→B:80 before the change: {denied:?}, want a timeout"
                ));
            }
            lab.probe_start()?;
            let mut s = Sample::default();
            let t0 = Instant::now();
            sc.set_a(true);
            s.build = t0.elapsed();
            state.change(method, sc, &mut s)?;
            let (hit, attempts) = lab.probe_result()?.ok_or_else(|| {
                format!("rep {rep}: no successful connect within {PROBE_DEADLINE:?}")
            })?;
            s.verdict = hit.saturating_duration_since(t0);
            s.attempts = attempts;
            // Committed is measured from the start of the apply step; make it from t0.
            s.committed += s.build;
            // Take A out again (timed for the record, verdict not probed).
            sc.set_a(false);
            let mut back = Sample::default();
            state.change(method, sc, &mut back)?;
            row.out_apply.push(ms(back.apply));
            row.samples.push(s);
        }
        Ok(row)
    })??;
    for (i, s) in row.samples.iter().enumerate() {
        raw.add(&[
            "b4".into(),
            n.to_string(),
            method.key().into(),
            (i + 1).to_string(),
            format!("{:.3}", ms(s.verdict)),
            format!("{:.3}", ms(s.committed)),
            format!("{:.3}", ms(s.build)),
            format!("{:.3}", ms(s.apply)),
            s.nft_run.map_or("-".into(), |d| format!("{:.3}", ms(d))),
            s.nft_list.map_or("-".into(), |d| format!("{:.3}", ms(d))),
            s.script_bytes.to_string(),
            s.attempts.to_string(),
        ]);
    }
    lab.flush()?;
    Ok(row)
}

/// In-process costs (no kernel) at one N: median of `k` runs each.
#[derive(Debug, Default)]
struct Micro {
    build: f64,
    render: f64,
    clone: f64,
    diff: f64,
    full_script: f64,
    incr_bytes: usize,
    full_bytes: usize,
    nft_noop: f64,
    nft_list: f64,
    nft_add_elem: f64,
}

fn time_med<T>(k: usize, mut f: impl FnMut() -> T) -> f64 {
    let v: Vec<f64> = (0..k)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            ms(t.elapsed())
        })
        .collect();
    median(&v)
}

fn micro(lab: &Lab, sc: &mut Scenario) -> Res<Micro> {
    let mut m = Micro::default();
    sc.set_a(false);
    let out_model = sc.model();
    sc.set_a(true);
    m.build = time_med(5, || sc.model());
    let in_model = sc.model();
    m.render = time_med(5, || render(&in_model));
    let t_out = render(&out_model);
    let t_in = render(&in_model);
    m.clone = time_med(5, || t_in.clone());
    m.diff = time_med(5, || diff::script(Some(&t_out), &t_in));
    m.full_script = time_med(5, || diff::full_script(&t_in));
    let incr = diff::script(Some(&t_out), &t_in);
    m.incr_bytes = incr.len();
    m.full_bytes = diff::full_script(&t_in).len();
    // nft process costs with the table (A outside) loaded: a no-op transaction, the read-back
    // listing, and the one-element add (then delete) the incremental change consists of.
    lab.flush()?;
    let (noop, list, add) = lab.in_host(|| -> Res<(f64, f64, f64)> {
        let nft = NftCommand::new();
        nft.run(&diff::full_script(&t_out))
            .map_err(|e| e.to_string())?;
        let noop = time_med(5, || nft.run("add table inet tortie\n"));
        let list = time_med(5, || nft.list());
        let undo = diff::script(Some(&t_in), &t_out);
        let mut v = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            nft.run(&incr).map_err(|e| e.to_string())?;
            v.push(ms(t.elapsed()));
            nft.run(&undo).map_err(|e| e.to_string())?;
        }
        Ok((noop, list, median(&v)))
    })??;
    lab.flush()?;
    m.nft_noop = noop;
    m.nft_list = list;
    m.nft_add_elem = add;
    Ok(m)
}

fn b4(opts: &Opts, main: &Lab, legacy: Option<&Lab>, raw: &mut Raw, out: &mut String) -> Res<()> {
    let mut methods = vec![B4Method::Tortie, B4Method::NftFull, B4Method::IptNft];
    if legacy.is_some() {
        methods.push(B4Method::IptLegacy);
    }
    if opts.naive {
        methods.push(B4Method::NaiveDiff);
    }
    let mut rows: Vec<(usize, Vec<B4Row>, Micro)> = Vec::new();
    for &n in &opts.b4_sizes {
        log(format!("B4: N = {n}: building the model"));
        let mut sc = Scenario::new(n)?;
        let mi = micro(main, &mut sc)?;
        log(format!(
            "  micro: build {:.1} ms, render {:.1} ms, diff {:.1} ms, nft no-op {:.1} ms, add-element {:.1} ms, list {:.1} ms",
            mi.build, mi.render, mi.diff, mi.nft_noop, mi.nft_add_elem, mi.nft_list
        ));
        let mut per = Vec::new();
        for &method in &methods {
            let lab = if method == B4Method::IptLegacy {
                legacy.ok_or("no legacy lab")?
            } else {
                main
            };
            let row = b4_method(lab, &mut sc, method, opts.reps, raw)?;
            let v: Vec<f64> = row.samples.iter().map(|s| ms(s.verdict)).collect();
            let a: Vec<f64> = row.samples.iter().map(|s| ms(s.apply)).collect();
            log(format!(
                "  N={n} {:<12} verdict p50 {:7.1} p99 {:7.1} ms; apply p50 {:7.1} p99 {:7.1} ms",
                method.key(),
                pct(&v, 0.5),
                pct(&v, 0.99),
                pct(&a, 0.5),
                pct(&a, 0.99)
            ));
            per.push(row);
        }
        rows.push((n, per, mi));
    }

    let _ = writeln!(
        out,
        "\n## B4: change → verdict flip ({} changes per N and method; p99 of {} samples is nearest-rank, i.e. the maximum below 100)\n",
        opts.reps, opts.reps
    );
    let _ = writeln!(
        out,
        "N = other addresses in B's allowed set. verdict = change (`CalcGraph` update) → first successful connect of the 1 ms probe;"
    );
    let _ = writeln!(
        out,
        "commit = change → the `nft`/`iptables-restore` process that commits exited; apply = the apply step alone (tortie: the `NftManager::apply` call, which also reads the table back; peers: render/generate + the one process). All ms.\n"
    );
    let _ = writeln!(
        out,
        "| N | method | verdict p50 | verdict p99 | commit p50 | apply p50 | apply p99 | apply p50, A out again | script bytes |"
    );
    let _ = writeln!(
        out,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (n, per, _) in &rows {
        for (method, row) in methods.iter().zip(per) {
            let f = |g: fn(&Sample) -> f64| row.samples.iter().map(g).collect::<Vec<f64>>();
            let v = f(|s| ms(s.verdict));
            let c = f(|s| ms(s.committed));
            let a = f(|s| ms(s.apply));
            let bytes = row.samples.first().map_or(0, |s| s.script_bytes);
            let _ = writeln!(
                out,
                "| {n} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {bytes} |",
                method.name(),
                pct(&v, 0.5),
                pct(&v, 0.99),
                pct(&c, 0.5),
                pct(&a, 0.5),
                pct(&a, 0.99),
                median(&row.out_apply)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nRatios to tortie at the same N (above 1: slower than tortie's incremental apply):\n"
    );
    let _ = writeln!(
        out,
        "| N | method | verdict p50 ÷ tortie | verdict p99 ÷ tortie | apply p50 ÷ tortie |"
    );
    let _ = writeln!(out, "| ---: | --- | ---: | ---: | ---: |");
    for (n, per, _) in &rows {
        let Some(t) = methods
            .iter()
            .position(|m| *m == B4Method::Tortie)
            .map(|i| &per[i])
        else {
            continue;
        };
        let q = |r: &B4Row, q: f64, g: fn(&Sample) -> f64| {
            pct(&r.samples.iter().map(g).collect::<Vec<f64>>(), q)
        };
        for (method, row) in methods.iter().zip(per) {
            if *method == B4Method::Tortie {
                continue;
            }
            let _ = writeln!(
                out,
                "| {n} | {} | {:.2}× | {:.2}× | {:.2}× |",
                method.name(),
                q(row, 0.5, |s| ms(s.verdict)) / q(t, 0.5, |s| ms(s.verdict)),
                q(row, 0.99, |s| ms(s.verdict)) / q(t, 0.99, |s| ms(s.verdict)),
                q(row, 0.5, |s| ms(s.apply)) / q(t, 0.5, |s| ms(s.apply)),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nWhere tortie's time goes (medians, ms). In the timed runs: build = `CalcGraph` update + `dataplane::build_with`; apply = `NftManager::apply`, of which commit (the member change as netlink element updates: no `nft` process), `nft list` (a read-back on the change path: 0 since the drift check lists instead, the manager only reads the nftables generation over netlink) and the rest (render + clone + diff + generation read). In-process micro-runs (median of 5): render, clone, diff; `nft` floors measured with the table of N loaded: a no-op transaction, and the incremental script alone.\n"
    );
    let _ = writeln!(
        out,
        "| N | build | apply | commit | `nft list` | rest | render | clone | diff | full_script | nft no-op | nft incremental alone | incremental bytes | full bytes |"
    );
    let _ = writeln!(out, "| ---: |{}", " ---: |".repeat(13));
    for (n, per, mi) in &rows {
        let Some(row) = methods
            .iter()
            .position(|m| *m == B4Method::Tortie)
            .map(|i| &per[i])
        else {
            continue;
        };
        let f = |g: fn(&Sample) -> f64| median(&row.samples.iter().map(g).collect::<Vec<f64>>());
        let build = f(|s| ms(s.build));
        let apply = f(|s| ms(s.apply));
        let run = f(|s| s.nft_run.map_or(f64::NAN, ms));
        let list = f(|s| s.nft_list.map_or(0.0, ms));
        let rest = f(|s| ms(s.apply) - s.nft_run.map_or(0.0, ms) - s.nft_list.map_or(0.0, ms));
        let _ = writeln!(
            out,
            "| {n} | {build:.1} | {apply:.1} | {run:.1} | {list:.1} | {rest:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            mi.render,
            mi.clone,
            mi.diff,
            mi.full_script,
            mi.nft_noop,
            mi.nft_add_elem,
            mi.incr_bytes,
            mi.full_bytes
        );
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------

fn real_main() -> Res<()> {
    let opts = parse_opts()?;
    let mut raw = Raw::default();
    raw.add(&[
        "# bench".into(),
        "n".into(),
        "case".into(),
        "run".into(),
        "fields...".into(),
    ]);
    log(format!("labs with prefix {}", opts.prefix));
    let main = Lab::new(&opts.prefix, "main", opts.pid_file.as_deref())?;
    let legacy = if opts.legacy {
        Some(Lab::new(&opts.prefix, "legacy", opts.pid_file.as_deref())?)
    } else {
        None
    };
    let mut out = String::new();
    let result = (|| -> Res<()> {
        if opts.b3 {
            b3(&opts, &main, legacy.as_ref(), &mut raw, &mut out)?;
        }
        if opts.b4 {
            b4(&opts, &main, legacy.as_ref(), &mut raw, &mut out)?;
        }
        Ok(())
    })();
    if let Some(p) = &opts.raw {
        std::fs::write(p, &raw.0).map_err(|e| format!("{p}: {e}"))?;
    }
    result?;
    print!("{out}");
    Ok(())
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log(format!("error: {e}"));
            std::process::ExitCode::FAILURE
        }
    }
}
