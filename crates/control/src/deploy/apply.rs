//! How each kind of resource is created, updated, replaced and deleted: always as actions
//! through the pipeline, as the person who deployed (a `Delegated` credential carrying the
//! caller, and with it the deploy's correlation id), so each step is authorized and audited
//! like any call. A deploy is itself an action, so its steps run on a task of their own
//! (`start_step_runner`) rather than inside the deploy's future. A fleet whose image the spec
//! declares but the host lacks gets it built here first.

use std::time::{Duration, Instant};

use bytes::Bytes;
use model::spec::{NotificationSpec, Spec};
use serde_json::{Value, json};

use super::template::{Kind, Resource};
use crate::core::caller::{Caller, Credentials, Delegated};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::{Pipeline, Request};

/// What became of a resource that was to be deleted.
pub(crate) enum Deleted {
    Removed,
    /// Kept on purpose, with the reason shown to the operator.
    Retained(String),
}

/// How long a fleet may take to stop (its sessions end, its instances stop).
const FLEET_STOP: Duration = Duration::from_secs(60);

/// One action of a deploy, and where its answer goes.
pub(crate) struct Step {
    request: Request,
    done: tokio::sync::oneshot::Sender<crate::core::pipeline::Response>,
}

/// Starts the task that runs deploy steps through the pipeline.
pub(crate) fn start_step_runner(control: Pipeline) -> tokio::sync::mpsc::UnboundedSender<Step> {
    let (steps, mut queue) = tokio::sync::mpsc::unbounded_channel::<Step>();
    tokio::spawn(async move {
        while let Some(step) = queue.recv().await {
            let control = control.clone();
            tokio::spawn(async move {
                let response = control.call(step.request).await;
                let _ = step.done.send(response);
            });
        }
    });
    steps
}

pub(crate) struct Applier<'a> {
    pub control: &'a Pipeline,
    pub steps: &'a tokio::sync::mpsc::UnboundedSender<Step>,
    pub caller: Caller,
    pub source_ip: String,
    /// The spec being deployed: it says how to build an image a fleet needs.
    pub desired: &'a Spec,
}

