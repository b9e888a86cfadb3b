use super::*;
use tortie_api::numorstring::AsNumber;

fn node(v4: &str, labels: &[(&str, &str)]) -> BgpNode {
    BgpNode {
        addrs: NodeAddrs {
            ipv4: Some(v4.parse().unwrap()),
            ipv6: None,
        },
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        as_number: None,
        rr_cluster_id: None,
    }
}

fn cluster(nodes: &[(&str, &str)]) -> (BgpInputs, RoutingModel) {
    let mut inputs = BgpInputs::default();
    let mut routing = RoutingModel::default();
    for (name, ip) in nodes {
        let n = node(ip, &[("name", name)]);
        routing.nodes.insert(name.to_string(), n.addrs);
        inputs.nodes.insert(name.to_string(), n);
    }
    (inputs, routing)
}

fn peer_addrs(p: &BgpPlan) -> Vec<(String, bool, PeerKind)> {
    p.peers
        .iter()
        .map(|p| (p.addr.to_string(), p.passive, p.kind))
        .collect()
}

#[test]
fn mesh_peers_every_other_node_and_only_the_greater_ip_connects() {
    let (inputs, routing) = cluster(&[
        ("n1", "198.18.0.1"),
        ("n2", "198.18.0.2"),
        ("n3", "198.18.0.10"),
    ]);
    let p = plan(&inputs, &routing, &[], "n2").unwrap();
    assert_eq!(p.local_as, DEFAULT_AS);
    assert_eq!(p.router_id.to_string(), "198.18.0.2");
    assert_eq!(p.listen_port, 179);
    // Lexical comparison, as Calico: "198.18.0.10" < "198.18.0.2", so n2 connects to n3.
    assert_eq!(
        peer_addrs(&p),
        vec![
            ("198.18.0.1".to_string(), false, PeerKind::Mesh),
            ("198.18.0.10".to_string(), false, PeerKind::Mesh),
        ]
    );
    let p1 = plan(&inputs, &routing, &[], "n1").unwrap();
    assert!(p1.peers.iter().all(|p| p.passive), "n1 sorts lowest");
}

#[test]
fn no_mesh_when_disabled_and_route_reflectors_are_left_out() {
    let (mut inputs, routing) = cluster(&[
        ("n1", "198.18.0.1"),
        ("n2", "198.18.0.2"),
        ("rr", "198.18.0.3"),
    ]);
    inputs.nodes.get_mut("rr").unwrap().rr_cluster_id = Some("1.0.0.1".parse().unwrap());
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert_eq!(p.peers.len(), 1, "{:?}", peer_addrs(&p));
    let rr = plan(&inputs, &routing, &[], "rr").unwrap();
    assert!(rr.peers.is_empty(), "a reflector is not in the mesh");
    assert_eq!(rr.cluster_id, Some("1.0.0.1".parse().unwrap()));

    let cfg: BGPConfigurationSpec = serde_json::from_value(
        serde_json::json!({"nodeToNodeMeshEnabled": false, "asNumber": 65001}),
    )
    .unwrap();
    inputs.configs.insert("default".into(), cfg);
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert!(p.peers.is_empty());
    assert_eq!(p.local_as, 65001);
}

