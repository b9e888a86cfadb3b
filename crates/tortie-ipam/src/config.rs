//! The effective IPAMConfiguration.

use tortie_api::ipam::{DEFAULT_MAX_BLOCKS_PER_HOST, IPAMConfigurationSpec};

/// IPAMConfiguration `default` with Calico's defaults applied.
///
/// `ipCooldownSeconds` is read by nobody: tortie releases addresses immediately and relies on
/// FIFO reuse (a released address goes to the back of its block's free list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpamConfig {
    pub strict_affinity: bool,
    /// Effective cap on blocks per host and family (0 in the resource means 20).
    pub max_blocks_per_host: u32,
    pub auto_allocate_blocks: bool,
}

impl Default for IpamConfig {
    fn default() -> Self {
        Self {
            strict_affinity: false,
            max_blocks_per_host: DEFAULT_MAX_BLOCKS_PER_HOST as u32,
            auto_allocate_blocks: true,
        }
    }
}

impl IpamConfig {
    /// The effective configuration of a stored spec.
    pub fn from_spec(spec: &IPAMConfigurationSpec) -> Self {
        let max = match spec.max_blocks_per_host {
            Some(m) if m > 0 => u32::try_from(m).unwrap_or(u32::MAX),
            _ => DEFAULT_MAX_BLOCKS_PER_HOST as u32,
        };
        Self {
            strict_affinity: spec.strict_affinity,
            max_blocks_per_host: max,
            auto_allocate_blocks: spec.auto_allocate_blocks.unwrap_or(true),
        }
    }

    /// The block cap for a request: the smaller of the request's own cap (if non-zero) and
    /// the configured one.
    pub fn block_cap(&self, requested: Option<u32>) -> u32 {
        match requested {
            Some(r) if r > 0 => r.min(self.max_blocks_per_host),
            _ => self.max_blocks_per_host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_caps() {
        let c = IpamConfig::from_spec(&IPAMConfigurationSpec::default());
        assert_eq!(c, IpamConfig::default());
        assert_eq!(c.block_cap(None), 20);
        assert_eq!(c.block_cap(Some(0)), 20);
        assert_eq!(c.block_cap(Some(3)), 3);
        let spec = IPAMConfigurationSpec {
            strict_affinity: true,
            max_blocks_per_host: Some(2),
            auto_allocate_blocks: Some(false),
            ..Default::default()
        };
        let c = IpamConfig::from_spec(&spec);
        assert!(c.strict_affinity && !c.auto_allocate_blocks);
        assert_eq!(c.block_cap(Some(5)), 2);
    }
}
