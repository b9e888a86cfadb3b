//! tortie's own [`Speaker`] running inside a host namespace of a [`Topology`], for interop
//! tests against the daemons of [`super::peers`].
//!
//! A [`Tortie`] owns a small tokio runtime of its own, so test code stays synchronous like the
//! rest of the harness (whose waits block their thread). Its sockets are created inside the
//! host's namespace by a [`SocketFactory`] that enters it with [`NetNs::run`], the way the
//! agent does (`crates/tortie-agent/src/bgp.rs`); the test process itself never changes
//! namespace.
//!
//! Every [`RouteChange`] the speaker reports is recorded in a [`RouteLog`] (in order, with the
//! time it arrived) and, with [`TortieConfig::install_kernel_routes`], applied to the host
//! namespace's main table as `proto 81` routes, as the agent would.
//!
//! [`Tortie::crash`] drops the [`Speaker`] (every socket closes, no NOTIFICATION), and
//! [`Tortie::start_again`] starts a new one with the same configuration, peers and local
//! routes. `Drop` ends the speaker and the runtime; the [`Topology`] removes the namespace.
//!
//! [`Topology`]: super::netns::Topology

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::IpNet;
use socket2::{Protocol, Socket, Type};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tortie_bgp::speaker::{
    self, PeerConfig, PeerStatus, RouteChange, SocketFactory, Speaker, SpeakerConfig, SpeakerStatus,
};
use tortie_netlink::NetNs;
use tortie_netlink::route::{Route, delete_route, replace_route};

use super::netns::Host;
use super::wait_for;

/// The route protocol tag of tortie's BGP routes (`proto 81`, as the agent installs them).
pub const BGP_ROUTE_PROTOCOL: u8 = 81;

/// How a [`Tortie`] runs.
#[derive(Debug, Clone)]
pub struct TortieConfig {
    pub asn: u32,
    /// `Some` makes it a route reflector with this cluster id.
    pub cluster_id: Option<Ipv4Addr>,
    /// Apply the route changes to the host namespace's kernel table (`proto 81`).
    pub install_kernel_routes: bool,
}

impl TortieConfig {
    pub fn new(asn: u32) -> TortieConfig {
        TortieConfig {
            asn,
            cluster_id: None,
            install_kernel_routes: false,
        }
    }
}

/// One route change as the test saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    pub at: Instant,
    pub prefix: IpNet,
    /// `Some(next hop)`: install; `None`: remove.
    pub next_hop: Option<IpAddr>,
}

/// What the speaker's route-change receiver delivered.
#[derive(Debug, Default)]
pub struct RouteLog {
    /// Every change, in arrival order.
    pub changes: Vec<LoggedChange>,
    /// The current state: prefix → next hop (what the agent would have installed).
    pub table: BTreeMap<IpNet, IpAddr>,
    /// Failures to apply a change to the kernel.
    pub install_errors: Vec<String>,
}

/// tortie's speaker in a host namespace. See the module documentation.
#[derive(Debug)]
pub struct Tortie {
    host: Host,
    cfg: TortieConfig,
    speaker_cfg: SpeakerConfig,
    peers: Vec<PeerConfig>,
    local: Vec<IpNet>,
    log: Arc<Mutex<RouteLog>>,
    speaker: Option<Speaker>,
    /// Dropped last: ends every task (and so every socket) still running.
    rt: Runtime,
}

/// Sockets created inside the namespace at `path`, as the agent makes them.
pub fn sockets_in(path: PathBuf) -> SocketFactory {
    Arc::new(move |domain| {
        let ns = NetNs::open(&path).map_err(std::io::Error::other)?;
        ns.run(|| Socket::new(domain, Type::STREAM, Some(Protocol::TCP)))
            .map_err(std::io::Error::other)?
    })
}

