use super::*;
use crate::fixtures::model;
use crate::nft::RecordingNft;

fn changed_model() -> DataplaneModel {
    let mut m = model();
    m.chains.get_mut("pi-knp/x/allow-a").expect("chain").rules[0]
        .dst
        .ports = vec![(443, 443)];
    m
}

#[test]
fn first_apply_is_full_then_incremental_then_unchanged() {
    let mut mgr = NftManager::new(RecordingNft::new());
    mgr.runner().set_listing("listing 1");
    let s = mgr.apply(&model()).expect("apply");
    assert_eq!(s.mode, ApplyMode::Full);
    assert!(s.script.contains("delete table inet tortie"));
    assert_eq!(mgr.last_listing(), None, "not read back on the change path");
    assert!(!mgr.check_drift().expect("check"));
    assert_eq!(mgr.last_listing(), Some("listing 1"));
    let s = mgr.apply(&changed_model()).expect("apply");
    assert_eq!(s.mode, ApplyMode::Incremental);
    assert!(
        s.script
            .starts_with("flush chain inet tortie pi-knp/x/allow-a\n")
    );
    assert_eq!(s.commands(), 3);
    let s = mgr.apply(&changed_model()).expect("apply");
    assert_eq!(s.mode, ApplyMode::Unchanged);
    assert_eq!(
        mgr.runner().scripts().len(),
        2,
        "nothing run when unchanged"
    );
    assert_eq!(mgr.last_applied(), Some(&render(&changed_model())));
}

#[test]
fn failed_incremental_is_retried_as_full() {
    let mut mgr = NftManager::new(RecordingNft::new());
    mgr.apply(&model()).expect("apply");
    mgr.runner()
        .push_result(Err(RecordingNft::rejection("boom")));
    let s = mgr.apply(&changed_model()).expect("apply");
    assert_eq!(s.mode, ApplyMode::Full);
    assert!(s.retried_full);
    let scripts = mgr.runner().scripts();
    assert_eq!(scripts.len(), 3);
    assert!(!scripts[1].contains("delete table"));
    assert_eq!(scripts[2], diff::full_script(&render(&changed_model())));
}

#[test]
fn failed_full_leaves_state_unknown() {
    let mut mgr = NftManager::new(RecordingNft::new());
    mgr.apply(&model()).expect("apply");
    mgr.runner()
        .push_result(Err(RecordingNft::rejection("one")));
    mgr.runner()
        .push_result(Err(RecordingNft::rejection("two")));
    let e = mgr.apply(&changed_model()).expect_err("both fail");
    assert!(e.to_string().contains("two"), "{e}");
    assert!(mgr.last_applied().is_none());
    assert!(mgr.last_listing().is_none());
    // The next apply starts over with a full replace.
    let s = mgr.apply(&changed_model()).expect("apply");
    assert_eq!(s.mode, ApplyMode::Full);
    assert!(!s.retried_full);
}

#[test]
fn a_failed_first_apply_is_not_retried() {
    let mut mgr = NftManager::new(RecordingNft::new());
    mgr.runner()
        .push_result(Err(RecordingNft::rejection("no nft here")));
    assert!(mgr.apply(&model()).is_err());
    assert_eq!(mgr.runner().scripts().len(), 1);
}

#[test]
fn drift_is_repaired_with_a_full_replace() {
    let mut mgr = NftManager::new(RecordingNft::new());
    assert!(!mgr.check_drift().expect("nothing desired yet"));
    mgr.runner().set_listing("good");
    mgr.apply(&model()).expect("apply");
    assert!(!mgr.check_drift().expect("same listing"));
    mgr.runner().set_listing("flushed by someone");
    assert!(mgr.check_drift().expect("drift"));
    let scripts = mgr.runner().scripts();
    assert_eq!(scripts.last(), Some(&diff::full_script(&render(&model()))));
    // The repaired table's listing is the new reference.
    assert!(!mgr.check_drift().expect("stable"));
}

#[test]
fn apply_does_not_list_the_table() {
    let mut mgr = NftManager::new(RecordingNft::new());
    mgr.apply(&model()).expect("apply");
    mgr.apply(&changed_model()).expect("apply");
    assert_eq!(mgr.runner().list_calls(), 0);
    // The first drift check after the commits takes the listing; later ones with no
    // nftables commit in between list nothing.
    assert!(!mgr.check_drift().expect("check"));
    assert_eq!(mgr.runner().list_calls(), 1);
    assert!(!mgr.check_drift().expect("check"));
    assert!(!mgr.check_drift().expect("check"));
    assert_eq!(mgr.runner().list_calls(), 1);
}

