//! Ending instances: one at a time with a grace period, all at a clean shutdown, and — after a
//! crash of the control plane — every instance its rows still call alive.

use crate::core::error::{ActionError, ErrorCode};

use super::repo;
use super::state::{Instances, Live, STOP_GRACE};
use super::{dataset_mount, datasets};

/// Stops an instance — its programs get a grace period to finish, its credential stays valid
/// meanwhile so that its last changes reach storage — then removes everything it had.
pub(crate) async fn stop_instance(instances: &Instances, id: &str) -> Result<(), ActionError> {
    let plane = &*instances.pipeline.platform;
    let live = instances.live.lock().expect("instances lock").remove(id);
    let Some(live) = live else {
        return Err(ActionError::not_found(ErrorCode::ResourceNotFoundException, format!("instance `{id}` is not running")));
    };
    // Stopped below once the instance is; at once if this returns early.
    let _mount = dataset_mount::StopOnDrop(live.datasets.clone());
    repo::mark_stopping(plane, id).await?;
    let sandbox = instances.sandbox().await?;
    let destroyed = tokio::task::spawn_blocking(move || sandbox.stop(live.instance, STOP_GRACE)).await.map_err(ActionError::internal)?;
    if let Some(listener) = live.listener {
        listener.abort();
    }
    if let Some(mount) = live.datasets {
        mount.stop();
    }
    datasets::remove(plane, id);
    repo::mark_terminated(plane, id).await?;
    destroyed.map_err(|e| ActionError::internal(format_args!("teardown of {id} was incomplete: {e}")))
}

/// Ends every running instance (at a clean shutdown). Returns their ids.
pub(crate) async fn terminate_all(instances: &Instances) -> Vec<String> {
    let plane = &*instances.pipeline.platform;
    let live: Vec<(String, Live)> = instances.live.lock().expect("instances lock").drain().collect();
    let Some(sandbox) = instances.sandbox.get().cloned() else { return Vec::new() };
    // All stop at once, each with its grace period, their endpoints still serving.
    let mut stopping = Vec::new();
    for (id, live) in live {
        let _ = repo::mark_stopping(plane, &id).await;
        let sandbox = sandbox.clone();
        let parts = (live.listener, live.datasets);
        stopping.push((id, parts, tokio::task::spawn_blocking(move || sandbox.stop(live.instance, STOP_GRACE))));
    }
    let mut ended = Vec::new();
    for (id, (listener, mount), stopped) in stopping {
        let result = stopped.await;
        if let Some(listener) = listener {
            listener.abort();
        }
        if let Some(mount) = mount {
            mount.stop();
        }
        datasets::remove(plane, &id);
        if !matches!(result, Ok(Ok(()))) {
            tracing::warn!(instance = id, "teardown at shutdown was incomplete; the next start reconciles it");
            continue;
        }
        let _ = repo::mark_terminated(plane, &id).await;
        ended.push(id);
    }
    ended
}

/// After a crash of the control plane, instances recorded as not yet ended are destroyed:
/// their processes, links, firewall elements and cgroups. Returns their ids.
pub(crate) async fn reconcile(instances: &Instances) -> Result<Vec<String>, ActionError> {
    let plane = &*instances.pipeline.platform;
    let unended = repo::unended(plane).await?;
    let mut reaped = Vec::new();
    for repo::Unended { instance_id: id, link, init_pid } in unended {
        let id_for_teardown = id.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(pid) = init_pid {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if cmdline.windows(12).any(|w| w == b"sandbox-init") {
                    let _ = nix_kill(pid as i32);
                }
            }
            let cgroup = sandbox::cgroups::Cgroup::existing(&id_for_teardown);
            cgroup.kill_all();
            let _ = sandbox::network::revoke(&link);
            let _ = sandbox::network::detach(&link);
            let _ = cgroup.destroy();
        })
        .await
        .map_err(ActionError::internal)?;
        datasets::remove(plane, &id);
        repo::mark_terminated(plane, &id).await?;
        reaped.push(id);
    }
    Ok(reaped)
}

fn nix_kill(pid: i32) -> std::io::Result<()> {
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().map(|_| ())
}

impl Instances {
    pub(crate) async fn terminate_all(&self) -> Vec<String> {
        terminate_all(self).await
    }

    pub(crate) async fn reconcile(&self) -> Result<Vec<String>, ActionError> {
        reconcile(self).await
    }
}
