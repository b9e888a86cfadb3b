//! The readiness state machine: is this node's dataplane programmed from a complete view?
//!
//! Ready means: the Node is registered, the datastore has been fully synced at least once, it
//! is reachable now, and the last route programming succeeded (there has been at least one).
//! Otherwise [`Readiness::status`] gives the first reason, in that order, as the plain text
//! `/readiness` answers with. Pure: events in, status out.

/// Something that changes readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadinessEvent {
    /// Registering the Node failed (the agent keeps retrying).
    RegistrationFailed(String),
    /// The Node record is written.
    Registered,
    /// The first full datastore snapshot arrived.
    InSync,
    /// The datastore stopped answering.
    DatastoreUnreachable(String),
    /// The datastore answers again.
    DatastoreReachable,
    /// Routes were reconciled without error.
    ApplySucceeded,
    /// Route programming failed.
    ApplyFailed(String),
    /// With BGP: `None` when every configured peer is Established, else why not.
    Bgp(Option<String>),
    /// Policy rules were programmed (`None`) or programming them failed (why).
    Policy(Option<String>),
}

/// Readiness inputs seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    registered: bool,
    registration_error: Option<String>,
    in_sync: bool,
    unreachable: Option<String>,
    applied_once: bool,
    apply_error: Option<String>,
    bgp_error: Option<String>,
    policy_error: Option<String>,
}

impl Readiness {
    /// Nothing has happened yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Absorbs one event.
    pub fn on_event(&mut self, event: ReadinessEvent) {
        match event {
            ReadinessEvent::RegistrationFailed(e) => self.registration_error = Some(e),
            ReadinessEvent::Registered => {
                self.registered = true;
                self.registration_error = None;
            }
            ReadinessEvent::InSync => self.in_sync = true,
            ReadinessEvent::DatastoreUnreachable(e) => self.unreachable = Some(e),
            ReadinessEvent::DatastoreReachable => self.unreachable = None,
            ReadinessEvent::ApplySucceeded => {
                self.applied_once = true;
                self.apply_error = None;
            }
            ReadinessEvent::ApplyFailed(e) => self.apply_error = Some(e),
            ReadinessEvent::Bgp(e) => self.bgp_error = e,
            ReadinessEvent::Policy(e) => self.policy_error = e,
        }
    }

    /// `Ok` when ready, else why not.
    pub fn status(&self) -> Result<(), String> {
        if !self.registered {
            return Err(match &self.registration_error {
                Some(e) => format!("registering node failed: {e}"),
                None => "registering node".to_string(),
            });
        }
        if !self.in_sync {
            return Err(match &self.unreachable {
                Some(e) => format!("waiting for datastore sync: datastore unreachable: {e}"),
                None => "waiting for datastore sync".to_string(),
            });
        }
        if let Some(e) = &self.unreachable {
            return Err(format!("datastore unreachable: {e}"));
        }
        if let Some(e) = &self.apply_error {
            return Err(format!("route programming failed: {e}"));
        }
        if !self.applied_once {
            return Err("waiting for first route programming".to_string());
        }
        if let Some(e) = &self.policy_error {
            return Err(format!("policy programming failed: {e}"));
        }
        if let Some(e) = &self.bgp_error {
            return Err(e.clone());
        }
        Ok(())
    }

    /// Whether the first full sync has happened.
    pub fn in_sync(&self) -> bool {
        self.in_sync
    }
}

#[cfg(test)]
mod tests {
    use super::ReadinessEvent::*;
    use super::*;

    #[test]
    fn a_bgp_peer_that_is_not_up_makes_the_node_unready() {
        let up = [Registered, InSync, ApplySucceeded];
        let mut events = up.to_vec();
        events.push(Bgp(Some("BGP peer 198.18.0.2 is not established".into())));
        assert_eq!(
            after(&events).unwrap_err(),
            "BGP peer 198.18.0.2 is not established"
        );
        events.push(Bgp(None));
        assert_eq!(after(&events), Ok(()));
    }

    #[test]
    fn failing_policy_programming_makes_the_node_unready_until_it_succeeds() {
        let mut events = vec![Registered, InSync, ApplySucceeded];
        events.push(Policy(Some("nft -f - failed: no such chain".into())));
        assert_eq!(
            after(&events).unwrap_err(),
            "policy programming failed: nft -f - failed: no such chain"
        );
        events.push(Policy(None));
        assert_eq!(after(&events), Ok(()));
    }

    fn after(events: &[ReadinessEvent]) -> Result<(), String> {
        let mut r = Readiness::new();
        for e in events {
            r.on_event(e.clone());
        }
        r.status()
    }

    #[test]
    fn becomes_ready_after_registration_sync_and_first_apply() {
        assert_eq!(after(&[]), Err("registering node".into()));
        assert_eq!(
            after(&[RegistrationFailed("datastore down".into())]),
            Err("registering node failed: datastore down".into())
        );
        assert_eq!(
            after(&[Registered]),
            Err("waiting for datastore sync".into())
        );
        assert_eq!(
            after(&[Registered, InSync]),
            Err("waiting for first route programming".into())
        );
        assert_eq!(after(&[Registered, InSync, ApplySucceeded]), Ok(()));
    }

    #[test]
    fn apply_failures_and_recovery() {
        let failed = [
            Registered,
            InSync,
            ApplyFailed("add 10.0.0.0/26: EEXIST".into()),
        ];
        assert_eq!(
            after(&failed),
            Err("route programming failed: add 10.0.0.0/26: EEXIST".into())
        );
        let mut recovered = failed.to_vec();
        recovered.push(ApplySucceeded);
        assert_eq!(after(&recovered), Ok(()));
        // A failure after being ready makes it unready again.
        recovered.push(ApplyFailed("boom".into()));
        assert!(after(&recovered).unwrap_err().contains("boom"));
    }

    #[test]
    fn datastore_outages() {
        assert_eq!(
            after(&[Registered, DatastoreUnreachable("refused".into())]),
            Err("waiting for datastore sync: datastore unreachable: refused".into())
        );
        let out = [
            Registered,
            InSync,
            ApplySucceeded,
            DatastoreUnreachable("refused".into()),
        ];
        assert_eq!(after(&out), Err("datastore unreachable: refused".into()));
        let mut back = out.to_vec();
        back.push(DatastoreReachable);
        assert_eq!(after(&back), Ok(()));
    }
}
