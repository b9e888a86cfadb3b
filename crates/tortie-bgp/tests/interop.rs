//! Interop end-to-end tests of tortie's BGP speaker ([`tortie_bgp::speaker::Speaker`]) against
//! BIRD 2, FRR and GoBGP, all in network namespaces on a private L2 fabric (`tests/support`,
//! addresses from `shared/design/test-network.md` only). Each scenario runs once per daemon,
//! the three in parallel threads, each in a topology of its own; a failure names the daemon.
//!
//! What each test proves, for each of bird, frr and gobgp:
//! - [`sessions_routes_withdrawals`] (eBGP, tortie AS 64512, daemon AS 65001): the IPv4 session
//!   comes up with tortie active and the daemon passive, the IPv6 one with tortie passive and
//!   the daemon active (checked on the TCP connection: who has port 179). The daemon learns
//!   tortie's 10.244.1.0/26 and fd00:10:244:1::/64 with tortie's underlay address as next hop
//!   and AS path 64512; tortie reports (10.244.2.0/26, Some(daemon's IPv4)) and
//!   (fd00:10:244:2::/64, Some(daemon's IPv6)) and those land in its namespace's kernel table
//!   as `proto 81` routes. A withdrawal by the daemon reaches tortie as (prefix, None) and
//!   leaves the kernel; tortie no longer originating its prefixes removes them at the daemon.
//! - [`graceful_restart`] (iBGP, both AS 64512): the daemon is killed (no NOTIFICATION) and
//!   started again as a graceful restarter: tortie sees the session drop, yet never reports
//!   the daemon's prefix removed, and afterwards the session is Established and synced
//!   (End-of-RIB) with the route present. The other way round, tortie's speaker is dropped
//!   (sockets close, no NOTIFICATION) and started again: the daemon keeps tortie's route
//!   through the outage and has it afterwards.
//! - [`md5_password`] (eBGP): with TCP MD5 password "right" at tortie and "wrong" at the
//!   daemon, the IPv4 session never comes up within 15 s, and tortie's status says why in
//!   words an operator understands (the connection timed out, and a password is set); the
//!   IPv6 session between the same hosts, with matching passwords, is Established.
//! - [`md5_password_rotation`] (iBGP, tortie with tortie, no daemon): a new password on both
//!   sides restarts the session, which comes up with it; a new password on one side keeps it
//!   down (the listener's old key is gone).
//! - [`tortie_route_reflector`] (iBGP): tortie as route reflector with the three daemons as
//!   clients: each client learns the others' prefixes (IPv4 and IPv6) with the originator's
//!   next hop, unchanged, and tortie's own; BIRD shows the ORIGINATOR_ID and CLUSTER_LIST
//!   tortie added.
//! - [`daemon_route_reflector`] (iBGP): the daemon as route reflector with tortie and another
//!   daemon as clients: tortie learns the other client's prefix with that client's next hop,
//!   and the other client learns tortie's with tortie's.
//!
//! Session establishment times are printed (`timing:` lines; run with `--nocapture`).
//!
//! Needs root (skips without it, fails under `CI=true`).

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use ipnet::IpNet;
use tortie_bgp::Family as BgpFamily;
use tortie_bgp::fsm::State;
use tortie_bgp::speaker::{PeerConfig, PeerKind, PeerStatus};

use support::netns::{Host, Topology, ip, kernel_routes, tcp_established};
use support::peers::{Daemon, PeerSpec, Route, Router, RouterConfig, Stop};
use support::tortie::{Tortie, TortieConfig};
use support::{POLL, root_or_skip, wait_for};

const TORTIE_AS: u32 = 64512;
const DAEMON_AS: u32 = 65001;
/// Bound of every wait for a session or a route. GoBGP alone may take ~10 s to connect.
const WAIT: Duration = Duration::from_secs(25);

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix literal")
}

fn tortie_v4() -> IpNet {
    net("10.244.1.0/26")
}

fn tortie_v6() -> IpNet {
    net("fd00:10:244:1::/64")
}

