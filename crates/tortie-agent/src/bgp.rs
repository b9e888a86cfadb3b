//! The agent's BGP: runs the speaker for the current [`BgpPlan`], keeps the routes it learned,
//! and says whether every configured peer is up.
//!
//! The speaker restarts only when its identity changes (AS, router id, listen port, cluster id,
//! source addresses); peer and route changes are applied to the running speaker.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tortie_bgp::speaker::{
    self, PeerStatus, RouteChange, SocketFactory, Speaker, SpeakerConfig, SpeakerStatus,
};
use tortie_netlink::NetNs;

use crate::bgp_plan::BgpPlan;
use crate::route::{RouteSet, RouteTarget};

/// What the speaker reports to the agent.
#[derive(Debug)]
pub enum BgpEvent {
    /// A batch of best-route changes, for [`Bgp::absorb`].
    Routes(Vec<RouteChange>),
    /// A peer's status changed.
    Status,
}

/// One peer as `/bgp` serves it and `tortie node status` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerRow {
    pub peer_address: String,
    /// `node-to-node mesh`, `global` or `node specific`.
    pub peer_type: String,
    /// The RFC 4271 state name.
    pub state: String,
    /// Seconds since the Unix epoch of the last state change.
    pub since: u64,
    /// The state and, when not up, the last error.
    pub info: String,
    pub local_address: Option<String>,
    pub received: usize,
    pub accepted: usize,
    pub advertised: usize,
    /// A TCP MD5 password is set for the session.
    #[serde(default)]
    pub password: bool,
}

/// What `/bgp` serves: the peers, and the configuration problems of the current plan (peers
/// skipped and why, passwords that cannot be read).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpView {
    pub peers: Vec<BgpPeerRow>,
    #[serde(default)]
    pub problems: Vec<String>,
}

impl From<&PeerStatus> for BgpPeerRow {
    fn from(p: &PeerStatus) -> BgpPeerRow {
        BgpPeerRow {
            peer_address: p.addr.to_string(),
            peer_type: p.kind.to_string(),
            state: p.state.to_string(),
            since: p
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            info: p.info(),
            local_address: p.local_addr.map(|a| a.ip().to_string()),
            received: p.received,
            accepted: p.accepted,
            advertised: p.advertised,
            password: p.password,
        }
    }
}

/// The speaker identity: a change restarts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    local_as: u32,
    router_id: Ipv4Addr,
    listen_port: u16,
    cluster_id: Option<Ipv4Addr>,
    local_v6: Option<std::net::Ipv6Addr>,
}

/// The running BGP side of the agent.
#[derive(Debug)]
pub struct Bgp {
    host_netns: Option<PathBuf>,
    running: Option<(Identity, Speaker)>,
    routes_rx: Option<mpsc::UnboundedReceiver<Vec<RouteChange>>>,
    status_rx: Option<watch::Receiver<SpeakerStatus>>,
    /// Best routes learned from peers: prefix → next hop.
    learned: BTreeMap<IpNet, IpAddr>,
    /// Why there is no speaker, if there is none.
    error: Option<String>,
    /// The last apply could not start the speaker (e.g. the previous one's listener was
    /// still closing): the same plan is worth applying again.
    start_failed: bool,
    problems: Vec<String>,
    /// How many peers the last applied plan has; `None` before the first plan.
    configured: Option<usize>,
}

impl Bgp {
    /// BGP for an agent whose host network namespace is `host_netns` (its own when `None`).
    pub fn new(host_netns: Option<PathBuf>) -> Bgp {
        Bgp {
            host_netns,
            running: None,
            routes_rx: None,
            status_rx: None,
            learned: BTreeMap::new(),
            error: None,
            start_failed: false,
            problems: Vec::new(),
            configured: None,
        }
    }

    fn sockets(&self) -> SocketFactory {
        match &self.host_netns {
            None => speaker::local_sockets(),
            Some(path) => {
                let path = path.clone();
                Arc::new(move |domain| {
                    let ns = NetNs::open(&path).map_err(std::io::Error::other)?;
                    ns.run(|| {
                        socket2::Socket::new(
                            domain,
                            socket2::Type::STREAM,
                            Some(socket2::Protocol::TCP),
                        )
                    })
                    .map_err(std::io::Error::other)?
                })
            }
        }
    }

