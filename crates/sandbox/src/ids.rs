//! Host ids for instances. Each instance maps its 65536 ids (root, the workspace user,
//! nobody…) onto a range of host ids of its own, so that no two instances — and no host user —
//! share an owner: a file one instance's workspace user owns on the host (its display socket,
//! its notebook's decrypted view, its dataset copies) belongs to that instance alone.
//!
//! The ranges come from a pool (by default 2^30 to 2^31, far above where `useradd` hands out
//! subordinate ids, and below 2^31, the largest owner gocryptfs takes) that must not overlap any entry of `/etc/subuid`
//! or `/etc/subgid`: a host user who owns a subordinate range can become any id in it through
//! the setuid `newuidmap`, so an overlap would let them act as an instance. The pool is
//! checked when the sandbox starts, and a sandbox whose pool overlaps refuses to start.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{SandboxError, setup};
use crate::spec::WORKSPACE_UID;

/// How many ids one instance maps (0 to 65535 inside).
pub const RANGE_SIZE: u32 = 65_536;

/// The host ids one instance's ids map to: inside id `n` is host id `base + n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub base: u32,
}

impl IdRange {
    /// The host id of an id inside the instance.
    pub fn host(self, inside: u32) -> u32 {
        self.base + inside
    }

    /// The host id of the instance's workspace user.
    pub fn workspace(self) -> u32 {
        self.host(WORKSPACE_UID)
    }

    /// The host id of the instance's root (which no program of the instance runs as once it
    /// has started; it owns the instance's host directories so that its setup may enter them).
    pub fn root(self) -> u32 {
        self.base
    }
}

/// Where instances' ranges come from: `slots` consecutive ranges from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdPool {
    pub base: u32,
    pub slots: u32,
}

impl Default for IdPool {
    fn default() -> IdPool {
        IdPool { base: 1 << 30, slots: 16_383 }
    }
}

impl IdPool {
    /// The first host id past the pool.
    pub fn end(self) -> u64 {
        u64::from(self.base) + u64::from(self.slots) * u64::from(RANGE_SIZE)
    }

    /// Refuses a pool that is empty, leaves the 32-bit id space, starts inside the host's own
    /// ids (below 65536), or overlaps an entry of `/etc/subuid` or `/etc/subgid` (missing files
    /// hold no entries).
    pub fn check_host(self) -> Result<(), SandboxError> {
        self.check_shape().map_err(|m| setup("check the instance id pool", m))?;
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(setup("check the instance id pool", format!("cannot read {file}: {err}"))),
            };
            self.check_against(file, &text).map_err(|m| setup("check the instance id pool", m))?;
        }
        Ok(())
    }

    fn check_shape(self) -> Result<(), String> {
        if self.slots == 0 {
            return Err("sandbox.id_slots is 0: instances need at least one id range".into());
        }
        if self.base < RANGE_SIZE {
            return Err(format!("sandbox.id_base {} lies among the host's own ids (below {RANGE_SIZE})", self.base));
        }
        // The id 4294967295 means "no id" to the kernel and may not be mapped.
        if self.end() > u64::from(u32::MAX) {
            return Err(format!(
                "sandbox.id_base {} with {} id ranges of {RANGE_SIZE} ends past the largest host id {}",
                self.base,
                self.slots,
                u32::MAX - 1
            ));
        }
        Ok(())
    }

    /// Checks the pool against one subordinate id file's text (`name:start:count` lines).
    pub fn check_against(self, file: &str, text: &str) -> Result<(), String> {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split(':');
            let (Some(_owner), Some(start), Some(count)) = (fields.next(), fields.next(), fields.next()) else { continue };
            let (Ok(start), Ok(count)) = (start.trim().parse::<u64>(), count.trim().parse::<u64>()) else { continue };
            if start < self.end() && u64::from(self.base) < start + count {
                return Err(format!(
                    "the instance id pool {}-{} (sandbox.id_base, sandbox.id_slots) overlaps {file} line {} `{line}`: whoever owns that \
                     range could act as an instance; move sandbox.id_base past {} or remove the entry",
                    self.base,
                    self.end() - 1,
                    number + 1,
                    start + count - 1,
                ));
            }
        }
        Ok(())
    }
}

/// The ranges in use.
#[derive(Debug)]
pub(crate) struct Slots {
    pool: IdPool,
    used: Mutex<BTreeSet<u32>>,
}

impl Slots {
    pub(crate) fn new(pool: IdPool) -> Arc<Slots> {
        Arc::new(Slots { pool, used: Mutex::new(BTreeSet::new()) })
    }

    /// The lowest free range, held until the lease is dropped.
    pub(crate) fn lease(self: &Arc<Slots>) -> Result<IdLease, SandboxError> {
        let mut used = self.used.lock().expect("id slots lock");
        let slot = (0..self.pool.slots).find(|slot| !used.contains(slot)).ok_or_else(|| {
            setup("give the instance host ids", format!("all {} id ranges are in use; raise sandbox.id_slots", self.pool.slots))
        })?;
        used.insert(slot);
        Ok(IdLease { range: IdRange { base: self.pool.base + slot * RANGE_SIZE }, slot, slots: self.clone() })
    }
}

/// One instance's range, reserved for it until dropped (when the instance is destroyed).
#[derive(Debug)]
pub struct IdLease {
    range: IdRange,
    slot: u32,
    slots: Arc<Slots>,
}

impl IdLease {
    pub fn range(&self) -> IdRange {
        self.range
    }
}

impl Drop for IdLease {
    fn drop(&mut self) {
        self.slots.used.lock().expect("id slots lock").remove(&self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_overlapping_a_subordinate_range_is_refused_naming_the_entry() {
        let pool = IdPool { base: 100_000, slots: 4 };
        let text = "# comment\nalice:400000:65536\nbob:165536:65536\n";
        let error = pool.check_against("/etc/subuid", text).expect_err("overlaps bob's range");
        assert!(error.contains("/etc/subuid line 3 `bob:165536:65536`"), "{error}");
        assert!(pool.check_against("/etc/subuid", "alice:400000:65536\n").is_ok());
        // Debian's default first range and the default pool are apart.
        assert!(IdPool::default().check_against("/etc/subuid", "user:100000:65536\n").is_ok());
        assert!(IdPool::default().check_shape().is_ok());
        assert!(IdPool { base: u32::MAX - 65_535, slots: 1 }.check_shape().is_err());
        assert!(IdPool { base: 0, slots: 1 }.check_shape().is_err());
    }

    #[test]
    fn leases_are_distinct_and_come_back() {
        let slots = Slots::new(IdPool { base: 1 << 31, slots: 2 });
        let a = slots.lease().expect("first");
        let b = slots.lease().expect("second");
        assert_ne!(a.range(), b.range());
        assert!(slots.lease().is_err(), "a third range is not there");
        let freed = a.range();
        drop(a);
        assert_eq!(slots.lease().expect("again").range(), freed);
    }
}