fn daemon_v4() -> IpNet {
    net("10.244.2.0/26")
}

fn daemon_v6() -> IpNet {
    net("fd00:10:244:2::/64")
}

/// "IPv4" or "IPv6", for messages.
fn fam(addr: IpAddr) -> &'static str {
    if addr.is_ipv6() { "IPv6" } else { "IPv4" }
}

/// tortie's side of a session: one family, that of the peer's address (IPv6 runs over its
/// own IPv6 session), Calico's defaults otherwise (graceful restart 120 s).
fn tortie_peer(addr: IpAddr, remote_as: u32) -> PeerConfig {
    let mut p = PeerConfig::new(addr, remote_as, PeerKind::Global);
    p.families = vec![if addr.is_ipv6() {
        BgpFamily::Ipv6Unicast
    } else {
        BgpFamily::Ipv4Unicast
    }];
    p
}

/// The daemon's side of a session with tortie. GoBGP waits 5-10 s before each connection
/// attempt of its own, so it is passive unless the test needs it active.
fn daemon_peer(d: Daemon, addr: IpAddr, asn: u32) -> PeerSpec {
    let p = PeerSpec::new(addr, asn);
    if d == Daemon::Gobgp { p.passive() } else { p }
}

fn established(p: &PeerStatus) -> bool {
    p.state == State::Established
}

/// How long after `from` the session reached its current state.
fn since(p: &PeerStatus, from: SystemTime) -> Duration {
    p.since.duration_since(from).unwrap_or_default()
}

fn timing(msg: &str) {
    println!("timing: {msg}");
}

/// Whether tortie (in `host`) accepted its established connection with `peer` (its local
/// port is 179) rather than opening it, from `ss` in tortie's namespace.
fn tortie_accepted(host: &Host, peer: IpAddr) -> anyhow::Result<bool> {
    let conns = tcp_established(&host.netns)?;
    let c = conns
        .iter()
        .find(|(_, r)| r.ip() == peer)
        .with_context(|| format!("no connection with {peer} in {conns:?}"))?;
    Ok(c.0.port() == 179)
}

/// Runs `scenario` once per daemon, in parallel threads; fails naming every daemon that
/// failed, with its error.
fn for_each_daemon(
    test: &str,
    scenario: impl Fn(Daemon) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let scenario = &scenario;
    let results: Vec<(Daemon, anyhow::Result<()>)> = std::thread::scope(|s| {
        let running: Vec<_> = Daemon::ALL
            .into_iter()
            .map(|d| (d, s.spawn(move || scenario(d))))
            .collect();
        running
            .into_iter()
            .map(|(d, h)| {
                let r = h.join().unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                        .unwrap_or_default();
                    Err(anyhow::anyhow!("panicked: {msg}"))
                });
                (d, r)
            })
            .collect()
    });
    let mut failed = Vec::new();
    for (d, r) in results {
        match r {
            Ok(()) => println!("{test} with {}: ok", d.name()),
            Err(e) => failed.push(format!("--- {test} with {}: {e:#}", d.name())),
        }
    }
    println!("{test}: {:.1?} for all three daemons", started.elapsed());
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

// ---- 1-3: sessions from either side, routes both ways, withdrawals -----------------------

#[test]
fn sessions_routes_withdrawals() -> anyhow::Result<()> {
    if !root_or_skip("BGP interop: sessions, routes, withdrawals") {
        return Ok(());
    }
    for_each_daemon("sessions_routes_withdrawals", exchange)
}