#[test]
fn a_flush_before_the_first_drift_check_is_repaired() {
    let mut mgr = NftManager::new(RecordingNft::new());
    mgr.runner().set_listing("good");
    mgr.apply(&model()).expect("apply");
    mgr.apply(&changed_model()).expect("apply");
    // Someone flushes the table right after the commit, before any listing was taken.
    mgr.runner().set_listing("flushed by someone");
    assert!(mgr.check_drift().expect("drift"));
    let scripts = mgr.runner().scripts();
    assert_eq!(
        scripts.last(),
        Some(&diff::full_script(&render(&changed_model())))
    );
    assert_eq!(mgr.last_applied(), Some(&render(&changed_model())));
    assert!(!mgr.check_drift().expect("stable"));
}

#[test]
fn another_programs_commit_after_the_baseline_is_compared_not_repaired() {
    let mut mgr = NftManager::new(RecordingNft::new());
    mgr.runner().set_listing("good");
    mgr.apply(&model()).expect("apply");
    assert!(!mgr.check_drift().expect("baseline"));
    let lists = mgr.runner().list_calls();
    mgr.runner().bump_generation();
    assert!(!mgr.check_drift().expect("same listing"));
    assert_eq!(mgr.runner().list_calls(), lists + 1);
    // The generation seen is the new reference: nothing listed next time.
    assert!(!mgr.check_drift().expect("quiet"));
    assert_eq!(mgr.runner().list_calls(), lists + 1);
    mgr.runner().set_listing("edited");
    assert!(mgr.check_drift().expect("edited"));
}

#[test]
fn without_a_generation_the_table_is_read_back_after_each_commit() {
    let mut mgr = NftManager::new(RecordingNft::without_generation());
    mgr.runner().set_listing("good");
    mgr.apply(&model()).expect("apply");
    assert_eq!(mgr.runner().list_calls(), 1);
    assert_eq!(mgr.last_listing(), Some("good"));
    assert!(!mgr.check_drift().expect("same listing"));
    mgr.runner().set_listing("flushed");
    assert!(mgr.check_drift().expect("drift"));
}

#[test]
fn drift_check_after_a_failed_apply_rebuilds() {
    let mut mgr = NftManager::new(RecordingNft::new());
    mgr.runner()
        .push_result(Err(RecordingNft::rejection("transient")));
    assert!(mgr.apply(&model()).is_err());
    assert!(mgr.check_drift().expect("rebuild"));
    assert_eq!(mgr.last_applied(), Some(&render(&model())));
}

#[test]
fn remove_forgets_everything() {
    let mut mgr = NftManager::new(RecordingNft::new());
    mgr.apply(&model()).expect("apply");
    mgr.remove().expect("remove");
    assert!(mgr.last_applied().is_none());
    assert_eq!(
        mgr.runner().scripts().last().map(String::as_str),
        Some("table inet tortie {}\ndelete table inet tortie\n")
    );
    assert!(!mgr.check_drift().expect("nothing desired"));
}

/// Patching sets in place (with deltas handed to the diff) sends exactly the script a fresh
/// render-and-diff would, over a walk of adds, removes and a CIDR coming and going.
#[test]
fn patched_applies_send_what_a_fresh_diff_would() {
    use tortie_calc::dataplane::IpSetMembers;
    let mut m = NftManager::new(RecordingNft::new());
    let mut prev = model();
    m.apply(&prev).expect("first apply");
    let name = prev
        .ip_sets
        .iter()
        .find(|(_, s)| matches!(s.members, IpSetMembers::Nets(_)))
        .map(|(n, _)| n.clone())
        .expect("a selector set");
    for step in 0u32..40 {
        let mut next = prev.clone();
        if let Some(set) = next.ip_sets.get_mut(&name)
            && let IpSetMembers::Nets(nets) = &mut set.members
        {
            for k in 0..(1 + step % 3) {
                let ip: ipnet::IpNet = format!("10.250.{}.{}/32", k, (step * 7 + k) % 13)
                    .parse()
                    .expect("net");
                if !nets.remove(&ip) {
                    nets.insert(ip);
                }
            }
            if step == 20 {
                nets.insert("10.251.0.0/24".parse().expect("net"));
            }
            if step == 30 {
                nets.remove(&"10.251.0.0/24".parse().expect("net"));
            }
        }
        let want = crate::diff::script(Some(&render(&prev)), &render(&next));
        let stats = m.apply(&next).expect("apply");
        assert_eq!(stats.script, want, "step {step}");
        assert_eq!(m.last_applied(), Some(&render(&next)), "step {step}");
        prev = next;
    }
}