    /// Makes the speaker match `plan` (or stops it when there is no plan).
    pub async fn apply(&mut self, plan: Result<BgpPlan, String>) {
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                if self.error.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "BGP is not running");
                }
                self.stop().await;
                self.error = Some(e);
                self.start_failed = false;
                return;
            }
        };
        for p in &plan.problems {
            if !self.problems.contains(p) {
                tracing::warn!(problem = %p, "BGP configuration problem");
            }
        }
        self.problems = plan.problems.clone();
        let id = Identity {
            local_as: plan.local_as,
            router_id: plan.router_id,
            listen_port: plan.listen_port,
            cluster_id: plan.cluster_id,
            local_v6: plan.node_addrs.ipv6,
        };
        if self.running.as_ref().is_none_or(|(cur, _)| *cur != id) {
            self.stop().await;
            let config = SpeakerConfig {
                local_as: id.local_as,
                router_id: id.router_id,
                listen_port: Some(id.listen_port),
                cluster_id: id.cluster_id,
                local_v4: Some(id.router_id),
                local_v6: id.local_v6,
                sockets: self.sockets(),
            };
            match Speaker::start(config).await {
                Ok((s, routes)) => {
                    tracing::info!(asn = id.local_as, router_id = %id.router_id, port = id.listen_port, "BGP speaker started");
                    self.status_rx = Some(s.status());
                    self.routes_rx = Some(routes);
                    self.running = Some((id, s));
                    self.error = None;
                    self.start_failed = false;
                }
                Err(e) => {
                    let e = format!("cannot start the BGP speaker: {e}");
                    tracing::warn!(error = %e);
                    self.error = Some(e);
                    self.start_failed = true;
                    return;
                }
            }
        }
        if let Some((_, s)) = &self.running {
            self.configured = Some(plan.peers.len());
            s.set_peers(plan.peers.clone());
            s.set_local_routes(crate::bgp_plan::originated_routes(&plan));
        }
    }

    async fn stop(&mut self) {
        if let Some((_, s)) = self.running.take() {
            s.shutdown().await;
        }
        self.routes_rx = None;
        self.status_rx = None;
        self.learned.clear();
    }

    /// Whether the last [`apply`](Self::apply) failed to start the speaker, so that applying
    /// the same plan again later may succeed.
    pub fn start_failed(&self) -> bool {
        self.start_failed
    }

    /// Waits for the next thing the speaker reports; never resolves without a speaker.
    pub async fn next_event(&mut self) -> BgpEvent {
        let (Some(routes), Some(status)) = (&mut self.routes_rx, &mut self.status_rx) else {
            return std::future::pending().await;
        };
        tokio::select! {
            Some(c) = routes.recv() => BgpEvent::Routes(c),
            Ok(()) = status.changed() => BgpEvent::Status,
            else => std::future::pending().await,
        }
    }

    /// Applies a batch from [`Bgp::next_event`]; returns the prefixes whose learned next hop
    /// changed (empty when nothing did), for [`Bgp::desired_at`].
    pub fn absorb(&mut self, changes: Vec<RouteChange>) -> Vec<IpNet> {
        let mut changed = Vec::new();
        for (prefix, nh) in changes {
            let differs = match nh {
                Some(nh) => self.learned.insert(prefix, nh) != Some(nh),
                None => self.learned.remove(&prefix).is_some(),
            };
            if differs {
                changed.push(prefix);
            }
        }
        changed
    }

    /// The desired routes with BGP: `base` (the node's own blackholes) wins, and every other
    /// learned prefix is routed via its next hop.
    pub fn desired_routes(&self, base: &RouteSet) -> RouteSet {
        let mut out = base.clone();
        for (prefix, nh) in &self.learned {
            out.entry(*prefix).or_insert(RouteTarget::Via(*nh));
        }
        out
    }

    /// The route [`Bgp::desired_routes`] has at `prefix`, without building the whole set: how
    /// a batch of learned changes updates the routes manager.
    pub fn desired_at(&self, base: &RouteSet, prefix: &IpNet) -> Option<RouteTarget> {
        base.get(prefix)
            .copied()
            .or_else(|| self.learned.get(prefix).map(|nh| RouteTarget::Via(*nh)))
    }

    /// Whether every peer of the current plan is Established and has sent its whole table
    /// (true with no peers; false before the first plan, or without a speaker).
    pub fn converged(&self) -> bool {
        let Some(n) = self.configured else {
            return false;
        };
        let peers = self.peers();
        self.running.is_some() && peers.len() == n && peers.iter().all(|p| p.synced)
    }

    /// Best routes learned from peers.
    pub fn learned(&self) -> &BTreeMap<IpNet, IpAddr> {
        &self.learned
    }

    /// The peers' status (empty without a speaker).
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.status_rx
            .as_ref()
            .map(|rx| rx.borrow().peers.clone())
            .unwrap_or_default()
    }

    /// The configuration problems of the last plan (peers skipped, passwords not readable).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// `Ok` when the speaker runs, every configured peer is Established and the plan had no
    /// problem; else the first reason: the peer, the local address and the error, or the
    /// problem (a peer the plan had to skip is as missing as one that is down).
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        for p in self.peers() {
            if p.state != tortie_bgp::fsm::State::Established {
                let local = p
                    .local_addr
                    .map_or_else(|| "-".to_string(), |a| a.ip().to_string());
                return Err(format!(
                    "BGP peer {} ({}) is not established (local {}): {}",
                    p.addr,
                    p.kind,
                    local,
                    p.info()
                ));
            }
        }
        if let Some(p) = self.problems.first() {
            return Err(format!("BGP configuration problem: {p}"));
        }
        Ok(())
    }

    /// Stops the speaker without a NOTIFICATION: the sockets just close, so peers that
    /// negotiated graceful restart keep this node's routes until it is back (RFC 4724).
    /// Routes stay in the kernel.
    pub async fn shutdown(&mut self) {
        self.running = None;
        self.routes_rx = None;
        self.status_rx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route_manager::RouteManager;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A speaker that cannot bind its port (another socket still holds it, as the previous
    /// speaker's listener can for a moment after a restart) is reported and flagged for a
    /// retry, and the same plan starts it once the port is free. No peers: nothing is sent.
    #[tokio::test]
    async fn a_speaker_that_cannot_listen_is_retried() {
        let holder = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = holder.local_addr().expect("addr").port();
        let plan = || {
            Ok(crate::bgp_plan::BgpPlan {
                local_as: 64512,
                router_id: "198.18.0.11".parse().unwrap(),
                listen_port: port,
                cluster_id: None,
                node_addrs: crate::model::NodeAddrs {
                    ipv4: Some("198.18.0.11".parse().unwrap()),
                    ipv6: None,
                },
                peers: Vec::new(),
                originate: Default::default(),
                communities: Vec::new(),
                problems: Vec::new(),
            })
        };
        let mut bgp = Bgp::new(None);
        bgp.apply(plan()).await;
        assert!(bgp.start_failed());
        let why = bgp.readiness().expect_err("not running");
        assert!(why.contains("cannot start the BGP speaker"), "{why}");
        drop(holder);
        bgp.apply(plan()).await;
        assert!(!bgp.start_failed());
        assert_eq!(bgp.readiness(), Ok(()));
        bgp.shutdown().await;
    }

    #[test]
    fn learned_changes_update_the_desired_routes_by_delta() {
        let mut bgp = Bgp::new(None);
        let base = RouteSet::from([(net("10.244.1.0/26"), RouteTarget::Blackhole)]);
        let mut m = RouteManager::new();
        m.on_update(bgp.desired_routes(&base));
        let batches: Vec<Vec<RouteChange>> = vec![
            vec![
                (net("10.244.2.0/26"), Some(ip("198.18.0.12"))),
                (net("10.244.3.0/26"), Some(ip("198.18.0.13"))),
                // The own block learned back from a peer: the blackhole stays.
                (net("10.244.1.0/26"), Some(ip("198.18.0.12"))),
            ],
            vec![
                (net("10.244.2.0/26"), Some(ip("198.18.0.12"))), // no change
                (net("10.244.3.0/26"), Some(ip("198.18.0.14"))),
                (net("10.244.9.0/26"), None), // never learned
            ],
            vec![(net("10.244.3.0/26"), None), (net("10.244.1.0/26"), None)],
        ];
        let changed: Vec<Vec<IpNet>> = batches
            .into_iter()
            .map(|batch| {
                let changed = bgp.absorb(batch);
                m.on_changes(changed.iter().map(|p| (*p, bgp.desired_at(&base, p))));
                assert_eq!(*m.desired(), bgp.desired_routes(&base));
                changed
            })
            .collect();
        assert_eq!(
            changed,
            [
                vec![
                    net("10.244.2.0/26"),
                    net("10.244.3.0/26"),
                    net("10.244.1.0/26")
                ],
                vec![net("10.244.3.0/26")],
                vec![net("10.244.3.0/26"), net("10.244.1.0/26")],
            ]
        );
        assert_eq!(
            *m.desired(),
            RouteSet::from([
                (net("10.244.1.0/26"), RouteTarget::Blackhole),
                (net("10.244.2.0/26"), RouteTarget::Via(ip("198.18.0.12"))),
            ])
        );
    }
}
