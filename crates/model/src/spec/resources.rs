//! The spec's resource tables: instance types, buckets, datasets, images, policies, fleets,
//! stacks and notebooks, each read with the defaults the seed deploys when the file has none.

use super::defaults;
use super::validated::{
    BucketSpec, DatasetSpec, FleetSpec, FleetType, ImageSpec, InstanceType, NotebookSpec, NotificationSpec, PolicySpec, ReadAudit,
    StackSpec, StreamView, USER_SETTING_ACTIONS, UserSetting, is_event_type,
};
use super::walk::Table;
use crate::ids::{BucketName, UserId};

pub(super) fn read_instance_types(root: &Table) -> Vec<InstanceType> {
    let mut types: Vec<InstanceType> = defaults::INSTANCE_TYPES
        .iter()
        .map(|(name, vcpus, memory_mib)| InstanceType { name: (*name).into(), vcpus: *vcpus, memory_mib: *memory_mib, pids: 1024 })
        .collect();
    for (name, table) in root.named_tables("instance_types").unwrap_or_default() {
        let defined = InstanceType {
            name: name.clone(),
            vcpus: table.integer("vcpus", 2, 1..=256) as u32,
            memory_mib: table.integer("memory_mib", 4096, 64..=1024 * 1024) as u64,
            pids: table.integer("pids", 1024, 16..=1_000_000) as u32,
        };
        table.finish();
        match types.iter_mut().find(|t| t.name == name) {
            Some(existing) => *existing = defined,
            None => types.push(defined),
        }
    }
    types
}

pub(super) fn read_buckets(root: &Table, environment_name: &str) -> Vec<BucketSpec> {
    let Some(tables) = root.array_of_tables("buckets") else {
        let name = BucketName::new(format!("{environment_name}-home")).expect("a valid environment name makes a valid bucket name");
        return vec![BucketSpec { name, home_folders: true, notifications: Vec::new() }];
    };
    let mut buckets: Vec<BucketSpec> = Vec::new();
    for table in tables {
        let name = table.parsed("name", "", |v| BucketName::new(v).map_err(|e| e.to_string()));
        let home_folders = table.boolean("home_folders", false);
        let mut notifications = Vec::new();
        for n in table.array_of_tables("notifications").unwrap_or_default() {
            let events = n.strings("events", &["ObjectCreated:*"]);
            for (index, event) in events.iter().enumerate() {
                if !is_event_type(event) {
                    n.problem(&format!("events[{index}]"), format!("`{event}` is not an event type; use ObjectCreated:*, ObjectCreated:Put, ObjectCreated:Copy, ObjectRemoved:* or ObjectRemoved:Delete"));
                }
            }
            notifications.push(NotificationSpec {
                id: n.string("id", ""),
                events,
                prefix: n.string("prefix", ""),
                suffix: n.string("suffix", ""),
                function: n.string("function", ""),
            });
            n.finish();
        }
        table.finish();
        if let Some(name) = name {
            if buckets.iter().any(|b| b.name == name) {
                table.problem("name", format!("bucket `{name}` is defined twice"));
            }
            buckets.push(BucketSpec { name, home_folders, notifications });
        }
    }
    buckets
}

pub(super) fn read_images(root: &Table, image_name: &str, stream_view: StreamView) -> Vec<ImageSpec> {
    let mut images: Vec<ImageSpec> = root
        .named_tables("images")
        .unwrap_or_default()
        .into_iter()
        .map(|(name, t)| {
            let recipe = t.choice("recipe", "base", &["base", "desktop", "notebook"]).to_owned();
            let default: &[&str] = if recipe == "notebook" { &["jupyterlab", "ipykernel"] } else { &[] };
            let python_packages = t.strings("python_packages", default);
            for (index, package) in python_packages.iter().enumerate() {
                let ok = !package.is_empty()
                    && !package.starts_with('-')
                    && package.chars().all(|c| c.is_ascii_alphanumeric() || "._-=<>!~[],".contains(c));
                if !ok {
                    t.problem(
                        &format!("python_packages[{index}]"),
                        format!("`{package}` is not a package requirement such as `jupyterlab>=4`"),
                    );
                }
            }
            if recipe != "notebook" && !python_packages.is_empty() {
                t.problem("python_packages", "only the `notebook` recipe installs Python packages");
            }
            t.finish();
            ImageSpec { name, recipe, python_packages }
        })
        .collect();
    // The fleets' image and the notebooks' image exist unless declared otherwise; pixel
    // streaming needs the fleets' image to have a display and a browser.
    let fleet_recipe = if stream_view == StreamView::Direct { "base" } else { "desktop" };
    for (name, recipe, packages) in
        [(image_name, fleet_recipe, &[][..]), ("datasandbox-notebook", "notebook", &["jupyterlab", "ipykernel"][..])]
    {
        if !images.iter().any(|i| i.name == name) {
            images.push(ImageSpec {
                name: name.to_owned(),
                recipe: recipe.into(),
                python_packages: packages.iter().map(|p| (*p).to_owned()).collect(),
            });
        }
    }
    images
}

