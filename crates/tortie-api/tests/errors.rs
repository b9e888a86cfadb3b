//! Error messages name the file, document, line, field path and value.

use tortie_api::codec::decode;
use tortie_api::{DecodeError, Kind, Resource};

fn errors(text: &str) -> Vec<DecodeError> {
    decode("input.yaml", text, "default")
        .into_iter()
        .filter_map(|d| d.err())
        .collect()
}

#[test]
fn invalid_cidr_names_file_document_line_field_and_value() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: ok}\nspec: {cidr: 10.0.0.0/16}\n---\n# second\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: bad\nspec:\n  cidr: 10.0.0/33\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1);
    let msg = errs[0].to_string();
    assert!(msg.contains("input.yaml"), "{msg}");
    assert!(msg.contains("document 1"), "{msg}");
    assert!(msg.contains("line 6"), "{msg}");
    assert!(msg.contains("spec.cidr"), "{msg}");
    assert!(msg.contains("10.0.0/33"), "{msg}");
}

#[test]
fn type_errors_carry_the_path() {
    let text = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n    - action: Allw\n";
    let msg = errors(text)[0].to_string();
    assert!(msg.contains("spec.ingress[0].action"), "{msg}");
    assert!(msg.contains("Allw"), "{msg}");
}

#[test]
fn unknown_fields_are_rejected() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, blocksize: 24}\n";
    let msg = errors(text)[0].to_string();
    assert!(msg.contains("blocksize"), "{msg}");
}

#[test]
fn wrong_api_version_and_unknown_kind() {
    let msg = errors("apiVersion: projectcalico.org/v2\nkind: IPPool\nmetadata: {name: p}\n")[0]
        .to_string();
    assert!(
        msg.contains("apiVersion") && msg.contains("projectcalico.org/v2"),
        "{msg}"
    );
    let msg = errors("apiVersion: projectcalico.org/v3\nkind: IPPoool\nmetadata: {name: p}\n")[0]
        .to_string();
    assert!(
        msg.contains("unknown kind") && msg.contains("IPPoool"),
        "{msg}"
    );
}

#[test]
fn malformed_yaml_is_a_syntax_error() {
    let errs = errors("apiVersion: projectcalico.org/v3\nkind: [IPPool\n");
    assert!(
        matches!(errs[0], DecodeError::Syntax { .. }),
        "{:?}",
        errs[0]
    );
    assert!(errs[0].to_string().contains("invalid YAML"));
}

#[test]
fn bad_selector_reports_position() {
    let text = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  selector: app == 'a' &&& b\n";
    let msg = errors(text)[0].to_string();
    assert!(msg.contains("spec.selector"), "{msg}");
    assert!(msg.contains("position"), "{msg}");
}

#[test]
fn lists_and_multi_documents() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- metadata: {name: a}\n  spec: {cidr: 10.1.0.0/16}\n- metadata: {name: b}\n  spec: {cidr: 10.2.0.0/16}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: Tier\n  metadata: {name: t1}\n";
    let out = decode("x.yaml", text, "default");
    assert_eq!(out.len(), 3);
    let kinds: Vec<Kind> = out
        .iter()
        .map(|d| d.as_ref().expect("valid").1.kind())
        .collect();
    assert_eq!(kinds, [Kind::IPPool, Kind::IPPool, Kind::Tier]);
}

#[test]
fn defaults_match_calico() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p6}\nspec: {cidr: 'fd00::/48'}\n---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  egress: [{action: Allow}]\n";
    let out: Vec<Resource> = decode("x", text, "default")
        .into_iter()
        .map(|d| d.expect("valid").1)
        .collect();
    let Resource::IPPool(p) = &out[0] else {
        panic!()
    };
    assert_eq!(p.spec().block_size, Some(26));
    assert_eq!(p.spec().node_selector, "all()");
    let Resource::IPPool(p6) = &out[1] else {
        panic!()
    };
    assert_eq!(p6.spec().block_size, Some(122));
    let Resource::NetworkPolicy(np) = &out[2] else {
        panic!()
    };
    assert_eq!(np.spec().tier, "default");
    assert_eq!(np.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        np.spec().types.as_deref(),
        Some(&[tortie_api::policy::PolicyType::Egress][..])
    );
}