#[test]
fn bgp_peers_select_nodes_and_peers() {
    let (mut inputs, routing) = cluster(&[
        ("n1", "198.18.0.1"),
        ("n2", "198.18.0.2"),
        ("rr", "198.18.0.3"),
    ]);
    inputs.nodes.get_mut("rr").unwrap().rr_cluster_id = Some("1.0.0.1".parse().unwrap());
    inputs
        .nodes
        .get_mut("rr")
        .unwrap()
        .labels
        .insert("route-reflector".into(), "true".into());
    let spec = |v: serde_json::Value| -> BGPPeerSpec { serde_json::from_value(v).unwrap() };
    inputs.configs.insert(
        "default".into(),
        serde_json::from_value(serde_json::json!({"nodeToNodeMeshEnabled": false})).unwrap(),
    );
    inputs.peers.insert(
        "to-rr".into(),
        spec(serde_json::json!({"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"})),
    );
    inputs.peers.insert(
        "tor".into(),
        spec(serde_json::json!({"node": "n1", "peerIP": "198.18.1.1:1179", "asNumber": 65010, "keepOriginalNextHop": true})),
    );
    let p1 = plan(&inputs, &routing, &[], "n1").unwrap();
    assert_eq!(
        peer_addrs(&p1),
        vec![
            ("198.18.0.3".to_string(), true, PeerKind::NodeSpecific),
            ("198.18.1.1".to_string(), false, PeerKind::NodeSpecific),
        ]
    );
    let tor = &p1.peers[1];
    assert_eq!((tor.port, tor.remote_as), (1179, 65010));
    assert_eq!(tor.next_hop, NextHopMode::Keep);
    assert!(!p1.peers[0].rr_client);

    let rr = plan(&inputs, &routing, &[], "rr").unwrap();
    let clients: Vec<_> = rr
        .peers
        .iter()
        .map(|p| (p.addr.to_string(), p.rr_client))
        .collect();
    assert_eq!(
        clients,
        vec![
            ("198.18.0.1".to_string(), true),
            ("198.18.0.2".to_string(), true)
        ]
    );
    let n2 = plan(&inputs, &routing, &[], "n2").unwrap();
    assert_eq!(n2.peers.len(), 1, "the ToR peer is n1's only");
}

#[test]
fn an_explicit_peer_wins_over_the_mesh_and_bad_peers_are_reported() {
    let (mut inputs, routing) = cluster(&[("n1", "198.18.0.1"), ("n2", "198.18.0.2")]);
    let spec = |v: serde_json::Value| -> BGPPeerSpec { serde_json::from_value(v).unwrap() };
    inputs.peers.insert(
        "n2-ebgp".into(),
        spec(serde_json::json!({"peerIP": "198.18.0.2", "asNumber": 65002})),
    );
    inputs.peers.insert(
        "missing-filter".into(),
        spec(serde_json::json!({"peerIP": "198.18.1.9", "asNumber": 65009, "filters": ["nope"]})),
    );
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert_eq!(p.peers.len(), 1);
    assert_eq!(
        (p.peers[0].remote_as, p.peers[0].kind),
        (65002, PeerKind::Global)
    );
    assert_eq!(p.problems.len(), 1);
    assert!(
        p.problems[0].contains("missing-filter") && p.problems[0].contains("\"nope\""),
        "{:?}",
        p.problems
    );
}

#[test]
fn node_as_number_overrides_the_default() {
    let (mut inputs, routing) = cluster(&[("n1", "198.18.0.1"), ("n2", "198.18.0.2")]);
    inputs.nodes.get_mut("n2").unwrap().as_number = Some(AsNumber(65002).0);
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert_eq!(p.peers[0].remote_as, 65002);
    assert_eq!(p.local_as, DEFAULT_AS);
}

#[test]
fn a_node_without_ipv4_has_no_plan() {
    let (inputs, mut routing) = cluster(&[("n1", "198.18.0.1")]);
    routing.nodes.get_mut("n1").unwrap().ipv4 = None;
    let mut inputs = inputs;
    inputs.nodes.get_mut("n1").unwrap().addrs.ipv4 = None;
    let e = plan(&inputs, &routing, &[], "n1").unwrap_err();
    assert!(e.contains("router id"), "{e}");
}

#[test]
fn own_blocks_and_borrowed_addresses_are_advertised() {
    let (inputs, mut routing) = cluster(&[("n1", "198.18.0.1"), ("n2", "198.18.0.2")]);
    let b1: IpNet = "10.244.0.0/26".parse().unwrap();
    let b2: IpNet = "10.244.0.64/26".parse().unwrap();
    let pending: IpNet = "10.244.0.128/26".parse().unwrap();
    routing
        .affinities
        .insert(("n1".into(), b1), AffinityState::Confirmed);
    routing
        .affinities
        .insert(("n2".into(), b2), AffinityState::Confirmed);
    routing
        .affinities
        .insert(("n1".into(), pending), AffinityState::Pending);
    routing.allocations.insert(
        b2,
        [
            ("10.244.0.65".parse().unwrap(), "n2".to_string()),
            ("10.244.0.66".parse().unwrap(), "n1".to_string()),
        ]
        .into(),
    );
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    let got: Vec<String> = p.originate.iter().map(ToString::to_string).collect();
    assert_eq!(got, vec!["10.244.0.0/26", "10.244.0.66/32"]);
}