pub(super) fn read_datasets(root: &Table, buckets: &[BucketSpec]) -> Vec<DatasetSpec> {
    let mut datasets = Vec::new();
    for (name, table) in root.named_tables("datasets").unwrap_or_default() {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            root.problem(
                &format!("datasets.{name}"),
                format!("`{name}` cannot name a directory under /data; use up to 64 letters, digits, `-`, `_` or `.`"),
            );
        }
        let bucket = table.parsed("bucket", "", |v| BucketName::new(v).map_err(|e| e.to_string()));
        let prefix = table.string("prefix", "");
        let read_audit = match table.choice("read_audit", "ranges", &["ranges", "opens"]) {
            "opens" => ReadAudit::Opens,
            _ => ReadAudit::Ranges,
        };
        if prefix.starts_with('/') || prefix.split('/').any(|part| part == "..") {
            table.problem("prefix", format!("`{prefix}` must be a key prefix such as `trials/2026/`"));
        }
        table.finish();
        let Some(bucket) = bucket else { continue };
        match buckets.iter().find(|b| b.name == bucket) {
            None => table.problem("bucket", format!("`{bucket}` is not a bucket defined in this spec")),
            Some(b) if b.home_folders => table.problem("bucket", format!("`{bucket}` holds home folders, which are never datasets")),
            Some(_) if valid_name => datasets.push(DatasetSpec { name, bucket, prefix, read_audit }),
            Some(_) => {}
        }
    }
    datasets
}

pub(super) fn read_policies(root: &Table) -> Vec<PolicySpec> {
    let Some(tables) = root.array_of_tables("policies") else {
        return defaults::POLICIES.iter().map(|(name, text)| PolicySpec { name: (*name).into(), text: (*text).into() }).collect();
    };
    tables
        .into_iter()
        .map(|table| {
            let policy = PolicySpec { name: table.string("name", ""), text: table.string("text", "") };
            if policy.name.is_empty() {
                table.problem("name", "is required");
            }
            table.finish();
            policy
        })
        .collect()
}

fn check_instance_type(table: &Table, key: &'static str, value: &str, types: &[InstanceType]) {
    if !types.iter().any(|t| t.name == value) {
        let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
        table.problem(key, format!("`{value}` is not a defined instance type ({})", names.join(", ")));
    }
}

pub(super) fn read_fleets(root: &Table, env: &str, image: &str, fleet_type: FleetType, types: &[InstanceType]) -> Vec<FleetSpec> {
    let instance_type = root.string("instance_type", "stream.standard.small");
    check_instance_type(root, "instance_type", &instance_type, types);
    let default_type = match fleet_type {
        FleetType::AlwaysOn => "ALWAYS_ON",
        FleetType::OnDemand => "ON_DEMAND",
    };
    let named = root.named_tables("fleets").unwrap_or_else(|| vec![(format!("{env}-fleet"), root.absent(&format!("fleets.{env}-fleet")))]);
    named
        .into_iter()
        .map(|(name, t)| {
            let fleet = FleetSpec {
                image_name: t.string("image_name", image),
                instance_type: t.string("instance_type", &instance_type),
                fleet_type: if t.choice("fleet_type", default_type, &["ALWAYS_ON", "ON_DEMAND"]) == "ALWAYS_ON" {
                    FleetType::AlwaysOn
                } else {
                    FleetType::OnDemand
                },
                desired_instances: t.integer("desired_instances", 2, 0..=1000) as u32,
                max_user_duration_seconds: t.integer("max_user_duration", 57_600, 600..=432_000) as u32,
                disconnect_timeout_seconds: t.integer("disconnect_timeout", 900, 60..=36_000) as u32,
                idle_disconnect_timeout_seconds: {
                    let idle = t.integer("idle_disconnect_timeout", 900, 0..=36_000);
                    if (1..60).contains(&idle) {
                        t.problem("idle_disconnect_timeout", format!("{idle} must be 0 (off) or within 60..=36000"));
                    }
                    idle as u32
                },
                max_queue: t.integer("max_queue", 100, 0..=10_000) as u32,
                queue_timeout_seconds: t.integer("queue_timeout", 300, 1..=3600) as u32,
                max_sessions_per_user: t.integer("max_sessions_per_user", 5, 1..=100) as u32,
                name,
            };
            check_instance_type(&t, "instance_type", &fleet.instance_type, types);
            t.finish();
            fleet
        })
        .collect()
}