fn exchange(d: Daemon) -> anyhow::Result<()> {
    let topo = Topology::with_hosts(&format!("x{}", d.name()), &["tortie", "peer"])?;
    let (th, ph) = (topo.host("tortie").clone(), topo.host("peer").clone());
    let (t4, t6, p4, p6) = (th.addr(false), th.addr(true), ph.addr(false), ph.addr(true));

    // IPv4: tortie connects, the daemon is passive. IPv6: the daemon connects, tortie is
    // passive. The daemon is started first so tortie's first attempt finds it listening.
    let cfg = RouterConfig::new(&ph.netns, ph.v4, DAEMON_AS)
        .peer(PeerSpec::new(t4, TORTIE_AS).passive())
        .peer(PeerSpec::new(t6, TORTIE_AS))
        .originate(daemon_v4())
        .originate(daemon_v6());
    let router = Router::start(d, &cfg)?;
    let mut tcfg = TortieConfig::new(TORTIE_AS);
    tcfg.install_kernel_routes = true;
    let t0 = SystemTime::now();
    let mut tortie = Tortie::start(&th, tcfg)?;
    tortie.originate(&[tortie_v4(), tortie_v6()]);
    let mut passive6 = tortie_peer(p6, DAEMON_AS);
    passive6.passive = true;
    tortie.set_peers(vec![tortie_peer(p4, DAEMON_AS), passive6]);

    for (peer, mine, tortie_opens) in [(p4, t4, true), (p6, t6, false)] {
        let st = tortie.wait_peer(peer, "Established", WAIT, established)?;
        router.wait_established(mine, WAIT)?;
        let who = if tortie_opens {
            "tortie active"
        } else {
            "tortie passive"
        };
        timing(&format!(
            "{} eBGP {} ({who}): Established after {:.2?}",
            d.name(),
            fam(peer),
            since(&st, t0)
        ));
        let accepted = tortie_accepted(&th, peer)?;
        ensure!(
            accepted != tortie_opens,
            "{} session: tortie should {} the connection, but {} it",
            fam(peer),
            if tortie_opens { "open" } else { "accept" },
            if accepted { "accepted" } else { "opened" }
        );
        let local_port = st.local_addr.map(|a| a.port());
        ensure!(
            (local_port == Some(179)) != tortie_opens,
            "tortie's status says local address {:?} for the {} session",
            st.local_addr,
            fam(peer)
        );
    }

    // The daemon learns tortie's prefixes, next hop tortie's underlay address, AS path 64512.
    let want_at_daemon = |t: &std::collections::BTreeMap<IpNet, Route>| {
        [(tortie_v4(), t4), (tortie_v6(), t6)]
            .iter()
            .all(|(p, nh)| {
                t.get(p)
                    .is_some_and(|r| r.next_hop == *nh && r.as_path == [TORTIE_AS])
            })
    };
    router
        .wait_routes(want_at_daemon, WAIT)
        .context("the daemon should learn tortie's prefixes")?;

    // tortie reports the daemon's prefixes via the daemon's addresses, and installs them.
    tortie.wait_route(daemon_v4(), Some(p4), WAIT)?;
    tortie.wait_route(daemon_v6(), Some(p6), WAIT)?;
    {
        let log = tortie.log();
        for (p, nh) in [(daemon_v4(), p4), (daemon_v6(), p6)] {
            ensure!(
                log.changes
                    .iter()
                    .any(|c| c.prefix == p && c.next_hop == Some(nh)),
                "no route change ({p}, Some({nh})) in {:?}",
                log.changes
            );
        }
        ensure!(
            log.install_errors.is_empty(),
            "kernel: {:?}",
            log.install_errors
        );
    }
    let kernel_has = |want: bool| -> anyhow::Result<()> {
        wait_for(
            &format!("the daemon's prefixes to be in tortie's kernel table: {want}"),
            WAIT,
            || {
                let k = kernel_routes(&th.netns).ok()?;
                let ok = [(daemon_v4(), p4), (daemon_v6(), p6)]
                    .iter()
                    .all(|(p, nh)| (k.get(p) == Some(nh)) == want);
                ok.then_some(())
            },
            || format!("{:?}", kernel_routes(&th.netns)),
        )
    };
    kernel_has(true)?;
    let shown = ip(&["-n", &th.netns, "-4", "route", "show", "proto", "81"])?;
    ensure!(
        shown.contains(&format!("{} via {p4}", daemon_v4())),
        "ip route show proto 81: {shown}"
    );

    // Withdrawals from the daemon reach tortie as (prefix, None) and leave the kernel.
    let from = Instant::now();
    router.withdraw(daemon_v4())?;
    router.withdraw(daemon_v6())?;
    tortie.wait_route(daemon_v4(), None, WAIT)?;
    tortie.wait_route(daemon_v6(), None, WAIT)?;
    let removed: Vec<IpNet> = tortie
        .changes_since(from)
        .into_iter()
        .filter(|c| c.next_hop.is_none())
        .map(|c| c.prefix)
        .collect();
    ensure!(
        removed.contains(&daemon_v4()) && removed.contains(&daemon_v6()),
        "removals reported: {removed:?}"
    );
    kernel_has(false)?;
    timing(&format!(
        "{}: withdrawal reached tortie's kernel after {:.2?}",
        d.name(),
        from.elapsed()
    ));

    // tortie stops originating: the daemon no longer has its prefixes.
    let from = Instant::now();
    tortie.originate(&[]);
    router
        .wait_learned(
            |t| !t.contains_key(&tortie_v4()) && !t.contains_key(&tortie_v6()),
            WAIT,
        )
        .context("the daemon should drop the prefixes tortie stopped originating")?;
    timing(&format!(
        "{}: tortie's withdrawal reached the daemon after {:.2?}",
        d.name(),
        from.elapsed()
    ));

    // None of this flapped a session.
    for peer in [p4, p6] {
        let st = tortie.peer(peer).context("peer gone")?;
        ensure!(established(&st), "{peer}: {}", st.info());
    }
    Ok(())
}

