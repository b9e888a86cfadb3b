//! Proves the interop harness itself (tests/support): BIRD, FRR and GoBGP started in
//! namespaces peer with each other over IPv4 and IPv6, originate and learn prefixes with the
//! right next hops and AS paths, propagate runtime announcements and withdrawals, honour
//! passive mode and TCP MD5 (a mismatch keeps the session down), install kernel routes when
//! asked (BIRD, FRR), drop a crashed peer's routes without graceful restart and keep them
//! with it, and reflect routes as iBGP route reflectors.
//!
//! Needs root (skips without it, fails under `CI=true`).

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use ipnet::IpNet;

use support::netns::{Host, Topology, kernel_routes, tcp_established};
use support::peers::{Daemon, PeerSpec, Router, RouterConfig, Stop};
use support::root_or_skip;

const WAIT: Duration = Duration::from_secs(20);

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix literal")
}

/// What a router should have learned: prefix → (next hop, AS path).
type Want = BTreeMap<IpNet, (IpAddr, Vec<u32>)>;

/// Waits until `r` has learned exactly `want`, apart from prefixes in `ignore`.
fn wait_exactly(r: &Router, want: &Want, ignore: &[IpNet]) -> anyhow::Result<()> {
    r.wait_routes(
        |t| {
            let got: Want = t
                .iter()
                .filter(|(p, _)| !ignore.contains(p))
                .map(|(p, r)| (*p, (r.next_hop, r.as_path.clone())))
                .collect();
            got == *want
        },
        WAIT,
    )
    .with_context(|| format!("{} should have learned exactly {want:?}", r.daemon().name()))?;
    Ok(())
}

/// The established connection between `local` and `peer` was accepted by `local` (its
/// local port is 179), i.e. `peer` opened it.
fn accepted_by(local: &Host, peer: IpAddr) -> anyhow::Result<bool> {
    let conns = tcp_established(&local.netns)?;
    let mine = local.addr(peer.is_ipv6());
    let c = conns
        .iter()
        .find(|(l, r)| l.ip() == mine && r.ip() == peer && (l.port() == 179 || r.port() == 179))
        .with_context(|| format!("no BGP connection {mine} <-> {peer} in {conns:?}"))?;
    Ok(c.0.port() == 179)
}

