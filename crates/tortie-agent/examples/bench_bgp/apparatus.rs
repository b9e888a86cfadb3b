//! The apparatus: the feeders and the monitor, tortie speakers in their own namespaces
//! driven from the bench process (on its runtime), identical for every DUT. Each folds the
//! best-route changes its speaker reports into a table and records when the table first
//! reached the size it was told to [`Apparatus::expect`].

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::IpNet;
use tokio::runtime::Runtime;
use tortie_bgp::fsm::State;
use tortie_bgp::speaker::{PeerConfig, Speaker, SpeakerConfig};
use tortie_netlink::NetNs;

use crate::SESSION_WAIT;
use crate::dut::{PeerArg, peer_config};
use crate::support::netns::Host;

/// An IPv4-only eBGP peer without graceful restart, as the daemons are configured;
/// `export: false` sends it nothing.
pub fn v4_peer(addr: Ipv4Addr, asn: u32, passive: bool, export: bool) -> PeerConfig {
    let mut p = peer_config(&PeerArg { addr, asn, export });
    p.passive = passive;
    p
}

/// A feeder or the monitor: a speaker in `host`'s namespace, driven from this process.
pub struct Apparatus {
    pub speaker: Speaker,
    /// Prefixes currently learned (the route-change log folded).
    learned: Arc<AtomicUsize>,
    /// When `learned` first reached `target`.
    reached: Arc<Mutex<Option<Instant>>>,
    target: Arc<AtomicUsize>,
}

impl Apparatus {
    pub fn start(
        rt: &Runtime,
        host: &Host,
        asn: u32,
        listen: bool,
        peers: Vec<PeerConfig>,
    ) -> anyhow::Result<Apparatus> {
        let cfg = SpeakerConfig {
            local_as: asn,
            router_id: host.v4,
            listen_port: listen.then_some(179),
            cluster_id: None,
            local_v4: Some(host.v4),
            local_v6: None,
            sockets: crate::support::tortie::sockets_in(NetNs::path_of(&host.netns)),
        };
        let (speaker, mut routes) = rt
            .block_on(Speaker::start(cfg))
            .with_context(|| format!("speaker in {}", host.netns))?;
        let learned = Arc::new(AtomicUsize::new(0));
        let reached = Arc::new(Mutex::new(None));
        let target = Arc::new(AtomicUsize::new(usize::MAX));
        {
            let (learned, reached, target) = (learned.clone(), reached.clone(), target.clone());
            rt.spawn(async move {
                let mut table: HashSet<IpNet> = HashSet::new();
                while let Some(batch) = routes.recv().await {
                    for (prefix, nh) in batch {
                        match nh {
                            Some(_) => table.insert(prefix),
                            None => table.remove(&prefix),
                        };
                    }
                    learned.store(table.len(), Ordering::Relaxed);
                    if table.len() >= target.load(Ordering::Relaxed) {
                        let mut r = reached.lock().unwrap_or_else(|e| e.into_inner());
                        if r.is_none() {
                            *r = Some(Instant::now());
                        }
                    }
                }
            });
        }
        speaker.set_peers(peers);
        Ok(Apparatus {
            speaker,
            learned,
            reached,
            target,
        })
    }

    pub fn established(&self, n: usize) -> bool {
        let st = self.speaker.status();
        let st = st.borrow();
        st.peers.len() == n && st.peers.iter().all(|p| p.state == State::Established)
    }

    pub fn status_line(&self) -> String {
        let st = self.speaker.status();
        let st = st.borrow();
        st.peers
            .iter()
            .map(|p| format!("{} {}", p.addr, p.info()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Waits until `learned` reaches `n` (set with [`Apparatus::expect`] before t0).
    pub fn wait_reached(&self, deadline: Instant) -> Option<Instant> {
        loop {
            if let Some(t) = *self.reached.lock().unwrap_or_else(|e| e.into_inner()) {
                return Some(t);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn expect(&self, n: usize) {
        self.target.store(n, Ordering::Relaxed);
    }

    pub fn learned(&self) -> usize {
        self.learned.load(Ordering::Relaxed)
    }

    /// Prefixes received from all peers (Adj-RIB-In, before import policy).
    pub fn received(&self) -> usize {
        self.speaker
            .status()
            .borrow()
            .peers
            .iter()
            .map(|p| p.received)
            .sum()
    }
}

/// Waits until every speaker has all its sessions Established.
pub fn wait_sessions(what: &str, sp: &[(&Apparatus, usize)]) -> anyhow::Result<()> {
    crate::support::wait_for(
        what,
        SESSION_WAIT,
        || sp.iter().all(|(a, n)| a.established(*n)).then_some(()),
        || {
            sp.iter()
                .map(|(a, _)| a.status_line())
                .collect::<Vec<_>>()
                .join("\n")
        },
    )
}
