//! The spec as resources, grouped into the seed's nested stacks: what `diff` compares with the
//! last deployment and `deploy` applies, in dependency order.
//!
//! Each resource has a logical id (`Kind:name`), the stack it belongs to and its properties in
//! AWS's member names. The properties are the whole desired state: two deployments of the same
//! spec produce equal properties, so a second deploy changes nothing.

use std::path::Path;

use model::spec::{BucketSpec, FleetSpec, FleetType, Problem, Spec, StackSpec, StreamView};
use serde_json::{Value, json};
use sha2::Digest as _;

/// The stacks, each after the ones it depends on (the seed's nested stacks).
pub(crate) const STACKS: &[(&str, &[&str])] = &[
    ("network", &[]),
    ("storage", &["network"]),
    ("service-roles", &[]),
    ("streaming", &["storage", "service-roles"]),
    ("start-fleet", &["streaming"]),
    ("notebook", &["storage", "service-roles"]),
    ("saml", &["streaming"]),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Network,
    Bucket,
    Dataset,
    Parameter,
    Policy,
    Fleet,
    Stack,
    FleetAssociation,
    BucketNotifications,
    FleetRunning,
    Key,
    NotebookInstance,
    SamlProvider,
}

const KINDS: &[(Kind, &str)] = &[
    (Kind::Network, "Network"),
    (Kind::Bucket, "Bucket"),
    (Kind::Dataset, "Dataset"),
    (Kind::Parameter, "Parameter"),
    (Kind::Policy, "Policy"),
    (Kind::Fleet, "Fleet"),
    (Kind::Stack, "Stack"),
    (Kind::FleetAssociation, "FleetAssociation"),
    (Kind::BucketNotifications, "BucketNotifications"),
    (Kind::FleetRunning, "FleetRunning"),
    (Kind::Key, "Key"),
    (Kind::NotebookInstance, "NotebookInstance"),
    (Kind::SamlProvider, "SamlProvider"),
];