#[test]
fn bird_frr_gobgp_mesh_v4_v6_md5_withdraw() -> anyhow::Result<()> {
    if !root_or_skip("BGP harness self-test") {
        return Ok(());
    }
    let started = Instant::now();
    let topo = Topology::with_hosts("mesh", &["bird", "frr", "gobgp", "md5"])?;
    let (b, f, g, m) = (
        topo.host("bird").clone(),
        topo.host("frr").clone(),
        topo.host("gobgp").clone(),
        topo.host("md5").clone(),
    );
    let (ab, af, ag, am) = (65001, 65002, 65003, 65004);
    let v4 = |h: &Host| IpAddr::V4(h.v4);
    let v6 = |h: &Host| IpAddr::V6(h.v6);

    // Sessions, one per family. Passive and MD5 are spread so that each daemon plays each
    // role at least once:
    //   bird-frr   v4 MD5 "tortie-a"                 v6 frr passive
    //   bird-gobgp v4 bird passive                   v6 MD5 "tortie-b"
    //   frr-gobgp  v4 MD5 "tortie-c", gobgp passive  v6 plain
    //   md5-frr    v4 MD5 mismatch (must stay down)  v6 MD5 "tortie-d" (control)
    // bird and frr also install their routes into their namespace's kernel table.
    let mut bird_cfg = RouterConfig::new(&b.netns, b.v4, ab)
        .peer(PeerSpec::new(v4(&f), af).password("tortie-a"))
        .peer(PeerSpec::new(v6(&f), af))
        .peer(PeerSpec::new(v4(&g), ag).passive())
        .peer(PeerSpec::new(v6(&g), ag).password("tortie-b"))
        .originate(net("10.1.0.0/24"))
        .originate(net("fd00:10:244:1::/64"));
    bird_cfg.install_kernel_routes = true;
    let mut frr_cfg = RouterConfig::new(&f.netns, f.v4, af)
        .peer(PeerSpec::new(v4(&b), ab).password("tortie-a"))
        .peer(PeerSpec::new(v6(&b), ab).passive())
        .peer(PeerSpec::new(v4(&g), ag).password("tortie-c"))
        .peer(PeerSpec::new(v6(&g), ag))
        .peer(PeerSpec::new(v4(&m), am).password("right-password"))
        .peer(PeerSpec::new(v6(&m), am).password("tortie-d"))
        .originate(net("10.2.0.0/24"))
        .originate(net("fd00:10:244:2::/64"));
    frr_cfg.install_kernel_routes = true;
    let gobgp_cfg = RouterConfig::new(&g.netns, g.v4, ag)
        .peer(PeerSpec::new(v4(&b), ab))
        .peer(PeerSpec::new(v6(&b), ab).password("tortie-b"))
        .peer(PeerSpec::new(v4(&f), af).password("tortie-c").passive())
        .peer(PeerSpec::new(v6(&f), af))
        .originate(net("10.3.0.0/24"))
        .originate(net("fd00:10:244:3::/64"));
    let md5_cfg = RouterConfig::new(&m.netns, m.v4, am)
        .peer(PeerSpec::new(v4(&f), af).password("wrong-password"))
        .peer(PeerSpec::new(v6(&f), af).password("tortie-d"))
        .originate(net("10.4.0.0/24"))
        .originate(net("fd00:10:244:4::/64"));

    let mut refused = gobgp_cfg.clone();
    refused.install_kernel_routes = true;
    ensure!(
        Router::start(Daemon::Gobgp, &refused).is_err(),
        "GoBGP cannot install kernel routes here; asking for it must fail"
    );

    let bird = Router::start(Daemon::Bird, &bird_cfg)?;
    let frr = Router::start(Daemon::Frr, &frr_cfg)?;
    let mut gobgp = Router::start(Daemon::Gobgp, &gobgp_cfg)?;
    let md5 = Router::start(Daemon::Bird, &md5_cfg)?;
    eprintln!("daemons up after {:?}", started.elapsed());

    // Every session but the mismatched one comes up, seen from both ends.
    for (r, peers) in [
        (&bird, [v4(&f), v6(&f), v4(&g), v6(&g)].as_slice()),
        (&frr, &[v4(&b), v6(&b), v4(&g), v6(&g), v6(&m)]),
        (&gobgp, &[v4(&b), v6(&b), v4(&f), v6(&f)]),
        (&md5, &[v6(&f)]),
    ] {
        for p in peers {
            r.wait_established(*p, WAIT)?;
        }
    }
    eprintln!("sessions established after {:?}", started.elapsed());

    // Each learns the others' prefixes straight from their originators: next hop the
    // originator's address, AS path the originator's AS alone. md5's IPv6 prefix spreads via
    // frr (ignored at bird and gobgp); its IPv4 one must not exist anywhere.
    let who = [
        (&b, ab, Daemon::Bird),
        (&f, af, Daemon::Frr),
        (&g, ag, Daemon::Gobgp),
    ];
    let mut want: BTreeMap<Daemon, Want> = BTreeMap::new();
    let expect = |want: &mut BTreeMap<Daemon, Want>, from: Daemon, p: &str| {
        let (h, asn, _) = who.iter().find(|w| w.2 == from).expect("known daemon");
        let p = net(p);
        for (_, _, d) in who.iter().filter(|w| w.2 != from) {
            want.entry(*d)
                .or_default()
                .insert(p, (h.addr(p.addr().is_ipv6()), vec![*asn]));
        }
    };
    let forget = |want: &mut BTreeMap<Daemon, Want>, p: &str| {
        for w in want.values_mut() {
            w.remove(&net(p));
        }
    };
    for (d, p) in [
        (Daemon::Bird, "10.1.0.0/24"),
        (Daemon::Bird, "fd00:10:244:1::/64"),
        (Daemon::Frr, "10.2.0.0/24"),
        (Daemon::Frr, "fd00:10:244:2::/64"),
        (Daemon::Gobgp, "10.3.0.0/24"),
        (Daemon::Gobgp, "fd00:10:244:3::/64"),
    ] {
        expect(&mut want, d, p);
    }
    let md5_v6 = net("fd00:10:244:4::/64");
    want.entry(Daemon::Frr)
        .or_default()
        .insert(md5_v6, (v6(&m), vec![am]));
    // (gobgp is passed in: it is stopped and started again further down.)
    let check_all = |gobgp: &Router, want: &BTreeMap<Daemon, Want>| -> anyhow::Result<()> {
        wait_exactly(&bird, &want[&Daemon::Bird], &[md5_v6])?;
        wait_exactly(&frr, &want[&Daemon::Frr], &[])?;
        wait_exactly(gobgp, &want[&Daemon::Gobgp], &[md5_v6])
    };
    check_all(&gobgp, &want)?;
    for r in [&bird, &gobgp] {
        r.wait_learned(|t| t.contains_key(&md5_v6), WAIT)?;
    }
    // md5 hears the rest through frr, IPv6 only.
    let t = md5.wait_learned(
        |t| {
            t.keys().all(|p| p.addr().is_ipv6())
                && [
                    "fd00:10:244:1::/64",
                    "fd00:10:244:2::/64",
                    "fd00:10:244:3::/64",
                ]
                .iter()
                .all(|p| t.contains_key(&net(p)))
        },
        WAIT,
    )?;
    ensure!(
        t[&net("fd00:10:244:2::/64")] == v6(&f),
        "md5 learned frr's prefix via {}",
        t[&net("fd00:10:244:2::/64")]
    );
    eprintln!("routes learned after {:?}", started.elapsed());

    // bird and frr installed what they learned into their namespace's kernel table, IPv4
    // via the BGP next hop (for IPv6 zebra may prefer the link-local next hop).
    for (r, h) in [(&bird, &b), (&frr, &f)] {
        let learned = r.learned()?;
        support::wait_for(
            &format!(
                "{}'s routes in the kernel of {}",
                r.daemon().name(),
                h.netns
            ),
            WAIT,
            || {
                let k = kernel_routes(&h.netns).ok()?;
                learned
                    .iter()
                    .all(|(p, nh)| k.get(p).is_some_and(|gw| p.addr().is_ipv6() || gw == nh))
                    .then_some(())
            },
            || {
                format!(
                    "kernel: {:?}\nlearned: {learned:?}",
                    kernel_routes(&h.netns)
                )
            },
        )?;
    }
    ensure!(
        kernel_routes(&g.netns)?.is_empty(),
        "gobgp's namespace got kernel routes"
    );

    // MD5 mismatch: by now both ends have retried for seconds; the session stays down and
    // md5's IPv4 prefix is nowhere, while the IPv6 session between the same two hosts (right
    // password) is up, so the path itself works.
    for (r, peer) in [(&frr, v4(&m)), (&md5, v4(&f))] {
        let s = r.session_state(peer)?;
        ensure!(
            s != "Established",
            "{} session with {peer} (MD5 mismatch) is {s}",
            r.daemon().name()
        );
    }
    for r in [&bird, &frr, &gobgp] {
        ensure!(
            !r.learned()?.contains_key(&net("10.4.0.0/24")),
            "{} learned md5's IPv4 prefix despite the MD5 mismatch",
            r.daemon().name()
        );
    }

    // Passive: the passive end accepted the connection (its local port is 179).
    for (passive, peer) in [(&f, v6(&b)), (&b, v4(&g)), (&g, v4(&f))] {
        ensure!(
            accepted_by(passive, peer)?,
            "{} was passive towards {peer} but opened the connection",
            passive.name
        );
    }

    // Runtime announcements from each daemon reach the other two.
    for (r, p) in [
        (&bird, "10.1.1.0/24"),
        (&bird, "fd00:10:244:11::/64"),
        (&frr, "10.2.1.0/24"),
        (&frr, "fd00:10:244:21::/64"),
        (&gobgp, "10.3.1.0/24"),
        (&gobgp, "fd00:10:244:31::/64"),
    ] {
        r.announce(net(p))?;
        expect(&mut want, r.daemon(), p);
    }
    check_all(&gobgp, &want)?;
    eprintln!("announcements propagated after {:?}", started.elapsed());

    // Withdrawals, of runtime and of configured prefixes, reach the other two.
    for (r, p) in [
        (&bird, "10.1.1.0/24"),
        (&bird, "fd00:10:244:1::/64"),
        (&frr, "fd00:10:244:21::/64"),
        (&frr, "10.2.0.0/24"),
        (&gobgp, "10.3.1.0/24"),
        (&gobgp, "fd00:10:244:3::/64"),
    ] {
        r.withdraw(net(p))?;
        forget(&mut want, p);
    }
    check_all(&gobgp, &want)?;
    eprintln!("withdrawals propagated after {:?}", started.elapsed());

    // Without graceful restart a crashed peer's routes go at once, and come back with it
    // (started again with its runtime announcements and withdrawals).
    let gobgp_left = [net("10.3.0.0/24"), net("fd00:10:244:31::/64")];
    gobgp.stop(Stop::Crash);
    for r in [&bird, &frr] {
        r.wait_learned(|t| gobgp_left.iter().all(|p| !t.contains_key(p)), WAIT)
            .with_context(|| {
                format!("{} kept a crashed non-GR peer's routes", r.daemon().name())
            })?;
    }
    gobgp.start_again(false)?;
    check_all(&gobgp, &want)?;
    eprintln!("non-GR crash and restart after {:?}", started.elapsed());

    for r in [&bird, &frr, &gobgp, &md5] {
        ensure!(
            r.pid() != 0 && r.rss_kib() > 0,
            "{} has no process",
            r.daemon().name()
        );
        eprintln!(
            "{}: pid {} rss {} KiB cpu {:?}",
            r.daemon().name(),
            r.pid(),
            r.rss_kib(),
            r.cpu_time()
        );
    }
    eprintln!("mesh self-test took {:?}", started.elapsed());
    Ok(())
}