// ---- 4: graceful restart, both ways --------------------------------------------------------

#[test]
fn graceful_restart() -> anyhow::Result<()> {
    if !root_or_skip("BGP interop: graceful restart") {
        return Ok(());
    }
    for_each_daemon("graceful_restart", restart_both_ways)
}

fn restart_both_ways(d: Daemon) -> anyhow::Result<()> {
    let topo = Topology::with_hosts(&format!("g{}", d.name()), &["tortie", "peer"])?;
    let (th, ph) = (topo.host("tortie").clone(), topo.host("peer").clone());
    let (t4, p4) = (th.addr(false), ph.addr(false));
    let (mine, theirs) = (tortie_v4(), daemon_v4());

    // iBGP, graceful restart on both ends.
    let mut cfg = RouterConfig::new(&ph.netns, ph.v4, TORTIE_AS)
        .peer(daemon_peer(d, t4, TORTIE_AS))
        .originate(theirs);
    cfg.graceful_restart = true;
    let mut router = Router::start(d, &cfg)?;
    let t0 = SystemTime::now();
    let mut tortie = Tortie::start(&th, TortieConfig::new(TORTIE_AS))?;
    tortie.originate(&[mine]);
    tortie.set_peers(vec![tortie_peer(p4, TORTIE_AS)]);
    let st = tortie.wait_peer(p4, "Established", WAIT, established)?;
    timing(&format!(
        "{} iBGP IPv4 ({}): Established after {:.2?}",
        d.name(),
        if d == Daemon::Gobgp {
            "tortie active, gobgp passive"
        } else {
            "both ends active"
        },
        since(&st, t0)
    ));
    tortie.wait_synced(p4, WAIT)?;
    tortie.wait_route(theirs, Some(p4), WAIT)?;
    router.wait_learned(|t| t.get(&mine) == Some(&t4), WAIT)?;

    // The daemon crashes (SIGKILL, no NOTIFICATION) and comes back as a graceful restarter:
    // the harness's `restart(true)`, in its two halves so the outage can be watched.
    let crash_at = Instant::now();
    let crash_wall = SystemTime::now();
    router.stop(Stop::Crash);
    tortie.wait_peer(p4, "down after the daemon crashed", WAIT, |p| {
        !established(p)
    })?;
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        tortie.routes().get(&theirs) == Some(&p4),
        "tortie dropped {theirs} while {} was restarting: {:?}; changes since the crash: {:?}",
        d.name(),
        tortie.routes(),
        tortie.changes_since(crash_at)
    );
    let restarted = SystemTime::now();
    router.start_again(true)?;
    let st = tortie.wait_peer(p4, "Established and synced again", WAIT, |p| {
        p.synced && p.since > crash_wall
    })?;
    router.wait_established(t4, WAIT)?;
    router.wait_learned(|t| t.get(&mine) == Some(&t4), WAIT)?;
    // A purge of stale routes that were not refreshed would come right after End-of-RIB.
    std::thread::sleep(Duration::from_secs(1));
    let removed: Vec<_> = tortie
        .changes_since(crash_at)
        .into_iter()
        .filter(|c| c.prefix == theirs && c.next_hop.is_none())
        .collect();
    ensure!(
        removed.is_empty(),
        "tortie reported {theirs} removed during {}'s graceful restart: {removed:?}",
        d.name()
    );
    ensure!(
        tortie.routes().get(&theirs) == Some(&p4),
        "after {}'s restart tortie has {:?}",
        d.name(),
        tortie.routes()
    );
    timing(&format!(
        "{}: graceful restart: Established again {:.2?} after the daemon started again",
        d.name(),
        since(&st, restarted)
    ));

    // tortie's speaker goes away without a NOTIFICATION and starts again: the daemon keeps
    // tortie's route meanwhile (GR helper) and has it afterwards.
    tortie.crash();
    wait_for(
        &format!("{} to see tortie's session down", d.name()),
        WAIT,
        || (router.session_state(t4).ok()? != "Established").then_some(()),
        || router.log_tail(),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let kept = router.learned()?;
    ensure!(
        kept.get(&mine) == Some(&t4),
        "{} dropped tortie's {mine} when tortie's speaker went away: {kept:?}",
        d.name()
    );
    let restarted = SystemTime::now();
    tortie.start_again()?;
    let deadline = Instant::now() + WAIT;
    loop {
        let t = router.learned()?;
        ensure!(
            t.get(&mine) == Some(&t4),
            "{} lost tortie's {mine} while tortie restarted: {t:?}",
            d.name()
        );
        let back =
            tortie.peer(p4).is_some_and(|p| p.synced) && router.session_state(t4)? == "Established";
        if back {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "the session did not come back within {WAIT:?} after tortie restarted: {:?}\n{}",
                tortie.peer(p4),
                router.log_tail()
            );
        }
        std::thread::sleep(POLL);
    }
    let st = tortie.peer(p4).context("peer gone")?;
    timing(&format!(
        "{}: tortie restarted: Established again {:.2?} after tortie's speaker started again",
        d.name(),
        since(&st, restarted)
    ));
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        router.learned()?.get(&mine) == Some(&t4),
        "{} dropped tortie's route after tortie came back",
        d.name()
    );
    tortie.wait_route(theirs, Some(p4), WAIT)?;
    Ok(())
}

