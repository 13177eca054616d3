//! Instance credentials: each instance gets a short-lived secret as a file inside it; the
//! credential is rotated before it expires, and a call on the endpoint is authenticated by it
//! and by the private address it comes from.

use std::sync::Arc;

use futures::future::BoxFuture;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::core::error::ActionError;
use crate::core::platform::Platform;
use crate::core::store::now_millis;
use crate::identity::{InstanceCaller, InstanceLookup};

use super::datasets;
use super::repo;
use super::state::Instances;

pub(super) fn credential_lifetime_ms(plane: &Platform) -> i64 {
    plane.spec.credential_lifetime_seconds as i64 * 1000
}

pub(super) fn new_credential() -> String {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    format!("dsi_{}", hex::encode(secret))
}

/// Starts the dataset worker and the credential rotation: every running instance's credential
/// is rotated once two thirds of its lifetime have passed; the new one is written into the
/// instance (atomically, for the workspace user only) before it becomes valid; the old one
/// stays valid until its own expiry.
pub(crate) fn start_background_tasks(instances: &Arc<Instances>) {
    let _ = instances.datasets.set(datasets::start_worker(instances.pipeline.clone()));
    let instances = instances.clone();
    tokio::spawn(async move {
        let plane = &instances.pipeline.platform;
        let lifetime = credential_lifetime_ms(plane);
        let tick = std::time::Duration::from_millis((lifetime / 6).clamp(250, 60_000) as u64);
        loop {
            tokio::time::sleep(tick).await;
            if let Err(err) = rotate_due(&instances, lifetime).await {
                tracing::error!(error = %err, "instance credential rotation");
            }
        }
    });
}

async fn rotate_due(instances: &Instances, lifetime: i64) -> Result<(), ActionError> {
    let plane = &*instances.pipeline.platform;
    let due = repo::due_for_rotation(&plane.store, &plane.node.name, now_millis() + lifetime / 3).await?;
    for repo::DueForRotation { instance_id: id, init_pid } in due {
        let Some(pid) = init_pid else { continue };
        let credential = new_credential();
        let written = tokio::task::spawn_blocking({
            let credential = credential.clone();
            move || sandbox::place_file(pid as i32, "credential", credential.as_bytes())
        })
        .await
        .map_err(ActionError::internal)?;
        if let Err(err) = written {
            tracing::warn!(instance = id, error = %err, "cannot place a rotated credential; the current one stays until it expires");
            continue;
        }
        repo::rotate_credential(plane, &id, hex::encode(Sha256::digest(credential.as_bytes())), now_millis() + lifetime).await?;
        if let Some(live) = instances.live.lock().expect("instances lock").get_mut(&id) {
            if let Some(mount) = &live.datasets {
                mount.rotated(&credential);
            }
            live.credential = credential;
        }
    }
    Ok(())
}

impl InstanceLookup for Instances {
    fn instance_by_credential<'a>(&'a self, token: &'a str, source_ip: &'a str) -> BoxFuture<'a, Result<InstanceCaller, ActionError>> {
        Box::pin(authenticate(&self.pipeline.platform, token, source_ip))
    }
}

/// Authenticates a call on the endpoint: the credential must be the current one of the
/// running instance whose private address the call comes from.
async fn authenticate(plane: &Platform, token: &str, source_ip: &str) -> Result<InstanceCaller, ActionError> {
    let row = repo::serving_at(&plane.store, &plane.node.name, source_ip)
        .await?
        .ok_or_else(|| ActionError::unauthenticated("the endpoint serves only running instances, on their own link"))?;
    let presented = hex::encode(Sha256::digest(token.as_bytes()));
    let now = now_millis();
    let mut matched = false;
    for (hash, expires) in &row.credentials {
        if hash.as_deref() == Some(presented.as_str()) {
            if expires.is_none_or(|e| e <= now) {
                return Err(ActionError::unauthenticated(
                    "the instance credential has expired; read the rotated one from /run/datasandbox/credential",
                ));
            }
            matched = true;
        }
    }
    if !matched {
        return Err(ActionError::unauthenticated("the instance credential is not valid"));
    }
    Ok(InstanceCaller {
        instance_id: row.instance_id,
        user_id: row.user_id,
        access_mode: row.access_mode,
        issuer: row.issuer,
        correlation_id: row.correlation_id,
    })
}

impl Instances {
    pub(crate) fn start_background_tasks(self: &Arc<Self>) {
        start_background_tasks(self)
    }
}