#[test]
fn prefix_advertisements_tag_the_routes_inside_them() {
    let (mut inputs, mut routing) = cluster(&[("n1", "198.18.0.1")]);
    let b: IpNet = "10.244.0.0/26".parse().unwrap();
    routing
        .affinities
        .insert(("n1".into(), b), AffinityState::Confirmed);
    inputs.configs.insert(
        "default".into(),
        serde_json::from_value(serde_json::json!({
            "communities": [{"name": "pods", "value": "64512:100"}],
            "prefixAdvertisements": [
                {"cidr": "10.244.0.0/16", "communities": ["pods", "64512:1:2"]},
                {"cidr": "10.99.0.0/16", "communities": ["no-such-name"]}
            ]
        }))
        .unwrap(),
    );
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    let routes = originated_routes(&p);
    let a = &routes[&b];
    assert_eq!(a.communities, vec![(64512 << 16) | 100]);
    assert_eq!(a.large_communities, vec![(64512, 1, 2)]);
    assert_eq!(p.problems.len(), 1, "{:?}", p.problems);
    assert!(p.problems[0].contains("no-such-name"), "{:?}", p.problems);
}

/// `secretKeyRef`s resolve against the Secrets of the secrets namespace.
fn with_secret(inputs: &mut BgpInputs, name: &str, data: &[(&str, &[u8])]) {
    inputs.secrets.by_name.insert(
        name.to_string(),
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect(),
    );
}

fn peer_with_password(name: &str, key: &str) -> BGPPeerSpec {
    serde_json::from_value(serde_json::json!({
        "peerIP": "198.18.1.1", "asNumber": 65010,
        "password": {"secretKeyRef": {"name": name, "key": key}}
    }))
    .unwrap()
}

fn mesh_password(name: &str, key: &str) -> BGPConfigurationSpec {
    serde_json::from_value(serde_json::json!({
        "nodeMeshPassword": {"secretKeyRef": {"name": name, "key": key}}
    }))
    .unwrap()
}

#[test]
fn a_peer_password_is_read_from_its_secret() {
    let (mut inputs, routing) = cluster(&[("n1", "198.18.0.1")]);
    with_secret(&mut inputs, "bgp-passwords", &[("tor", &b"s3cret"[..])]);
    inputs
        .peers
        .insert("tor".into(), peer_with_password("bgp-passwords", "tor"));
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(p.peers.len(), 1);
    assert_eq!(p.peers[0].password.as_deref(), Some("s3cret"));

    // A changed value is a changed peer config: the speaker restarts that session.
    let before = p.peers[0].clone();
    with_secret(&mut inputs, "bgp-passwords", &[("tor", &b"rotated"[..])]);
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert_eq!(p.peers[0].password.as_deref(), Some("rotated"));
    assert_ne!(p.peers[0], before);
}