// ---- 5: TCP MD5 passwords ---------------------------------------------------------------------

#[test]
fn md5_password() -> anyhow::Result<()> {
    if !root_or_skip("BGP interop: TCP MD5 passwords") {
        return Ok(());
    }
    const MISMATCH_FOR: Duration = Duration::from_secs(15);
    let topo = Topology::with_hosts("md5", &["tortie", "bird", "frr", "gobgp"])?;
    let th = topo.host("tortie").clone();
    let (t4, t6) = (th.addr(false), th.addr(true));

    // IPv4: tortie "right", daemon "wrong". IPv6 between the same hosts: both "right".
    let mut routers = Vec::new();
    let mut peers = Vec::new();
    for d in Daemon::ALL {
        let h = topo.host(d.name());
        let cfg = RouterConfig::new(&h.netns, h.v4, DAEMON_AS)
            .peer(daemon_peer(d, t4, TORTIE_AS).password("wrong"))
            .peer(daemon_peer(d, t6, TORTIE_AS).password("right"));
        routers.push((d, h.clone(), Router::start(d, &cfg)?));
        for addr in [h.addr(false), h.addr(true)] {
            let mut p = tortie_peer(addr, DAEMON_AS);
            p.password = Some("right".to_string());
            peers.push(p);
        }
    }
    let t0 = SystemTime::now();
    let started = Instant::now();
    let mut tortie = Tortie::start(&th, TortieConfig::new(TORTIE_AS))?;
    tortie.set_peers(peers);

    let mismatched_up = |tortie: &Tortie| -> Vec<String> {
        routers
            .iter()
            .filter_map(|(d, h, _)| {
                let st = tortie.peer(h.addr(false))?;
                established(&st).then(|| d.name().to_string())
            })
            .collect()
    };
    for (d, h, r) in &routers {
        let st = tortie.wait_peer(h.addr(true), "Established", WAIT, established)?;
        r.wait_established(t6, WAIT)?;
        timing(&format!(
            "{} eBGP IPv6 with a TCP MD5 password (tortie active): Established after {:.2?}",
            d.name(),
            since(&st, t0)
        ));
        let up = mismatched_up(&tortie);
        ensure!(up.is_empty(), "MD5 mismatch, yet Established with {up:?}");
    }
    // The mismatched sessions stay down all along.
    while started.elapsed() < MISMATCH_FOR {
        let up = mismatched_up(&tortie);
        ensure!(up.is_empty(), "MD5 mismatch, yet Established with {up:?}");
        std::thread::sleep(POLL);
    }
    for (d, h, r) in &routers {
        let st = tortie.peer(h.addr(false)).context("peer gone")?;
        let info = st.info();
        println!(
            "md5: after {:.1?} with a password mismatch, tortie shows {} as {info:?}",
            started.elapsed(),
            d.name()
        );
        ensure!(!established(&st), "{}: {info}", d.name());
        ensure!(
            info.contains("timed out") && info.contains("password"),
            "{}: the status should say the connection timed out and a password is set: {info:?}",
            d.name()
        );
        let theirs = r.session_state(t4)?;
        ensure!(
            theirs != "Established",
            "{} says its mismatched session is {theirs}",
            d.name()
        );
        // The matching-password session stayed up throughout.
        let st6 = tortie.peer(h.addr(true)).context("peer gone")?;
        ensure!(established(&st6), "{} IPv6: {}", d.name(), st6.info());
    }
    Ok(())
}

