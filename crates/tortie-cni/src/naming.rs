//! Names Calico derives from a pod: the host-side veth and the WorkloadEndpoint.
//!
//! Felix computes the same veth name from the WorkloadEndpoint, so the rule is a wire
//! surface: `cali` + the first 11 hex digits of SHA-1(`<namespace>.<pod>`), 15 characters
//! (the kernel's limit). Outside Kubernetes the container ID is hashed instead.

use sha1::{Digest, Sha1};

/// Calico's host-side interface prefix.
pub const HOST_VETH_PREFIX: &str = "cali";

/// Hex digits of the hash kept in the name (15 = IFNAMSIZ - 1).
pub const HASH_DIGITS: usize = 11;

/// The host veth name for a pod (`Some((namespace, pod))`) or a bare container.
pub fn host_veth_name(pod: Option<(&str, &str)>, container_id: &str) -> String {
    let input = match pod {
        Some((ns, name)) => format!("{ns}.{name}"),
        None => container_id.to_string(),
    };
    let digest = Sha1::digest(input.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{HOST_VETH_PREFIX}{}", &hex[..HASH_DIGITS])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_vectors() {
        // `printf %s default.nginx | sha1sum` = c440f455693b69cdd48a37aa5ecd78038f50413d
        assert_eq!(
            host_veth_name(Some(("default", "nginx")), "ignored"),
            "calic440f455693"
        );
        // `printf %s kube-system.coredns-abc | sha1sum` = 3d5d6ab04b5152ac...
        assert_eq!(
            host_veth_name(Some(("kube-system", "coredns-abc")), "x"),
            "cali3d5d6ab04b5"
        );
        // FIPS 180 vector: sha1("abc") = a9993e364706816aba3e25717850c26c9cd0d89d.
        assert_eq!(host_veth_name(None, "abc"), "calia9993e36470");
        assert_eq!(host_veth_name(None, "abc").len(), 15);
    }
}
