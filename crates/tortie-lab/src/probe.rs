//! Probing reachability from inside a namespace: a TCP connect, or a UDP datagram that must
//! come back echoed, within a timeout. And the matrix: every ordered pod pair for every
//! port/protocol, run on a bounded pool of worker threads.
//!
//! A probe only ever targets an address the lab assigned (a pod, host or node address), and
//! runs inside a lab namespace, so its packets stay on the lab's links.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::netns::{self, NetnsError};
use crate::spec::{PortProto, Protocol};

/// Most probes that run at once.
pub const MAX_PARALLEL: usize = 32;

/// Probes `to` from inside `netns`; `Ok(true)` means allowed.
pub fn probe(
    netns: &str,
    to: IpAddr,
    pp: PortProto,
    timeout: Duration,
) -> Result<bool, NetnsError> {
    netns::run_in(netns, || probe_here(to, pp, timeout))
}

/// Probes from the current thread's namespace.
pub fn probe_here(to: IpAddr, pp: PortProto, timeout: Duration) -> bool {
    let addr = SocketAddr::new(to, pp.port);
    match pp.protocol {
        Protocol::Tcp => TcpStream::connect_timeout(&addr, timeout).is_ok(),
        Protocol::Udp => udp_echo(addr, timeout),
    }
}

/// Sends a nonce (twice, in case the first is lost while neighbours resolve) and waits for
/// the same bytes back. An ICMP unreachable shows up as `ConnectionRefused`: denied.
fn udp_echo(addr: SocketAddr, timeout: Duration) -> bool {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let Ok(sock) = UdpSocket::bind(local) else {
        return false;
    };
    if sock.connect(addr).is_err() {
        return false;
    }
    let nonce = format!("tortie-lab probe {}", uuid::Uuid::new_v4().simple());
    let deadline = Instant::now() + timeout;
    let resend_at = Instant::now() + timeout / 2;
    let mut resent = false;
    if sock.send(nonce.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 256];
    const ATTEMPTS: usize = 64;
    for _ in 0..ATTEMPTS {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let until = if resent { deadline } else { resend_at.max(now) };
        let wait = until
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        if sock.set_read_timeout(Some(wait)).is_err() {
            return false;
        }
        match sock.recv(&mut buf) {
            Ok(n) if &buf[..n] == nonce.as_bytes() => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !resent {
                    resent = true;
                    let _ = sock.send(nonce.as_bytes());
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// One probe of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub pp: PortProto,
    pub from: String,
    pub from_netns: String,
    pub to: String,
    pub to_ip: IpAddr,
}

/// `{"80/tcp": {"x/a": {"y/b": true}}}`.
pub type Matrix = BTreeMap<String, BTreeMap<String, BTreeMap<String, bool>>>;

/// Runs every job on at most `parallel` threads; a probe that cannot even start counts as
/// denied (and is reported on stderr).
pub fn run_matrix(jobs: &[Job], timeout: Duration, parallel: usize) -> Matrix {
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::with_capacity(jobs.len()));
    let workers = parallel.clamp(1, MAX_PARALLEL).min(jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(job) = jobs.get(i) else { break };
                    let ok = match probe(&job.from_netns, job.to_ip, job.pp, timeout) {
                        Ok(ok) => ok,
                        Err(e) => {
                            eprintln!("warning: probe {} -> {} {}: {e}", job.from, job.to, job.pp);
                            false
                        }
                    };
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, ok));
                }
            });
        }
    });
    let mut out = Matrix::new();
    for (i, ok) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        let job = &jobs[i];
        out.entry(job.pp.to_string())
            .or_default()
            .entry(job.from.clone())
            .or_default()
            .insert(job.to.clone(), ok);
    }
    out
}

/// Renders the matrix as one grid per port/protocol: rows are sources, columns destinations,
/// `.` allowed and `X` denied (the layout of Kubernetes policy test tools).
pub fn render_table(m: &Matrix) -> String {
    let mut out = String::new();
    for (pp, rows) in m {
        let cols: Vec<&String> = {
            let mut c: Vec<&String> = rows.values().flat_map(|r| r.keys()).collect();
            c.sort();
            c.dedup();
            c
        };
        let first = rows
            .keys()
            .map(String::len)
            .chain([pp.len()])
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = cols.iter().map(|c| c.len().max(1)).collect();
        out.push_str(&format!("{pp:<first$}"));
        for (c, w) in cols.iter().zip(&widths) {
            out.push_str(&format!("  {c:<w$}"));
        }
        trim_line(&mut out);
        for (from, row) in rows {
            out.push_str(&format!("{from:<first$}"));
            for (c, w) in cols.iter().zip(&widths) {
                let cell = match row.get(*c) {
                    Some(true) => ".",
                    Some(false) => "X",
                    None => "-",
                };
                out.push_str(&format!("  {cell:<w$}"));
            }
            trim_line(&mut out);
        }
        out.push('\n');
    }
    out.push_str(". allowed   X denied\n");
    out
}

/// Ends the current line without trailing spaces.
fn trim_line(out: &mut String) {
    out.truncate(out.trim_end_matches(' ').len());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Matrix {
        let mut m = Matrix::new();
        for (pp, from, to, ok) in [
            ("80/tcp", "x/a", "x/a", true),
            ("80/tcp", "x/a", "y/b", false),
            ("80/tcp", "y/b", "x/a", true),
            ("80/tcp", "y/b", "y/b", true),
            ("81/udp", "x/a", "y/b", true),
        ] {
            m.entry(pp.to_string())
                .or_default()
                .entry(from.to_string())
                .or_default()
                .insert(to.to_string(), ok);
        }
        m
    }

    #[test]
    fn matrix_json_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "80/tcp": {"x/a": {"x/a": true, "y/b": false}, "y/b": {"x/a": true, "y/b": true}},
                "81/udp": {"x/a": {"y/b": true}},
            })
        );
    }

    #[test]
    fn matrix_table() {
        let t = render_table(&sample());
        assert_eq!(
            t,
            "80/tcp  x/a  y/b\nx/a     .    X\ny/b     .    .\n\n\
             81/udp  y/b\nx/a     .\n\n. allowed   X denied\n"
        );
    }

    #[test]
    fn an_empty_job_list_gives_an_empty_matrix() {
        assert!(run_matrix(&[], Duration::from_millis(10), 8).is_empty());
    }

    #[test]
    fn jobs_in_a_missing_namespace_count_as_denied() {
        let jobs = [Job {
            pp: PortProto::new(80, Protocol::Tcp),
            from: "x/a".into(),
            from_netns: "tortie-lab-no-such-namespace".into(),
            to: "x/b".into(),
            to_ip: IpAddr::from([198, 18, 0, 11]),
        }];
        let m = run_matrix(&jobs, Duration::from_millis(10), 4);
        assert!(!m["80/tcp"]["x/a"]["x/b"]);
    }
}