impl Tortie {
    /// Starts a speaker in `host`'s namespace: router id and IPv4 source its IPv4 underlay
    /// address, IPv6 source its IPv6 one, listening on port 179. No peers yet.
    pub fn start(host: &Host, cfg: TortieConfig) -> anyhow::Result<Tortie> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("tortie-{}", host.name))
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let speaker_cfg = SpeakerConfig {
            local_as: cfg.asn,
            router_id: host.v4,
            listen_port: Some(179),
            cluster_id: cfg.cluster_id,
            local_v4: Some(host.v4),
            local_v6: Some(host.v6),
            sockets: sockets_in(NetNs::path_of(&host.netns)),
        };
        let mut t = Tortie {
            host: host.clone(),
            cfg,
            speaker_cfg,
            peers: Vec::new(),
            local: Vec::new(),
            log: Arc::new(Mutex::new(RouteLog::default())),
            speaker: None,
            rt,
        };
        t.start_again()?;
        Ok(t)
    }

    /// Starts the speaker (again, after [`Tortie::crash`]) with the current peers and local
    /// routes. The route log and the kernel routes carry over, as in an agent that restarts
    /// its speaker.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.speaker.is_none(), "the speaker is running already");
        let (speaker, routes) = self
            .rt
            .block_on(Speaker::start(self.speaker_cfg.clone()))
            .with_context(|| format!("starting tortie's speaker in {}", self.host.netns))?;
        let install = if self.cfg.install_kernel_routes {
            let _rt = self.rt.enter();
            let ns = NetNs::named(&self.host.netns)?;
            Some(tortie_netlink::netlink_handle_in(&ns)?)
        } else {
            None
        };
        self.rt
            .spawn(record_changes(routes, self.log.clone(), install));
        speaker.set_peers(self.peers.clone());
        speaker.set_local_routes(speaker::originate(self.local.clone()));
        self.speaker = Some(speaker);
        Ok(())
    }

    /// Drops the speaker: every session ends with its TCP connection closing, without a
    /// NOTIFICATION, as when the process dies.
    pub fn crash(&mut self) {
        drop(self.speaker.take());
        // Let the aborted tasks be dropped (closing their sockets) before going on.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Stops every session with a Cease NOTIFICATION.
    pub fn shutdown(&mut self) {
        if let Some(s) = self.speaker.take() {
            self.rt.block_on(s.shutdown());
        }
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The local address of the given family.
    pub fn addr(&self, v6: bool) -> IpAddr {
        self.host.addr(v6)
    }

    /// Replaces the peer set.
    pub fn set_peers(&mut self, peers: Vec<PeerConfig>) {
        self.peers = peers;
        if let Some(s) = &self.speaker {
            s.set_peers(self.peers.clone());
        }
    }

    /// Replaces the locally originated prefixes.
    pub fn originate(&mut self, prefixes: &[IpNet]) {
        self.local = prefixes.to_vec();
        if let Some(s) = &self.speaker {
            s.set_local_routes(speaker::originate(self.local.clone()));
        }
    }

    /// The speaker's status (empty while it is crashed).
    pub fn status(&self) -> SpeakerStatus {
        self.speaker
            .as_ref()
            .map(|s| s.status().borrow().clone())
            .unwrap_or_default()
    }

    /// The status of the session with `peer`.
    pub fn peer(&self, peer: IpAddr) -> Option<PeerStatus> {
        self.status().peers.into_iter().find(|p| p.addr == peer)
    }

    /// Waits until the session with `peer` satisfies `want`; returns its status.
    pub fn wait_peer(
        &self,
        peer: IpAddr,
        what: &str,
        timeout: Duration,
        want: impl Fn(&PeerStatus) -> bool,
    ) -> anyhow::Result<PeerStatus> {
        wait_for(
            &format!("tortie's session with {peer} to be {what}"),
            timeout,
            || self.peer(peer).filter(|p| want(p)),
            || format!("status: {:?}", self.peer(peer)),
        )
    }

    /// Waits until the session with `peer` is Established; returns how long that took.
    pub fn wait_established(&self, peer: IpAddr, timeout: Duration) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        self.wait_peer(peer, "Established", timeout, |p| {
            p.state == tortie_bgp::fsm::State::Established
        })?;
        Ok(t0.elapsed())
    }

    /// Waits until the session with `peer` is Established and the peer has sent End-of-RIB
    /// for every family (its whole table).
    pub fn wait_synced(&self, peer: IpAddr, timeout: Duration) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        self.wait_peer(peer, "Established and synced", timeout, |p| p.synced)?;
        Ok(t0.elapsed())
    }

    pub fn log(&self) -> MutexGuard<'_, RouteLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The routes the speaker reported as installed: prefix → next hop.
    pub fn routes(&self) -> BTreeMap<IpNet, IpAddr> {
        self.log().table.clone()
    }

    /// The changes that arrived at or after `since`.
    pub fn changes_since(&self, since: Instant) -> Vec<LoggedChange> {
        self.log()
            .changes
            .iter()
            .filter(|c| c.at >= since)
            .cloned()
            .collect()
    }

    /// Waits until the route change log says `prefix` is installed via `next_hop`
    /// (`Some`), or not installed (`None`).
    pub fn wait_route(
        &self,
        prefix: IpNet,
        next_hop: Option<IpAddr>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait_for(
            &format!("tortie's route to {prefix} to be {next_hop:?}"),
            timeout,
            || (self.routes().get(&prefix).copied() == next_hop).then_some(()),
            || {
                format!(
                    "routes: {:?}\nstatus: {:?}",
                    self.routes(),
                    self.status().peers
                )
            },
        )
    }
}

impl Drop for Tortie {
    fn drop(&mut self) {
        drop(self.speaker.take());
    }
}

/// Drains the speaker's route changes into `log` (and the kernel) until the speaker ends.
async fn record_changes(
    mut routes: mpsc::UnboundedReceiver<Vec<RouteChange>>,
    log: Arc<Mutex<RouteLog>>,
    kernel: Option<tortie_netlink::Handle>,
) {
    while let Some(batch) = routes.recv().await {
        for (prefix, next_hop) in batch {
            let mut error = None;
            if let Some(h) = &kernel {
                let res = match next_hop {
                    Some(gw) => {
                        replace_route(h, &Route::via(prefix, gw).with_protocol(BGP_ROUTE_PROTOCOL))
                            .await
                    }
                    None => {
                        delete_route(h, &Route::unicast(prefix).with_protocol(BGP_ROUTE_PROTOCOL))
                            .await
                            .map(|_| ())
                    }
                };
                error = res.err().map(|e| format!("{prefix} {next_hop:?}: {e}"));
            }
            let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
            l.changes.push(LoggedChange {
                at: Instant::now(),
                prefix,
                next_hop,
            });
            match next_hop {
                Some(nh) => l.table.insert(prefix, nh),
                None => l.table.remove(&prefix),
            };
            l.install_errors.extend(error);
        }
    }
}