#[test]
fn a_missing_secret_or_key_skips_the_peer_and_names_secret_key_and_namespace() {
    let (mut inputs, routing) = cluster(&[("n1", "198.18.0.1"), ("n2", "198.18.0.2")]);
    inputs.secrets.namespace = "kube-system".into();
    inputs
        .peers
        .insert("tor".into(), peer_with_password("bgp-passwords", "tor"));
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert_eq!(
        peer_addrs(&p),
        vec![("198.18.0.2".to_string(), true, PeerKind::Mesh)],
        "the mesh stays; the ToR peer is skipped"
    );
    assert_eq!(
        p.problems,
        vec![
            "BGPPeer tor: password.secretKeyRef: Secret kube-system/bgp-passwords does not \
             exist (key \"tor\"); the peer is skipped"
                .to_string()
        ]
    );

    with_secret(&mut inputs, "bgp-passwords", &[("other", &b"x"[..])]);
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert_eq!(p.peers.len(), 1);
    assert_eq!(
        p.problems,
        vec![
            "BGPPeer tor: password.secretKeyRef: Secret kube-system/bgp-passwords has no key \
             \"tor\"; the peer is skipped"
                .to_string()
        ]
    );

    // Values the kernel cannot take are problems too.
    for (value, want) in [
        (&b""[..], "is empty"),
        (&[b'x'; 81][..], "81 bytes; a TCP MD5 key has at most 80"),
        (&[0xff, 0xfe][..], "is not UTF-8 text"),
    ] {
        with_secret(&mut inputs, "bgp-passwords", &[("tor", value)]);
        let p = plan(&inputs, &routing, &[], "n1").unwrap();
        assert_eq!(p.peers.len(), 1, "{want}");
        assert!(
            p.problems.len() == 1
                && p.problems[0].contains("key \"tor\" of Secret kube-system/bgp-passwords")
                && p.problems[0].contains(want),
            "{want}: {:?}",
            p.problems
        );
    }

    // The peer is back once the key exists.
    with_secret(&mut inputs, "bgp-passwords", &[("tor", &[b'x'; 80][..])]);
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(p.peers.len(), 2);
}

#[test]
fn an_optional_reference_to_nothing_means_no_password() {
    let (mut inputs, routing) = cluster(&[("n1", "198.18.0.1")]);
    let spec: BGPPeerSpec = serde_json::from_value(serde_json::json!({
        "peerIP": "198.18.1.1", "asNumber": 65010,
        "password": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}
    }))
    .unwrap();
    inputs.peers.insert("tor".into(), spec);
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(p.peers.len(), 1);
    assert_eq!(p.peers[0].password, None);
}

#[test]
fn node_mesh_password_protects_every_mesh_session() {
    let (mut inputs, routing) = cluster(&[
        ("n1", "198.18.0.1"),
        ("n2", "198.18.0.2"),
        ("n3", "198.18.0.3"),
    ]);
    inputs
        .configs
        .insert("default".into(), mesh_password("mesh", "password"));
    inputs.peers.insert(
        "tor".into(),
        serde_json::from_value(serde_json::json!({"peerIP": "198.18.1.1", "asNumber": 65010}))
            .unwrap(),
    );
    with_secret(&mut inputs, "mesh", &[("password", &b"mesh-key"[..])]);
    let p = plan(&inputs, &routing, &[], "n2").unwrap();
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    let passwords: Vec<(String, Option<&str>)> = p
        .peers
        .iter()
        .map(|p| (p.addr.to_string(), p.password.as_deref()))
        .collect();
    assert_eq!(
        passwords,
        vec![
            ("198.18.0.1".to_string(), Some("mesh-key")),
            ("198.18.0.3".to_string(), Some("mesh-key")),
            // Not a mesh session: the mesh password is not its password.
            ("198.18.1.1".to_string(), None),
        ]
    );
}

#[test]
fn an_unreadable_node_mesh_password_leaves_the_mesh_without_one_and_says_so() {
    let (mut inputs, routing) = cluster(&[("n1", "198.18.0.1"), ("n2", "198.18.0.2")]);
    inputs
        .configs
        .insert("default".into(), mesh_password("mesh", "password"));
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert_eq!(p.peers.len(), 1, "the mesh session is kept");
    assert_eq!(p.peers[0].password, None);
    assert_eq!(
        p.problems,
        vec![
            "BGPConfiguration default: nodeMeshPassword.secretKeyRef: Secret \
             calico-system/mesh does not exist (key \"password\"); the mesh sessions run \
             without a password"
                .to_string()
        ]
    );
    with_secret(&mut inputs, "mesh", &[("pw", &b"x"[..])]);
    let p = plan(&inputs, &routing, &[], "n1").unwrap();
    assert!(
        p.problems.len() == 1
            && p.problems[0].contains("Secret calico-system/mesh has no key \"password\""),
        "{:?}",
        p.problems
    );
}