/// Two tortie speakers with the same password (b connects, a waits, so a's listener key and
/// b's socket key both matter): the session comes up; both get a new password, as the agent
/// does when the Secret changes: the session restarts and comes up with it; then only b
/// changes it again: the session stays down, so a's old key really is gone.
#[test]
fn md5_password_rotation() -> anyhow::Result<()> {
    if !root_or_skip("BGP interop: TCP MD5 password rotation") {
        return Ok(());
    }
    const MISMATCH_FOR: Duration = Duration::from_secs(10);
    let topo = Topology::with_hosts("md5rot", &["a", "b"])?;
    let (ha, hb) = (topo.host("a").clone(), topo.host("b").clone());
    let (a_addr, b_addr) = (ha.addr(false), hb.addr(false));
    let mut a = Tortie::start(&ha, TortieConfig::new(TORTIE_AS))?;
    let mut b = Tortie::start(&hb, TortieConfig::new(TORTIE_AS))?;
    let peer = |addr: IpAddr, passive: bool, password: &str| {
        let mut p = tortie_peer(addr, TORTIE_AS);
        p.passive = passive;
        p.password = Some(password.to_string());
        vec![p]
    };
    a.set_peers(peer(b_addr, true, "first"));
    b.set_peers(peer(a_addr, false, "first"));
    let first = a.wait_peer(b_addr, "Established with a password", WAIT, |p| {
        established(p) && p.password
    })?;

    let rotated = Instant::now();
    a.set_peers(peer(b_addr, true, "second"));
    b.set_peers(peer(a_addr, false, "second"));
    a.wait_peer(
        b_addr,
        "Established again with the new password",
        WAIT,
        |p| established(p) && p.since > first.since,
    )?;
    b.wait_established(a_addr, WAIT)?;
    timing(&format!(
        "tortie-tortie session restarted with a new TCP MD5 password in {:.2?}",
        rotated.elapsed()
    ));

    b.set_peers(peer(a_addr, false, "third"));
    a.wait_peer(b_addr, "down once only b changed its password", WAIT, |p| {
        !established(p)
    })?;
    let started = Instant::now();
    while started.elapsed() < MISMATCH_FOR {
        let up = a.peer(b_addr).is_some_and(|p| established(&p));
        ensure!(
            !up,
            "a's listener still accepted b with a password it no longer has"
        );
        std::thread::sleep(POLL);
    }
    Ok(())
}