/// `model()` with set `s4-a` holding `addrs` (host addresses).
fn with_members(addrs: &[&str]) -> DataplaneModel {
    let mut m = model();
    m.ip_sets.get_mut("s4-a").expect("set").members = tortie_calc::dataplane::IpSetMembers::Nets(
        addrs
            .iter()
            .map(|a| format!("{a}/32").parse().expect("net"))
            .collect(),
    );
    m
}

#[test]
fn member_changes_go_as_element_updates_when_the_runner_takes_them() {
    let mut mgr = NftManager::new(RecordingNft::with_element_updates());
    mgr.apply(&with_members(&["10.244.1.10"])).expect("first");
    let s = mgr
        .apply(&with_members(&["10.244.1.11", "10.244.1.12"]))
        .expect("members");
    assert_eq!(s.mode, ApplyMode::Incremental);
    assert!(s.elements_only);
    assert_eq!(
        s.script,
        "delete element inet tortie s4-a { 10.244.1.10 }\nadd element inet tortie s4-a { 10.244.1.11, 10.244.1.12 }\n"
    );
    assert_eq!(mgr.runner().scripts().len(), 1, "no script after the first");
    assert_eq!(
        mgr.runner().element_updates(),
        vec![vec![SetElements {
            set: "s4-a".into(),
            removed: vec!["10.244.1.10".parse().expect("ip")],
            added: vec![
                "10.244.1.11".parse().expect("ip"),
                "10.244.1.12".parse().expect("ip")
            ],
        }]]
    );
    // The manager's idea of the kernel is what a full rendering gives.
    assert_eq!(
        mgr.last_applied(),
        Some(&render(&with_members(&["10.244.1.11", "10.244.1.12"])))
    );
    // A change that also touches rules is one script, deltas included.
    let mut both = with_members(&["10.244.1.11"]);
    both.chains
        .get_mut("pi-knp/x/allow-a")
        .expect("chain")
        .rules[0]
        .dst
        .ports = vec![(443, 443)];
    let s = mgr.apply(&both).expect("both");
    assert!(!s.elements_only);
    assert!(
        s.script
            .contains("delete element inet tortie s4-a { 10.244.1.12 }")
    );
    assert!(
        s.script
            .contains("flush chain inet tortie pi-knp/x/allow-a")
    );
    assert_eq!(mgr.runner().element_updates().len(), 1);
    assert_eq!(mgr.runner().scripts().len(), 2);
}

#[test]
fn a_refused_element_update_is_repaired_with_a_full_replace() {
    let mut mgr = NftManager::new(RecordingNft::with_element_updates());
    mgr.apply(&with_members(&["10.244.1.10"])).expect("first");
    mgr.runner()
        .push_result(Err(RecordingNft::rejection("no such element")));
    let s = mgr.apply(&with_members(&["10.244.1.11"])).expect("apply");
    assert_eq!(s.mode, ApplyMode::Full);
    assert!(s.retried_full);
    assert!(!s.elements_only);
    let scripts = mgr.runner().scripts();
    assert_eq!(scripts.len(), 2);
    assert_eq!(
        scripts[1],
        diff::full_script(&render(&with_members(&["10.244.1.11"])))
    );
}

#[test]
fn a_runner_without_element_updates_gets_the_script() {
    let mut mgr = NftManager::new(RecordingNft::new());
    mgr.apply(&with_members(&["10.244.1.10"])).expect("first");
    let s = mgr.apply(&with_members(&["10.244.1.11"])).expect("apply");
    assert_eq!(s.mode, ApplyMode::Incremental);
    assert!(!s.elements_only);
    assert_eq!(mgr.runner().scripts()[1], s.script);
    assert!(s.script.starts_with("delete element inet tortie s4-a"));
}