/// Each daemon in turn crashes (SIGKILL: no NOTIFICATION) and comes back as a graceful
/// restarter; its GR-helper peers keep its routes meanwhile, and have them after.
#[test]
fn graceful_restart_keeps_routes() -> anyhow::Result<()> {
    if !root_or_skip("BGP harness graceful-restart self-test") {
        return Ok(());
    }
    let started = Instant::now();
    let topo = Topology::with_hosts("gr", &["bird", "frr", "gobgp"])?;
    let hosts: Vec<Host> = ["bird", "frr", "gobgp"]
        .iter()
        .map(|n| topo.host(n).clone())
        .collect();
    let asn = |i: usize| 65101 + i as u32;
    let prefix = |i: usize| net(&format!("10.{}.0.0/24", 11 + i));
    let mut routers = Vec::new();
    for (i, d) in Daemon::ALL.into_iter().enumerate() {
        let h = &hosts[i];
        let mut cfg = RouterConfig::new(&h.netns, h.v4, asn(i)).originate(prefix(i));
        cfg.graceful_restart = true;
        for (j, o) in hosts.iter().enumerate() {
            if j != i {
                cfg.peers.push(PeerSpec::new(IpAddr::V4(o.v4), asn(j)));
            }
        }
        routers.push(Router::start(d, &cfg)?);
    }
    let addr = |i: usize| IpAddr::V4(hosts[i].v4);
    let converged = |routers: &[Router]| -> anyhow::Result<()> {
        for (i, r) in routers.iter().enumerate() {
            for j in (0..3).filter(|j| *j != i) {
                r.wait_established(addr(j), WAIT)?;
                r.wait_learned(|t| t.get(&prefix(j)) == Some(&addr(j)), WAIT)?;
            }
        }
        Ok(())
    };
    converged(&routers)?;

    for k in 0..3 {
        let name = routers[k].daemon().name();
        routers[k].stop(Stop::Crash);
        // The others see the session go down, yet keep k's prefix (stale).
        for j in (0..3).filter(|j| *j != k) {
            let r = &routers[j];
            support::wait_for(
                &format!("{} to see {name}'s session down", r.daemon().name()),
                WAIT,
                || (r.session_state(addr(k)).ok()? != "Established").then_some(()),
                || r.log_tail(),
            )?;
            let t = r.learned()?;
            ensure!(
                t.get(&prefix(k)) == Some(&addr(k)),
                "{} dropped {name}'s prefix when {name} crashed (GR helper): {t:?}",
                r.daemon().name()
            );
        }
        // Still there a second later: kept as stale, not merely not yet flushed.
        std::thread::sleep(Duration::from_secs(1));
        for j in (0..3).filter(|j| *j != k) {
            let t = routers[j].learned()?;
            ensure!(
                t.get(&prefix(k)) == Some(&addr(k)),
                "{} dropped {name}'s prefix 1 s after {name} crashed: {t:?}",
                routers[j].daemon().name()
            );
        }
        routers[k].start_again(true)?;
        // While k comes back its peers never lose its prefix (a restarter that did not set
        // the F bit would have its stale routes flushed when the session re-forms).
        support::wait_for(
            &format!("{name}'s sessions to re-form"),
            WAIT,
            || {
                for j in (0..3).filter(|j| *j != k) {
                    let t = routers[j].learned().ok()?;
                    assert!(
                        t.get(&prefix(k)) == Some(&addr(k)),
                        "{} lost {name}'s prefix during {name}'s graceful restart: {t:?}",
                        routers[j].daemon().name()
                    );
                }
                (0..3)
                    .filter(|j| *j != k)
                    .all(|j| {
                        routers[j].session_state(addr(k)).ok().as_deref() == Some("Established")
                    })
                    .then_some(())
            },
            || routers[k].log_tail(),
        )?;
        converged(&routers).with_context(|| format!("after {name}'s graceful restart"))?;
        eprintln!("{name} restarted gracefully after {:?}", started.elapsed());
    }
    eprintln!("graceful-restart self-test took {:?}", started.elapsed());
    Ok(())
}