impl Applier<'_> {
    async fn call(&self, action: &str, input: Value) -> Result<Value, ActionError> {
        let request = Request {
            credentials: Credentials::Delegated(Delegated::of(self.caller.clone())),
            source_ip: self.source_ip.clone(),
            user_agent: "datasandbox/deploy".into(),
            action: action.to_owned(),
            body: Ok(Bytes::from(input.to_string())),
        };
        // A deploy is itself an action, so its steps run on a task of their own (see
        // `start_step_runner`) rather than inside this call's future.
        let (done, answer) = tokio::sync::oneshot::channel();
        self.steps.send(Step { request, done }).map_err(|_| ActionError::internal("the deploy step runner stopped"))?;
        answer.await.map_err(|_| ActionError::internal("a deploy step was dropped"))?.result
    }

    /// Creates `resource`; one that already exists with the same identity (a host set up before
    /// its first deploy) is taken over and brought to the spec.
    pub async fn create(&self, r: &Resource) -> Result<(), ActionError> {
        let p = &r.properties;
        match r.kind {
            Kind::Network | Kind::Dataset | Kind::Policy => Ok(()),
            Kind::Bucket => {
                let name = bucket_name(p)?;
                let home = p["HomeFolders"].as_bool().unwrap_or(false);
                match crate::storage::find_bucket(&self.control.platform, &name).await? {
                    Some(existing) if existing.home_folders != home => Err(ActionError::conflict(
                        ErrorCode::BucketAlreadyExists,
                        format!("bucket `{name}` exists with HomeFolders = {}; delete it or keep its kind", existing.home_folders),
                    )),
                    Some(_) => Ok(()),
                    None => self.call("storage:CreateBucket", json!({ "Bucket": name, "HomeFolders": home })).await.map(drop),
                }
            }
            Kind::Parameter | Kind::BucketNotifications | Kind::Key | Kind::FleetRunning | Kind::SamlProvider => self.update(None, r).await,
            Kind::Fleet => {
                if let Ok(existing) = self.describe_fleet(r.name()).await {
                    if existing["FleetType"] != p["FleetType"] {
                        return Err(ActionError::conflict(
                            ErrorCode::ResourceAlreadyExistsException,
                            format!("fleet `{}` exists as {}; its type cannot change in place", r.name(), existing["FleetType"]),
                        ));
                    }
                    return self.update(None, r).await;
                }
                self.ensure_image(p["ImageName"].as_str().unwrap_or_default()).await?;
                let mut input = fleet_input(p);
                input["FleetType"] = p["FleetType"].clone();
                self.call("streaming:CreateFleet", input).await.map(drop)
            }
            Kind::Stack => {
                let described = self.call("streaming:DescribeStacks", json!({ "Names": [r.name()] })).await;
                if described.is_ok() {
                    return self.update(None, r).await;
                }
                self.call("streaming:CreateStack", stack_input(p, false)).await.map(drop)
            }
            Kind::FleetAssociation => {
                self.call("streaming:AssociateFleet", json!({ "FleetName": p["FleetName"], "StackName": p["StackName"] })).await.map(drop)
            }
            Kind::NotebookInstance => {
                let name = r.name();
                if self.call("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": name })).await.is_ok() {
                    return self.update(None, r).await;
                }
                let input = json!({
                    "NotebookInstanceName": name,
                    "InstanceType": p["InstanceType"],
                    "VolumeSizeInGB": p["VolumeSizeInGB"],
                    "KmsKeyId": p["KmsKeyId"],
                    "Owner": p["Owner"],
                    "RootAccess": p["RootAccess"],
                    "DirectInternetAccess": p["DirectInternetAccess"],
                });
                self.call("notebooks:CreateNotebookInstance", input).await.map(drop)
            }
        }
    }

    /// Brings a resource from `old` (what was deployed; `None` when taking over one that
    /// exists) to `new`, in place.
    pub async fn update(&self, old: Option<&Resource>, new: &Resource) -> Result<(), ActionError> {
        let p = &new.properties;
        match new.kind {
            Kind::Network | Kind::Dataset | Kind::Policy | Kind::Bucket => Ok(()),
            Kind::Parameter => self
                .call("parameters:PutParameter", json!({ "Name": p["Name"], "Type": p["Type"], "Value": p["Value"], "Overwrite": true }))
                .await
                .map(drop),
            Kind::BucketNotifications => {
                let wanted = notification_specs(p)?;
                let ours: Vec<String> = old.map(|o| notification_ids(&o.properties)).unwrap_or_default();
                self.put_notifications(p, &wanted, &ours).await
            }
            Kind::Fleet => {
                if old.is_none_or(|o| o.properties["ImageName"] != p["ImageName"]) {
                    self.ensure_image(p["ImageName"].as_str().unwrap_or_default()).await?;
                }
                self.call("streaming:UpdateFleet", fleet_input(p)).await.map(drop)
            }
            Kind::Stack => self.call("streaming:UpdateStack", stack_input(p, true)).await.map(drop),
            Kind::FleetAssociation => {
                self.call("streaming:AssociateFleet", json!({ "FleetName": p["FleetName"], "StackName": p["StackName"] })).await.map(drop)
            }
            Kind::FleetRunning => self.call("streaming:StartFleet", json!({ "Name": p["FleetName"] })).await.map(drop),
            Kind::Key => {
                let alias = p["AliasName"].as_str().unwrap_or_default();
                let key_id = match self.call("keys:DescribeKey", json!({ "KeyId": alias })).await {
                    Ok(found) => found["KeyMetadata"]["KeyId"].as_str().unwrap_or_default().to_owned(),
                    Err(err) if err.status == 404 => {
                        let key = self.call("keys:CreateKey", json!({ "Description": p["Description"] })).await?;
                        let id = key["KeyMetadata"]["KeyId"].as_str().unwrap_or_default().to_owned();
                        self.call("keys:CreateAlias", json!({ "AliasName": alias, "TargetKeyId": id })).await?;
                        id
                    }
                    Err(err) => return Err(err),
                };
                let rotation =
                    if p["EnableKeyRotation"].as_bool().unwrap_or(true) { "keys:EnableKeyRotation" } else { "keys:DisableKeyRotation" };
                self.call(rotation, json!({ "KeyId": key_id })).await.map(drop)
            }
            Kind::NotebookInstance => {
                let name = new.name();
                // SageMaker changes only stopped notebooks: stop, change, start again if it ran.
                let described = self.call("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": name })).await?;
                let same = described["InstanceType"] == p["InstanceType"] && described["VolumeSizeInGB"] == p["VolumeSizeInGB"];
                if same {
                    return Ok(());
                }
                let was_running = described["NotebookInstanceStatus"] != "Stopped" && described["NotebookInstanceStatus"] != "Failed";
                self.stop_notebook(name).await?;
                let input =
                    json!({ "NotebookInstanceName": name, "InstanceType": p["InstanceType"], "VolumeSizeInGB": p["VolumeSizeInGB"] });
                self.call("notebooks:UpdateNotebookInstance", input).await?;
                if was_running {
                    self.call("notebooks:StartNotebookInstance", json!({ "NotebookInstanceName": name })).await?;
                }
                Ok(())
            }
            Kind::SamlProvider => {
                let source = p["MetadataSource"].as_str().unwrap_or_default();
                let document = super::template::load_idp_metadata(source).await.map_err(ActionError::validation)?;
                let dir = self.control.platform.data_dir.join("identity-providers");
                let name = new.name().to_owned();
                tokio::task::spawn_blocking(move || write_atomically(&dir, &format!("{name}.xml"), document.as_bytes()))
                    .await
                    .map_err(ActionError::internal)?
                    .map_err(ActionError::internal)
            }
        }
    }

    /// Replaces a resource whose identity changes: the old one goes, the new one comes, and
    /// what pointed at the old one points at the new one.
    pub async fn replace(&self, old: &Resource, new: &Resource) -> Result<(), ActionError> {
        match new.kind {
            Kind::Fleet => {
                let name = new.name();
                let stacks = self.stacks_of_fleet(name).await?;
                let state = self.describe_fleet(name).await?["State"].as_str().unwrap_or_default().to_owned();
                self.ensure_image(new.properties["ImageName"].as_str().unwrap_or_default()).await?;
                self.remove_fleet(name, &stacks).await?;
                let mut input = fleet_input(&new.properties);
                input["FleetType"] = new.properties["FleetType"].clone();
                self.call("streaming:CreateFleet", input).await?;
                for stack in &stacks {
                    self.call("streaming:AssociateFleet", json!({ "FleetName": name, "StackName": stack })).await?;
                }
                if state == "RUNNING" || state == "STARTING" {
                    self.call("streaming:StartFleet", json!({ "Name": name })).await?;
                }
                Ok(())
            }
            Kind::FleetAssociation => {
                let stack = &old.properties["StackName"];
                self.call("streaming:DisassociateFleet", json!({ "FleetName": old.properties["FleetName"], "StackName": stack })).await?;
                self.create(new).await
            }
            _ => {
                if let Deleted::Retained(reason) = self.delete(old).await? {
                    return Err(ActionError::conflict(
                        ErrorCode::ReplacementBlocked,
                        format!("`{}` must be replaced but {reason}", old.logical_id),
                    ));
                }
                self.create(new).await
            }
        }
    }

    /// Deletes a resource, or keeps it where deleting would lose data or access.
    pub async fn delete(&self, r: &Resource) -> Result<Deleted, ActionError> {
        let p = &r.properties;
        match r.kind {
            Kind::Network | Kind::Dataset => Ok(Deleted::Removed),
            Kind::Policy => Ok(Deleted::Retained("policies stay in force until the next deploy, so the operator keeps access".into())),
            Kind::Key => Ok(Deleted::Retained("keys are retained: what they encrypted must stay readable".into())),
            Kind::Bucket => {
                let listed = self.call("storage:ListObjectsV2", json!({ "Bucket": p["Bucket"], "MaxKeys": 1 })).await;
                match listed {
                    Err(err) if err.status == 404 => Ok(Deleted::Removed),
                    Err(err) => Err(err),
                    Ok(page) if page["KeyCount"].as_i64().unwrap_or(0) > 0 => {
                        Ok(Deleted::Retained("it holds objects; a bucket with data is retained (empty it to remove it)".into()))
                    }
                    Ok(_) => self.call("storage:DeleteBucket", json!({ "Bucket": p["Bucket"] })).await.map(|_| Deleted::Removed),
                }
            }
            Kind::Parameter => match self.call("parameters:DeleteParameter", json!({ "Name": p["Name"] })).await {
                Err(err) if err.status != 404 => Err(err),
                _ => Ok(Deleted::Removed),
            },
            Kind::BucketNotifications => {
                let ours = notification_ids(p);
                match self.put_notifications(p, &[], &ours).await {
                    Err(err) if err.status != 404 => Err(err),
                    _ => Ok(Deleted::Removed),
                }
            }
            Kind::Fleet => {
                let name = r.name();
                if self.describe_fleet(name).await.is_err() {
                    return Ok(Deleted::Removed);
                }
                let stacks = self.stacks_of_fleet(name).await?;
                self.remove_fleet(name, &stacks).await.map(|_| Deleted::Removed)
            }
            Kind::Stack => match self.call("streaming:DeleteStack", json!({ "Name": r.name() })).await {
                Err(err) if err.status != 404 => Err(err),
                _ => Ok(Deleted::Removed),
            },
            Kind::FleetAssociation => {
                let input = json!({ "FleetName": p["FleetName"], "StackName": p["StackName"] });
                match self.call("streaming:DisassociateFleet", input).await {
                    Err(err) if err.status != 404 => Err(err),
                    _ => Ok(Deleted::Removed),
                }
            }
            Kind::FleetRunning => match self.call("streaming:StopFleet", json!({ "Name": p["FleetName"] })).await {
                Err(err) if err.status != 404 => Err(err),
                _ => Ok(Deleted::Removed),
            },
            Kind::NotebookInstance => {
                let name = r.name();
                if self.call("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": name })).await.is_err() {
                    return Ok(Deleted::Removed);
                }
                self.stop_notebook(name).await?;
                self.call("notebooks:DeleteNotebookInstance", json!({ "NotebookInstanceName": name })).await.map(|_| Deleted::Removed)
            }
            Kind::SamlProvider => {
                let path = self.control.platform.data_dir.join("identity-providers").join(format!("{}.xml", r.name()));
                match std::fs::remove_file(&path) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        Err(ActionError::internal(format_args!("removing `{}`: {err}", path.display())))
                    }
                    _ => Ok(Deleted::Removed),
                }
            }
        }
    }

    /// A fleet's image must be built: one the spec declares is built here from its recipe.
    async fn ensure_image(&self, name: &str) -> Result<(), ActionError> {
        crate::instances::ensure_image(&self.control.platform, self.desired, name).await
    }

    async fn describe_fleet(&self, name: &str) -> Result<Value, ActionError> {
        let found = self.call("streaming:DescribeFleets", json!({ "Names": [name] })).await?;
        Ok(found["Fleets"][0].clone())
    }

    async fn stacks_of_fleet(&self, fleet: &str) -> Result<Vec<String>, ActionError> {
        let stacks = self.call("streaming:DescribeStacks", json!({})).await?;
        Ok(stacks["Stacks"]
            .as_array()
            .map(|all| all.iter().filter(|s| s["FleetName"] == fleet).filter_map(|s| s["Name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    /// Stops a fleet (its sessions end), waits until it is stopped, detaches it from its stacks
    /// and deletes it.
    async fn remove_fleet(&self, name: &str, stacks: &[String]) -> Result<(), ActionError> {
        self.call("streaming:StopFleet", json!({ "Name": name })).await?;
        let deadline = Instant::now() + FLEET_STOP;
        loop {
            if self.describe_fleet(name).await?["State"] == "STOPPED" {
                break;
            }
            if Instant::now() > deadline {
                return Err(ActionError::new(
                    503,
                    ErrorCode::FleetDidNotStop,
                    format!("fleet `{name}` did not stop within {} s; see its sessions, then deploy again", FLEET_STOP.as_secs()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for stack in stacks {
            self.call("streaming:DisassociateFleet", json!({ "FleetName": name, "StackName": stack })).await?;
        }
        self.call("streaming:DeleteFleet", json!({ "Name": name })).await.map(drop)
    }

    async fn stop_notebook(&self, name: &str) -> Result<(), ActionError> {
        let describe = json!({ "NotebookInstanceName": name });
        let state = self.call("notebooks:DescribeNotebookInstance", describe.clone()).await?["NotebookInstanceStatus"].clone();
        if state != "Stopped" && state != "Failed" {
            self.call("notebooks:StopNotebookInstance", describe.clone()).await?;
        }
        let deadline = Instant::now() + FLEET_STOP;
        while !matches!(
            self.call("notebooks:DescribeNotebookInstance", describe.clone()).await?["NotebookInstanceStatus"].as_str(),
            Some("Stopped" | "Failed")
        ) {
            if Instant::now() > deadline {
                return Err(ActionError::new(
                    503,
                    ErrorCode::NotebookDidNotStop,
                    format!("notebook instance `{name}` did not stop; deploy again"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Sets the bucket's notifications: drops `ours` (what the last deploy set), merges
    /// `wanted` by id and keeps every notification someone else configured.
    async fn put_notifications(&self, p: &Value, wanted: &[NotificationSpec], ours: &[String]) -> Result<(), ActionError> {
        let bucket = bucket_name(p)?;
        let Some(existing) = crate::storage::find_bucket(&self.control.platform, &bucket).await? else {
            return Err(ActionError::not_found(ErrorCode::NoSuchBucket, format!("bucket `{bucket}` does not exist")));
        };
        let mut current = existing.notifications.clone();
        current.lambda_function_configurations.retain(|c| !ours.contains(&c.id) || wanted.iter().any(|w| w.id == c.id));
        let merged = current.merged_with(wanted);
        if merged == existing.notifications {
            return Ok(());
        }
        self.call("storage:PutBucketNotificationConfiguration", json!({ "Bucket": bucket, "NotificationConfiguration": merged }))
            .await
            .map(drop)
    }
}

fn bucket_name(p: &Value) -> Result<model::BucketName, ActionError> {
    model::BucketName::new(p["Bucket"].as_str().unwrap_or_default().to_owned()).map_err(|e| ActionError::validation(e.to_string()))
}

fn notification_ids(p: &Value) -> Vec<String> {
    p["Notifications"].as_array().map(|all| all.iter().filter_map(|n| n["Id"].as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn notification_specs(p: &Value) -> Result<Vec<NotificationSpec>, ActionError> {
    let strings = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok(p["Notifications"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|n| NotificationSpec {
                    id: strings(&n["Id"]),
                    events: n["Events"].as_array().map(|e| e.iter().map(strings).collect()).unwrap_or_default(),
                    prefix: strings(&n["Prefix"]),
                    suffix: strings(&n["Suffix"]),
                    function: strings(&n["Function"]),
                })
                .collect()
        })
        .unwrap_or_default())
}

/// UpdateFleet's members (CreateFleet adds the type).
fn fleet_input(p: &Value) -> Value {
    json!({
        "Name": p["Name"],
        "ImageName": p["ImageName"],
        "InstanceType": p["InstanceType"],
        "ComputeCapacity": { "DesiredInstances": p["DesiredInstances"] },
        "MaxUserDurationInSeconds": p["MaxUserDurationInSeconds"],
        "DisconnectTimeoutInSeconds": p["DisconnectTimeoutInSeconds"],
        "IdleDisconnectTimeoutInSeconds": p["IdleDisconnectTimeoutInSeconds"],
        "StreamView": p["StreamView"],
    })
}

fn stack_input(p: &Value, update: bool) -> Value {
    let mut input = json!({
        "Name": p["Name"], "UserSettings": p["UserSettings"], "DefaultApplication": p["DefaultApplication"], "StreamView": p["StreamView"],
        "Watermark": p["Watermark"], "SessionRecording": p["SessionRecording"],
    });
    let mut deleting = Vec::new();
    match p["HomeFoldersBucket"].as_str() {
        Some(bucket) => input["StorageConnectors"] = json!([{ "ConnectorType": "HOMEFOLDERS", "ResourceIdentifier": bucket }]),
        None => deleting.push("STORAGE_CONNECTORS"),
    }
    match p["RedirectURL"].as_str() {
        Some(url) => input["RedirectURL"] = json!(url),
        None => deleting.push("REDIRECT_URL"),
    }
    if update && !deleting.is_empty() {
        input["AttributesToDelete"] = json!(deleting);
    }
    input
}

fn write_atomically(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, dir.join(name))
}