// ---- 6: route reflection -------------------------------------------------------------------------

/// tortie reflects between three iBGP clients, one of each daemon.
#[test]
fn tortie_route_reflector() -> anyhow::Result<()> {
    if !root_or_skip("BGP interop: tortie as route reflector") {
        return Ok(());
    }
    let cluster_id: Ipv4Addr = "198.18.255.1".parse()?;
    let topo = Topology::with_hosts("trr", &["tortie", "bird", "frr", "gobgp"])?;
    let th = topo.host("tortie").clone();
    let (t4, t6) = (th.addr(false), th.addr(true));
    let p4 = |i: usize| net(&format!("10.244.{}.0/26", 11 + i));
    let p6 = |i: usize| net(&format!("fd00:10:244:{}::/64", 11 + i));

    let hosts: Vec<Host> = Daemon::ALL
        .iter()
        .map(|d| topo.host(d.name()).clone())
        .collect();
    let mut routers = Vec::new();
    let mut peers = Vec::new();
    for (i, d) in Daemon::ALL.into_iter().enumerate() {
        let h = &hosts[i];
        let cfg = RouterConfig::new(&h.netns, h.v4, TORTIE_AS)
            .peer(daemon_peer(d, t4, TORTIE_AS))
            .peer(daemon_peer(d, t6, TORTIE_AS))
            .originate(p4(i))
            .originate(p6(i));
        routers.push(Router::start(d, &cfg)?);
        for addr in [h.addr(false), h.addr(true)] {
            let mut p = tortie_peer(addr, TORTIE_AS);
            p.rr_client = true;
            peers.push(p);
        }
    }
    let mut tcfg = TortieConfig::new(TORTIE_AS);
    tcfg.cluster_id = Some(cluster_id);
    let t0 = SystemTime::now();
    let mut tortie = Tortie::start(&th, tcfg)?;
    tortie.originate(&[tortie_v4(), tortie_v6()]);
    tortie.set_peers(peers);

    for (i, r) in routers.iter().enumerate() {
        for v6 in [false, true] {
            let st = tortie.wait_peer(hosts[i].addr(v6), "Established", WAIT, established)?;
            timing(&format!(
                "{} iBGP {} as tortie's route-reflector client: Established after {:.2?}",
                r.daemon().name(),
                fam(hosts[i].addr(v6)),
                since(&st, t0)
            ));
        }
    }
    // Each client has exactly: the other clients' prefixes via their originators (next hop
    // unchanged by the reflector), and tortie's via tortie; iBGP, so empty AS paths.
    for (i, r) in routers.iter().enumerate() {
        let mut want = std::collections::BTreeMap::new();
        want.insert(tortie_v4(), t4);
        want.insert(tortie_v6(), t6);
        for j in (0..3).filter(|j| *j != i) {
            want.insert(p4(j), hosts[j].addr(false));
            want.insert(p6(j), hosts[j].addr(true));
        }
        r.wait_routes(
            |t| {
                t.len() == want.len()
                    && t.iter()
                        .all(|(p, rt)| want.get(p) == Some(&rt.next_hop) && rt.as_path.is_empty())
            },
            WAIT,
        )
        .with_context(|| format!("{} should learn {want:?}", r.daemon().name()))?;
    }
    // tortie itself uses each client's prefixes via that client.
    for (i, h) in hosts.iter().enumerate() {
        tortie.wait_route(p4(i), Some(h.addr(false)), WAIT)?;
        tortie.wait_route(p6(i), Some(h.addr(true)), WAIT)?;
    }
    // The reflected attributes (RFC 4456): BIRD, a client, got frr's prefix with frr's
    // router id as ORIGINATOR_ID and tortie's cluster id in the CLUSTER_LIST.
    let bird = &routers[0];
    let shown = bird.cli(&["show", "route", "all", &p4(1).to_string()])?;
    ensure!(
        shown.contains(&format!("BGP.originator_id: {}", hosts[1].v4))
            && shown.contains(&format!("BGP.cluster_list: {cluster_id}")),
        "BIRD's view of the reflected {}:\n{shown}",
        p4(1)
    );
    Ok(())
}