/// Route reflection: each daemon in turn is the route reflector of the other two (iBGP
/// clients that only peer with it), which learn each other's prefixes through it with the
/// originator's next hop, unchanged.
#[test]
fn route_reflection() -> anyhow::Result<()> {
    if !root_or_skip("BGP harness route-reflection self-test") {
        return Ok(());
    }
    let started = Instant::now();
    let topo = Topology::with_hosts("rr", &["bird", "frr", "gobgp"])?;
    let hosts: Vec<Host> = ["bird", "frr", "gobgp"]
        .iter()
        .map(|n| topo.host(n).clone())
        .collect();
    const AS: u32 = 65200;
    let v4 = |i: usize| IpAddr::V4(hosts[i].v4);
    let v6 = |i: usize| IpAddr::V6(hosts[i].v6);
    let p4 = |i: usize| net(&format!("10.{}.0.0/24", 21 + i));
    let p6 = |i: usize| net(&format!("fd00:10:244:{}::/64", 21 + i));
    for rr in 0..3 {
        let mut routers = Vec::new();
        for (i, d) in Daemon::ALL.into_iter().enumerate() {
            let h = &hosts[i];
            let mut cfg = RouterConfig::new(&h.netns, h.v4, AS)
                .originate(p4(i))
                .originate(p6(i));
            if i == rr {
                cfg.rr_cluster_id = Some("198.18.255.1".parse()?);
                for j in (0..3).filter(|j| *j != rr) {
                    cfg.peers.push(PeerSpec::new(v4(j), AS).rr_client());
                    cfg.peers.push(PeerSpec::new(v6(j), AS).rr_client());
                }
            } else {
                cfg.peers.push(PeerSpec::new(v4(rr), AS));
                cfg.peers.push(PeerSpec::new(v6(rr), AS));
            }
            routers.push(Router::start(d, &cfg)?);
        }
        let rr_name = routers[rr].daemon().name();
        for (i, r) in routers.iter().enumerate() {
            // iBGP: empty AS path, next hop the originator's, reflected unchanged.
            let want: Want = (0..3)
                .filter(|j| *j != i)
                .flat_map(|j| [(p4(j), (v4(j), vec![])), (p6(j), (v6(j), vec![]))])
                .collect();
            wait_exactly(r, &want, &[])
                .with_context(|| format!("with {rr_name} as route reflector"))?;
        }
        eprintln!("{rr_name} reflected after {:?}", started.elapsed());
    }
    Ok(())
}
