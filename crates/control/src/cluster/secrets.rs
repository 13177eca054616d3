//! The secrets every node of a cluster shares, in the store's `cluster_secrets`, each wrapped
//! with the master key; and the check that a node's master key is the one the others use.

use super::repo;
use crate::core::keyring::KeyRing;
use crate::core::store::Store;

/// The name of the value that proves a master key is the cluster's.
const MASTER_CHECK: &str = "master-key-check";
const MASTER_CHECK_PLAINTEXT: &[u8] = b"datasandbox cluster master key";

/// Refuses a master key other than the one the nodes already sharing `store` use: every
/// secret in the store is wrapped with it, so a node with another one could open none.
pub(crate) async fn check_master_key(store: &Store, keys: &KeyRing, data_dir: &std::path::Path) -> Result<(), String> {
    let wrapped = keys.wrap(MASTER_CHECK_PLAINTEXT);
    let stored =
        repo::secret_or_insert(store, MASTER_CHECK, &wrapped).await.map_err(|e| format!("cannot read the cluster's secrets: {e}"))?;
    match keys.unwrap(&stored) {
        Ok(plain) if plain == MASTER_CHECK_PLAINTEXT => Ok(()),
        _ => Err(format!(
            "this node's master key (`{}`) is not the one the other nodes on this metadata store use, so it could open none of their secrets; copy `master.key` from another node's data directory (keep it mode 0600) and start again",
            data_dir.join("master.key").display()
        )),
    }
}

/// A secret every node must share (the key that signs streaming URLs): the stored one, or
/// `local` (what this node had before it shared a store) stored for every node after it.
pub(crate) async fn shared_secret(store: &Store, keys: &KeyRing, name: &str, local: [u8; 32]) -> Result<[u8; 32], String> {
    let stored =
        repo::secret_or_insert(store, name, &keys.wrap(&local)).await.map_err(|e| format!("cannot read the cluster's secrets: {e}"))?;
    let secret = keys.unwrap(&stored).map_err(|e| e.message)?;
    secret.try_into().map_err(|_| format!("the cluster secret `{name}` is not 32 bytes"))
}