impl Kind {
    pub fn name(self) -> &'static str {
        KINDS.iter().find(|(k, _)| *k == self).map_or("Unknown", |(_, n)| n)
    }

    pub fn parse(text: &str) -> Option<Kind> {
        KINDS.iter().find(|(_, n)| *n == text).map(|(k, _)| *k)
    }

    /// CloudFormation-style type names for stack events.
    pub fn type_name(self) -> String {
        format!("DataSandbox::{}", self.name())
    }

    /// Properties that cannot change in place: changing one replaces the resource.
    pub fn immutable(self) -> &'static [&'static str] {
        match self {
            // As in AWS: a fleet's type is fixed at creation.
            Kind::Fleet => &["FleetType"],
            Kind::Bucket => &["HomeFolders"],
            // The volume is encrypted under its key and belongs to its owner.
            Kind::NotebookInstance => &["KmsKeyId", "Owner"],
            Kind::FleetAssociation => &["FleetName"],
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resource {
    pub stack: &'static str,
    pub logical_id: String,
    pub kind: Kind,
    pub properties: Value,
}

impl Resource {
    fn new(stack: &'static str, kind: Kind, name: &str, properties: Value) -> Resource {
        Resource { stack, logical_id: format!("{}:{name}", kind.name()), kind, properties }
    }

    /// The physical name: what the resource's actions call it.
    pub fn name(&self) -> &str {
        self.logical_id.split_once(':').map_or("", |(_, n)| n)
    }

    pub fn stack_index(&self) -> usize {
        STACKS.iter().position(|(s, _)| *s == self.stack).unwrap_or(STACKS.len())
    }
}

/// The home-folder bucket's notification for `session.json`: part of the environment, added
/// to every home-folder bucket whatever the spec says, so no update can lose it.
pub(crate) fn session_validator_notification() -> Value {
    json!({
        "Id": "session-validator",
        "Events": ["ObjectCreated:*"],
        "Prefix": "user/",
        "Suffix": model::session_file::SESSION_FILE,
        "Function": "session-validator",
    })
}

pub(crate) fn reports_bucket(spec: &Spec) -> String {
    format!("{}-reports", spec.environment_name)
}

/// Every resource of the spec, stack by stack, each after what it needs. Fails with the
/// problems of things the spec names but the host does not have (an unreadable IdP metadata
/// file), so that nothing is deployed. `idp_metadata` is the IdP's metadata document as loaded
/// from `spec.idp_metadata` (or why it could not be).
///
/// The order of the list is the order of a diff's changes and of a deploy's steps within a
/// stack, so each part below is appended in the order the seed's stacks make them.
pub(crate) fn resources(spec: &Spec, idp_metadata: Option<Result<String, String>>) -> Result<Vec<Resource>, Vec<Problem>> {
    let mut out = vec![Resource::new("network", Kind::Network, "vpc", json!({ "VpcCidr": spec.vpc_cidr.to_string() }))];
    out.extend(storage_resources(spec));
    out.extend(spec.policies.iter().map(|policy| {
        Resource::new("service-roles", Kind::Policy, &policy.name, json!({ "Name": policy.name, "Statement": policy.text }))
    }));
    out.extend(spec.fleets.iter().map(|fleet| fleet_resource(spec, fleet)));
    for stack in &spec.stacks {
        out.push(stack_resource(stack));
        out.push(Resource::new(
            "streaming",
            Kind::FleetAssociation,
            &stack.name,
            json!({ "StackName": stack.name, "FleetName": stack.fleet }),
        ));
    }
    out.extend(spec.buckets.iter().filter_map(bucket_notifications));
    // The usage reports' bucket, where the daily reports land.
    let reports = reports_bucket(spec);
    if !spec.buckets.iter().any(|b| b.name.as_str() == reports) {
        out.push(Resource::new("streaming", Kind::Bucket, &reports, json!({ "Bucket": reports, "HomeFolders": false })));
    }
    out.extend(
        spec.fleets.iter().map(|fleet| Resource::new("start-fleet", Kind::FleetRunning, &fleet.name, json!({ "FleetName": fleet.name }))),
    );
    out.extend(notebook_resources(spec));
    let mut problems = Vec::new();
    if let (Some(source), Some(document)) = (&spec.idp_metadata, idp_metadata) {
        match document {
            Ok(document) => out.push(Resource::new(
                "saml",
                Kind::SamlProvider,
                &spec.idp_name,
                json!({
                    "Name": spec.idp_name,
                    "MetadataSource": source,
                    "MetadataSha256": hex::encode(sha2::Sha256::digest(document.as_bytes())),
                }),
            )),
            Err(message) => problems.push(Problem { path: "idp_metadata".into(), message }),
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// The `storage` stack: the buckets, the datasets in them and the launcher's parameter.
fn storage_resources(spec: &Spec) -> Vec<Resource> {
    let mut out = Vec::new();
    for bucket in &spec.buckets {
        out.push(Resource::new(
            "storage",
            Kind::Bucket,
            bucket.name.as_str(),
            json!({ "Bucket": bucket.name, "HomeFolders": bucket.home_folders }),
        ));
    }
    for dataset in &spec.datasets {
        out.push(Resource::new(
            "storage",
            Kind::Dataset,
            &dataset.name,
            json!({ "Name": dataset.name, "Bucket": dataset.bucket, "Prefix": dataset.prefix }),
        ));
    }
    let launcher = json!({ "TimeoutSeconds": spec.launcher.timeout_seconds, "PollMilliseconds": spec.launcher.poll_milliseconds });
    out.push(Resource::new(
        "storage",
        Kind::Parameter,
        LAUNCHER_PARAMETER,
        json!({ "Name": LAUNCHER_PARAMETER, "Type": "String", "Value": launcher.to_string() }),
    ));
    out
}

/// A fleet of the `streaming` stack; its stream view is that of the stack it serves.
fn fleet_resource(spec: &Spec, fleet: &FleetSpec) -> Resource {
    let view = spec.stacks.iter().find(|s| s.fleet == fleet.name).map_or("DESKTOP", |s| match s.stream_view {
        StreamView::App => "APP",
        _ => "DESKTOP",
    });
    Resource::new(
        "streaming",
        Kind::Fleet,
        &fleet.name,
        json!({
            "Name": fleet.name,
            "ImageName": fleet.image_name,
            "InstanceType": fleet.instance_type,
            "FleetType": match fleet.fleet_type { FleetType::AlwaysOn => "ALWAYS_ON", FleetType::OnDemand => "ON_DEMAND" },
            "DesiredInstances": fleet.desired_instances,
            "MaxUserDurationInSeconds": fleet.max_user_duration_seconds,
            "DisconnectTimeoutInSeconds": fleet.disconnect_timeout_seconds,
            "IdleDisconnectTimeoutInSeconds": fleet.idle_disconnect_timeout_seconds,
            "StreamView": view,
            "MaxQueue": fleet.max_queue,
            "QueueTimeoutInSeconds": fleet.queue_timeout_seconds,
        }),
    )
}

/// A stack of the `streaming` stack, with its user settings in AppStream's shape.
fn stack_resource(stack: &StackSpec) -> Resource {
    let settings: Vec<Value> = stack
        .user_settings
        .iter()
        .map(|s| {
            let mut setting = json!({ "Action": s.action, "Permission": if s.enabled { "ENABLED" } else { "DISABLED" } });
            if let Some(max) = s.maximum_length {
                setting["MaximumLength"] = json!(max);
            }
            setting
        })
        .collect();
    Resource::new(
        "streaming",
        Kind::Stack,
        &stack.name,
        json!({
            "Name": stack.name,
            "UserSettings": settings,
            "HomeFoldersBucket": stack.home_folders_bucket,
            "RedirectURL": stack.redirect_url,
            "DefaultApplication": stack.application,
            "StreamView": match stack.stream_view { StreamView::App => "APP", StreamView::Desktop => "DESKTOP", StreamView::Direct => "DIRECT" },
            "Watermark": if stack.watermark { "ENABLED" } else { "DISABLED" },
            "SessionRecording": if stack.session_recording { "ENABLED" } else { "DISABLED" },
        }),
    )
}

/// A bucket's notifications, if it has any: a home-folder bucket always has the session
/// validator's and belongs to the `streaming` stack that uses it, any other to `storage`.
fn bucket_notifications(bucket: &BucketSpec) -> Option<Resource> {
    let mut notifications: Vec<Value> = bucket
        .notifications
        .iter()
        .map(|n| json!({ "Id": n.id, "Events": n.events, "Prefix": n.prefix, "Suffix": n.suffix, "Function": n.function }))
        .collect();
    if bucket.home_folders && !notifications.iter().any(|n| n["Id"] == "session-validator") {
        notifications.push(session_validator_notification());
    }
    if notifications.is_empty() {
        return None;
    }
    let stack = if bucket.home_folders { "streaming" } else { "storage" };
    Some(Resource::new(
        stack,
        Kind::BucketNotifications,
        bucket.name.as_str(),
        json!({ "Bucket": bucket.name, "Notifications": notifications }),
    ))
}

/// The `notebook` stack: the volumes' keys (one by default) and the owned notebook instances.
fn notebook_resources(spec: &Spec) -> Vec<Resource> {
    let mut out = Vec::new();
    let mut aliases: Vec<&str> = spec.notebooks.iter().map(|n| n.kms_key_alias.as_str()).collect();
    aliases.dedup();
    if aliases.is_empty() {
        aliases.push("notebook-kms");
    }
    for alias in aliases {
        let name = format!("alias/{alias}");
        out.push(Resource::new(
            "notebook",
            Kind::Key,
            &name,
            json!({ "AliasName": name, "Description": "notebook volumes", "EnableKeyRotation": true }),
        ));
    }
    for notebook in spec.notebooks.iter().filter(|n| n.owner.is_some()) {
        out.push(Resource::new(
            "notebook",
            Kind::NotebookInstance,
            &notebook.name,
            json!({
                "NotebookInstanceName": notebook.name,
                "InstanceType": notebook.instance_type,
                "VolumeSizeInGB": notebook.volume_size_gb,
                "KmsKeyId": format!("alias/{}", notebook.kms_key_alias),
                "Owner": notebook.owner,
                "RootAccess": "Disabled",
                "DirectInternetAccess": "Disabled",
            }),
        ));
    }
    out
}

pub(crate) const LAUNCHER_PARAMETER: &str = "/datasandbox/launcher/config";

/// Reads a SAML identity provider's metadata document — a file on this host, or an http(s)
/// URL (at most 1 MiB, within 10 s) — and checks that it describes an IdP with a signing key.
pub(crate) async fn load_idp_metadata(source: &str) -> Result<String, String> {
    let document = if source.starts_with("http://") || source.starts_with("https://") {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|err| format!("cannot fetch `{source}`: {err}"))?;
        let reply = client.get(source).send().await.map_err(|err| format!("cannot fetch `{source}`: {err}"))?;
        if !reply.status().is_success() {
            return Err(format!("fetching `{source}` answered {}", reply.status()));
        }
        if reply.content_length().is_some_and(|n| n > 1024 * 1024) {
            return Err(format!("`{source}` is larger than 1 MiB; that is not an IdP's metadata"));
        }
        let bytes = reply.bytes().await.map_err(|err| format!("cannot fetch `{source}`: {err}"))?;
        if bytes.len() > 1024 * 1024 {
            return Err(format!("`{source}` is larger than 1 MiB; that is not an IdP's metadata"));
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("`{source}` is not UTF-8 text"))?
    } else {
        tokio::fs::read_to_string(Path::new(source)).await.map_err(|err| format!("cannot read `{source}`: {err}"))?
    };
    crate::identity::saml::parse_metadata("check", &document)
        .map_err(|problem| format!("`{source}` is not usable SAML metadata of an identity provider: {problem}"))?;
    Ok(document)
}