/// Each daemon in turn is the route reflector, with tortie and another daemon as clients.
#[test]
fn daemon_route_reflector() -> anyhow::Result<()> {
    if !root_or_skip("BGP interop: daemon as route reflector") {
        return Ok(());
    }
    for_each_daemon("daemon_route_reflector", reflect_through)
}

fn reflect_through(rr: Daemon) -> anyhow::Result<()> {
    let client = match rr {
        Daemon::Bird => Daemon::Frr,
        Daemon::Frr => Daemon::Gobgp,
        Daemon::Gobgp => Daemon::Bird,
    };
    let topo = Topology::with_hosts(&format!("r{}", rr.name()), &["tortie", "rr", "client"])?;
    let (th, rh, ch) = (
        topo.host("tortie").clone(),
        topo.host("rr").clone(),
        topo.host("client").clone(),
    );
    let (t4, r4, c4) = (th.addr(false), rh.addr(false), ch.addr(false));
    let theirs = net("10.244.3.0/26");

    let mut rr_cfg = RouterConfig::new(&rh.netns, rh.v4, TORTIE_AS)
        .peer(daemon_peer(rr, t4, TORTIE_AS).rr_client())
        .peer(daemon_peer(rr, c4, TORTIE_AS).rr_client());
    rr_cfg.rr_cluster_id = Some("198.18.255.2".parse()?);
    // Whoever is GoBGP waits for the other end to connect.
    let mut to_rr = PeerSpec::new(r4, TORTIE_AS);
    if client == Daemon::Gobgp {
        to_rr = to_rr.passive();
    }
    if rr == Daemon::Gobgp {
        to_rr.passive = false;
    }
    let client_cfg = RouterConfig::new(&ch.netns, ch.v4, TORTIE_AS)
        .peer(to_rr)
        .originate(theirs);
    let rr_router = Router::start(rr, &rr_cfg)?;
    let client_router = Router::start(client, &client_cfg)?;
    let t0 = SystemTime::now();
    let mut tortie = Tortie::start(&th, TortieConfig::new(TORTIE_AS))?;
    tortie.originate(&[tortie_v4()]);
    tortie.set_peers(vec![tortie_peer(r4, TORTIE_AS)]);
    let st = tortie.wait_peer(r4, "Established", WAIT, established)?;
    timing(&format!(
        "{} iBGP IPv4 as route reflector of tortie: Established after {:.2?}",
        rr.name(),
        since(&st, t0)
    ));
    rr_router.wait_established(t4, WAIT)?;
    rr_router.wait_established(c4, WAIT)?;

    // tortie learns the other client's prefix with that client's next hop, and the other
    // client learns tortie's with tortie's.
    tortie
        .wait_route(theirs, Some(c4), WAIT)
        .with_context(|| format!("{}'s prefix reflected by {}", client.name(), rr.name()))?;
    client_router
        .wait_routes(
            |t| {
                t.get(&tortie_v4())
                    .is_some_and(|r| r.next_hop == t4 && r.as_path.is_empty())
            },
            WAIT,
        )
        .with_context(|| {
            format!(
                "{} should learn tortie's prefix reflected by {}",
                client.name(),
                rr.name()
            )
        })?;
    Ok(())
}