pub(super) fn read_stacks(root: &Table, env: &str, view: StreamView, fleets: &[FleetSpec], buckets: &[BucketSpec]) -> Vec<StackSpec> {
    let default_view = match view {
        StreamView::Desktop => "DESKTOP",
        StreamView::App => "APP",
        StreamView::Direct => "DIRECT",
    };
    let home = buckets.iter().find(|b| b.home_folders).map(|b| b.name.to_string());
    let default_fleet = fleets.first().map(|f| f.name.clone()).unwrap_or_default();
    let named = root.named_tables("stacks").unwrap_or_else(|| vec![(format!("{env}-stack"), root.absent(&format!("stacks.{env}-stack")))]);
    named
        .into_iter()
        .map(|(name, t)| {
            let fleet = t.string("fleet", &default_fleet);
            if !fleets.iter().any(|f| f.name == fleet) {
                t.problem("fleet", format!("`{fleet}` is not a fleet defined in this spec"));
            }
            let stream_view = match t.choice("stream_view", default_view, &["DESKTOP", "APP", "DIRECT"]) {
                "APP" => StreamView::App,
                "DIRECT" => StreamView::Direct,
                _ => StreamView::Desktop,
            };
            let home_folders_bucket = t.opt_string("home_folders_bucket").or_else(|| home.clone());
            let settings = t.table("user_settings");
            let user_settings = USER_SETTING_ACTIONS
                .iter()
                .map(|action| {
                    // The seed's stack: copy out, download and printing disabled; paste in and upload enabled.
                    let default = matches!(*action, "CLIPBOARD_COPY_FROM_LOCAL_DEVICE" | "FILE_UPLOAD");
                    let enabled =
                        settings.choice(action, if default { "ENABLED" } else { "DISABLED" }, &["ENABLED", "DISABLED"]) == "ENABLED";
                    UserSetting { action, enabled, maximum_length: None }
                })
                .collect::<Vec<_>>();
            let clipboard_max = settings.integer("CLIPBOARD_MAXIMUM_LENGTH", 20_971_520, 1..=20_971_520) as u32;
            let user_settings: Vec<UserSetting> = user_settings
                .into_iter()
                .map(|mut s| {
                    if s.action.starts_with("CLIPBOARD") {
                        s.maximum_length = Some(clipboard_max);
                    }
                    s
                })
                .collect();
            settings.finish();
            let redirect_url = t.opt_string("redirect_url").filter(|v| !v.is_empty());
            if let Some(url) = redirect_url.as_ref().filter(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
                t.problem("redirect_url", format!("`{url}` must be an http:// or https:// URL"));
            }
            let application = t.string("application", "notebook");
            // The notebook in the user's own browser: file transfer settings cannot hold there.
            let disabled: Vec<&str> = user_settings
                .iter()
                .filter(|s| matches!(s.action, "FILE_UPLOAD" | "FILE_DOWNLOAD") && !s.enabled)
                .map(|s| s.action)
                .collect();
            if stream_view == StreamView::Direct && application == "notebook" && !disabled.is_empty() {
                t.problem(
                    "stream_view",
                    format!(
                        "DIRECT hands the notebook to the user's browser, where {} cannot hold: enable it in user_settings, or stream the session (DESKTOP or APP)",
                        disabled.join(" and ")
                    ),
                );
            }
            let watermark = t.boolean("watermark", true);
            let session_recording = t.boolean("session_recording", false);
            t.finish();
            StackSpec { name, fleet, stream_view, home_folders_bucket, user_settings, redirect_url, application, watermark, session_recording }
        })
        .collect()
}

pub(super) fn read_notebooks(root: &Table, types: &[InstanceType]) -> Vec<NotebookSpec> {
    let named = root
        .named_tables("notebooks")
        .unwrap_or_else(|| vec![("Data-Sandbox-Notebook".to_owned(), root.absent("notebooks.Data-Sandbox-Notebook"))]);
    named
        .into_iter()
        .map(|(name, t)| {
            let notebook = NotebookSpec {
                instance_type: t.string("instance_type", "stream.standard.medium"),
                volume_size_gb: t.integer("volume_size_gb", 20, 5..=16_384) as u32,
                kms_key_alias: t.string("kms_key_alias", "notebook-kms"),
                root_access: t.choice("root_access", "Disabled", &["Enabled", "Disabled"]) == "Enabled",
                direct_internet_access: t.choice("direct_internet_access", "Disabled", &["Enabled", "Disabled"]) == "Enabled",
                owner: t.opt_string("owner").filter(|v| !v.is_empty()),
                name,
            };
            check_instance_type(&t, "instance_type", &notebook.instance_type, types);
            if let Some(Err(err)) = notebook.owner.as_ref().map(|o| UserId::new(o.clone())) {
                t.problem("owner", err.to_string());
            }
            t.finish();
            notebook
        })
        .collect()
}
