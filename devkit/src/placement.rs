//! Where a process of a generated cluster runs: its own address instead of
//! 127.0.0.1 and a command prefix to launch it with.
//!
//! # Design
//!
//! A cluster on one machine models several hosts by giving each process its
//! own network namespace (`ip netns exec NS custos-signer ...`): the
//! process binds and advertises the namespace's address, and every other
//! process reaches it there. Nothing in the daemons knows about this; only
//! the generated addresses and the way the devkit spawns them change. The
//! prefix is generic (any wrapper that ends by exec'ing the command in
//! place keeps the daemon's pid, as `ip netns exec` does, so signals and
//! `pids.json` still reach the daemon itself).
//!
//! TLS names need no change: clients check the coordinator as `localhost`
//! and each signer by its node id, whatever address they dial.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::DevkitError;

/// Where one process (`coordinator` or a node id) runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Placement {
    /// The address it binds and advertises instead of 127.0.0.1.
    pub ip: Option<Ipv4Addr>,
    /// Program and arguments its command line is appended to, e.g.
    /// `["ip", "netns", "exec", "custos-s1"]` (empty: spawned directly).
    pub command_prefix: Vec<String>,
}

impl Placement {
    /// A process bound to `ip` and launched through `command_prefix`.
    pub fn new(ip: Ipv4Addr, command_prefix: Vec<String>) -> Self {
        Placement {
            ip: Some(ip),
            command_prefix,
        }
    }

    /// The address to bind and advertise (127.0.0.1 unless placed).
    pub fn host(&self) -> Ipv4Addr {
        self.ip.unwrap_or(Ipv4Addr::LOCALHOST)
    }

    /// Refuses a prefix whose program or any argument is empty, naming
    /// the process.
    pub(crate) fn validate(&self, name: &str) -> Result<(), DevkitError> {
        if self.command_prefix.iter().any(String::is_empty) {
            return Err(DevkitError::InvalidSpec(format!(
                "placement of {name}: command_prefix {:?} has an empty element",
                self.command_prefix
            )));
        }
        if self.ip.is_some_and(|ip| ip.is_unspecified()) {
            return Err(DevkitError::InvalidSpec(format!(
                "placement of {name}: 0.0.0.0 is not an address others can reach"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_loopback_spawned_directly() {
        let p = Placement::default();
        assert_eq!(p.host(), Ipv4Addr::LOCALHOST);
        assert!(p.command_prefix.is_empty());
        assert!(p.validate("signer-1").is_ok());
    }

    #[test]
    fn an_empty_prefix_element_or_an_unspecified_address_is_refused() {
        let p = Placement::new(Ipv4Addr::new(10, 1, 2, 3), vec!["ip".into(), String::new()]);
        let e = p.validate("signer-2").unwrap_err().to_string();
        assert!(e.contains("signer-2") && e.contains("empty"), "{e}");
        let p = Placement::new(Ipv4Addr::UNSPECIFIED, Vec::new());
        let e = p.validate("coordinator").unwrap_err().to_string();
        assert!(e.contains("coordinator") && e.contains("0.0.0.0"), "{e}");
    }
}
