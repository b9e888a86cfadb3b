//! Keeping WorkloadEndpoint labels equal to their Pod's labels, for this node's pods.
//!
//! Calico derives a WEP's labels from its Pod: the pod's labels plus the reserved
//! `projectcalico.org/*` labels (namespace, orchestrator, service account). tortie's CNI plugin
//! writes them at ADD time; afterwards the agent follows the Pod's label changes.
//!
//! [`label_writes`] is pure: from the model it builds [`LabelWrite`] effects (the whole new
//! stored value and the revision it replaces), which the driver executes with CAS. A conflict
//! needs no retry loop: the syncer delivers the newer endpoint and the decision is made again.

use std::collections::BTreeMap;

use tortie_store::Revision;

use crate::model::{Labels, Model, PodId, WepRecord};

/// Prefix of the labels Calico reserves on endpoints; they are never taken from the Pod.
pub const RESERVED_PREFIX: &str = "projectcalico.org/";

/// The labels an endpoint should carry: the pod's labels (minus reserved ones) plus the
/// endpoint's own reserved labels. `None` when the endpoint already has exactly those.
pub fn desired_wep_labels(pod: &Labels, wep: &Labels) -> Option<Labels> {
    let reserved = |k: &String| k.starts_with(RESERVED_PREFIX);
    let mut want: Labels = pod
        .iter()
        .filter(|(k, _)| !reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    want.extend(
        wep.iter()
            .filter(|(k, _)| reserved(k))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    (want != *wep).then_some(want)
}

/// One endpoint write: replace the value at `key`, only if it is still at `expected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelWrite {
    pub key: String,
    pub value: Vec<u8>,
    pub expected: Revision,
    pub pod: PodId,
}

/// The writes that bring `pod`'s endpoints in line with its labels, skipping endpoints whose
/// current revision already has a write in flight (`in_flight`: key → expected revision).
pub fn label_writes(
    model: &Model,
    pod: &PodId,
    in_flight: &BTreeMap<String, Revision>,
) -> Vec<LabelWrite> {
    let Some(pod_labels) = model.pod_labels(pod) else {
        return Vec::new();
    };
    model
        .weps_of(pod)
        .filter(|(key, wep)| in_flight.get(*key) != Some(&wep.revision))
        .filter_map(|(key, wep)| {
            let labels = desired_wep_labels(pod_labels, &wep.labels)?;
            let value = rewrite_labels(wep, &labels)?;
            Some(LabelWrite {
                key: key.clone(),
                value,
                expected: wep.revision,
                pod: pod.clone(),
            })
        })
        .collect()
}

/// The stored JSON with `metadata.labels` replaced; every other field is kept as stored.
fn rewrite_labels(wep: &WepRecord, labels: &Labels) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(&wep.value).ok()?;
    let meta = value.get_mut("metadata")?.as_object_mut()?;
    if labels.is_empty() {
        meta.remove("labels");
    } else {
        meta.insert("labels".into(), serde_json::to_value(labels).ok()?);
    }
    serde_json::to_vec(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tortie_api::Kind;
    use tortie_store::{KeyValue, SyncUpdate};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pod_labels_replace_user_labels_and_reserved_ones_stay() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        let wep = labels(&[
            ("app", "old"),
            ("gone", "x"),
            ("projectcalico.org/namespace", "x"),
            ("projectcalico.org/orchestrator", "k8s"),
        ]);
        let want = desired_wep_labels(&pod, &wep).unwrap();
        assert_eq!(
            want,
            labels(&[
                ("app", "web"),
                ("projectcalico.org/namespace", "x"),
                ("projectcalico.org/orchestrator", "k8s"),
                ("tier", "front"),
            ])
        );
        assert_eq!(desired_wep_labels(&pod, &want), None);
    }

    #[test]
    fn a_pod_cannot_override_reserved_labels() {
        let pod = labels(&[("projectcalico.org/namespace", "evil"), ("a", "1")]);
        let wep = labels(&[("projectcalico.org/namespace", "x"), ("a", "1")]);
        assert_eq!(desired_wep_labels(&pod, &wep), None);
    }

    fn set(key: String, value: serde_json::Value, rev: i64) -> SyncUpdate {
        SyncUpdate::Set(KeyValue {
            key,
            value: serde_json::to_vec(&value).unwrap(),
            create_revision: rev,
            mod_revision: rev,
        })
    }

    fn model_with(pod_labels: serde_json::Value, node: &str) -> (Model, String) {
        let mut m = Model::new("n1");
        m.apply(&set(
            Kind::Pod.key(Some("x"), "a"),
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "a", "namespace": "x", "labels": pod_labels},
                "spec": {"nodeName": "n1"}}),
            5,
        ));
        let key = Kind::WorkloadEndpoint.key(Some("x"), "n1-k8s-a-eth0");
        m.apply(&set(
            key.clone(),
            serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                "metadata": {"name": "n1-k8s-a-eth0", "namespace": "x",
                    "labels": {"app": "old", "projectcalico.org/namespace": "x",
                               "projectcalico.org/orchestrator": "k8s"}},
                "spec": {"orchestrator": "k8s", "node": node, "pod": "a", "endpoint": "eth0",
                         "interfaceName": "cali0123456789a", "ipNetworks": ["10.244.1.1/32"]}}),
            7,
        ));
        (m, key)
    }

    #[test]
    fn writes_carry_the_whole_record_and_the_cas_revision() {
        let (m, key) = model_with(serde_json::json!({"app": "web"}), "n1");
        let pod = ("x".to_string(), "a".to_string());
        let writes = label_writes(&m, &pod, &BTreeMap::new());
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].key, key);
        assert_eq!(writes[0].expected, 7);
        let v: serde_json::Value = serde_json::from_slice(&writes[0].value).unwrap();
        assert_eq!(v["metadata"]["labels"]["app"], "web");
        assert_eq!(v["metadata"]["labels"]["projectcalico.org/namespace"], "x");
        assert_eq!(v["spec"]["interfaceName"], "cali0123456789a");
        // In flight at this revision: not repeated.
        let in_flight = BTreeMap::from([(key, 7)]);
        assert!(label_writes(&m, &pod, &in_flight).is_empty());
    }

    #[test]
    fn other_nodes_endpoints_are_not_touched() {
        let (m, _) = model_with(serde_json::json!({"app": "web"}), "n2");
        let pod = ("x".to_string(), "a".to_string());
        assert!(label_writes(&m, &pod, &BTreeMap::new()).is_empty());
    }
}
