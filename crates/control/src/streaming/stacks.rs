//! `streaming:CreateStack` and the other stack actions. A stack holds the user settings
//! (clipboard both ways, file transfer, printing; unlisted actions are ENABLED, as in AWS), the
//! home-folder storage connector, the redirect URL and its one fleet.

use policy::Resource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use super::fleets::fleet_row;
use super::resource::{DescribeInput, NameInput, arn, check_name, not_found};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};

/// One user setting, in AWS's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct UserSetting {
    pub action: String,
    pub permission: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_length: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct StorageConnector {
    connector_type: String,
    #[serde(default)]
    resource_identifier: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct StackInput {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    user_settings: Option<Vec<UserSetting>>,
    #[serde(default)]
    storage_connectors: Option<Vec<StorageConnector>>,
    #[serde(default, rename = "RedirectURL")]
    redirect_url: Option<String>,
    #[serde(default)]
    attributes_to_delete: Vec<String>,
    /// DataSandbox's addition: the catalog application a session starts when its URL names none.
    #[serde(default)]
    default_application: Option<String>,
    /// DataSandbox's addition: DESKTOP or APP stream the instance's display; DIRECT hands the
    /// notebook to the user's browser (less sensitive work).
    #[serde(default)]
    stream_view: Option<String>,
    /// DataSandbox's addition: ENABLED draws the user, the session and the time into the
    /// pixels of the session's display (DESKTOP and APP views).
    #[serde(default)]
    watermark: Option<String>,
    /// DataSandbox's addition: ENABLED records what each session's display shows, for auditors
    /// (never keystrokes or clipboard content).
    #[serde(default)]
    session_recording: Option<String>,
}

/// An ENABLED | DISABLED switch of DataSandbox's own, named `member` in the request.
fn check_switch(member: &str, value: &Option<String>) -> Result<(), ActionError> {
    match value.as_deref() {
        None | Some("ENABLED" | "DISABLED") => Ok(()),
        Some(other) => Err(ActionError::validation(format!("{member} `{other}` is not ENABLED or DISABLED"))),
    }
}

fn check_stream_view(view: &Option<String>) -> Result<(), ActionError> {
    match view.as_deref() {
        None | Some("DESKTOP" | "APP" | "DIRECT") => Ok(()),
        Some(other) => Err(ActionError::validation(format!("StreamView `{other}` is not DESKTOP, APP or DIRECT"))),
    }
}

fn check_application(application: &Option<String>) -> Result<(), ActionError> {
    match application {
        Some(a) if a.is_empty() || a.len() > 128 || !a.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
            Err(ActionError::validation(format!("DefaultApplication `{a}` must be 1..=128 letters, digits, `-`, `_` or `.`")))
        }
        _ => Ok(()),
    }
}

/// Checks settings and completes them: every action present, unlisted ones ENABLED.
fn complete_settings(given: &[UserSetting], base: &[UserSetting]) -> Result<Vec<UserSetting>, ActionError> {
    let mut seen = Vec::new();
    for setting in given {
        if !model::spec::USER_SETTING_ACTIONS.contains(&setting.action.as_str()) {
            return Err(ActionError::validation(format!(
                "UserSettings action `{}` is not one of {}",
                setting.action,
                model::spec::USER_SETTING_ACTIONS.join(", ")
            )));
        }
        if seen.contains(&setting.action) {
            return Err(ActionError::validation(format!("UserSettings names `{}` twice", setting.action)));
        }
        seen.push(setting.action.clone());
        if setting.permission != "ENABLED" && setting.permission != "DISABLED" {
            return Err(ActionError::validation(format!("Permission `{}` is not ENABLED or DISABLED", setting.permission)));
        }
        match setting.maximum_length {
            Some(_) if !setting.action.starts_with("CLIPBOARD") => {
                return Err(ActionError::validation(format!("MaximumLength applies only to clipboard actions, not `{}`", setting.action)));
            }
            Some(n) if !(1..=20_971_520).contains(&n) => {
                return Err(ActionError::validation(format!("MaximumLength {n} is outside 1..=20971520")));
            }
            _ => {}
        }
    }
    Ok(model::spec::USER_SETTING_ACTIONS
        .iter()
        .map(|action| {
            given.iter().chain(base).find(|s| s.action == *action).cloned().unwrap_or(UserSetting {
                action: (*action).to_owned(),
                permission: if model::spec::USER_SETTINGS_OFF_UNLESS_ENABLED.contains(action) { "DISABLED" } else { "ENABLED" }.into(),
                maximum_length: None,
            })
        })
        .collect())
}

async fn home_bucket(plane: &Platform, connectors: &[StorageConnector]) -> Result<Option<String>, ActionError> {
    let mut bucket = None;
    for connector in connectors {
        match connector.connector_type.as_str() {
            "HOMEFOLDERS" => {
                let default = plane.current().home_bucket().map(|b| b.name.to_string());
                let named = connector.resource_identifier.clone().or(default);
                let mut ok = false;
                if let Some(name) = named.as_ref().and_then(|n| model::BucketName::new(n.clone()).ok()) {
                    ok = crate::storage::find_bucket(plane, &name).await?.is_some_and(|b| b.home_folders);
                }
                if !ok {
                    return Err(ActionError::validation("HOMEFOLDERS must name a bucket that holds home folders in this environment"));
                }
                bucket = named;
            }
            other => {
                return Err(ActionError::validation(format!(
                    "ConnectorType `{other}` is not offered: data may not leave the environment; use HOMEFOLDERS"
                )));
            }
        }
    }
    Ok(bucket)
}

/// A DIRECT stack whose application is the notebook hands Jupyter to the user's browser, which
/// is the user's device: code run there can print any file, save it into a notebook, or paste
/// one in, whatever a proxy judges. FILE_UPLOAD and FILE_DOWNLOAD cannot hold there, so such a
/// stack must enable both (or stream pixels).
pub(crate) fn check_direct_transfers(view: Option<&str>, application: Option<&str>, settings: &[UserSetting]) -> Result<(), ActionError> {
    let disabled: Vec<&str> = settings
        .iter()
        .filter(|s| matches!(s.action.as_str(), "FILE_UPLOAD" | "FILE_DOWNLOAD") && s.permission == "DISABLED")
        .map(|s| s.action.as_str())
        .collect();
    if view == Some("DIRECT") && application == Some("notebook") && !disabled.is_empty() {
        return Err(ActionError::validation(format!(
            "StreamView DIRECT hands the notebook to the user's browser, where {} cannot hold: enable it, or stream the session (DESKTOP or APP)",
            disabled.join(" and ")
        )));
    }
    Ok(())
}

fn check_redirect(url: &Option<String>) -> Result<(), ActionError> {
    match url {
        Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 1000 => {
            Err(ActionError::validation(format!("RedirectURL `{u}` must be an http(s) URL of at most 1000 characters")))
        }
        _ => Ok(()),
    }
}

pub(super) async fn create(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: StackInput = ctx.parse(input)?;
    check_name("Name", &input.name)?;
    let plane = ctx.platform;
    let settings = complete_settings(input.user_settings.as_deref().unwrap_or_default(), &[])?;
    let bucket = home_bucket(plane, input.storage_connectors.as_deref().unwrap_or_default()).await?;
    check_redirect(&input.redirect_url)?;
    check_application(&input.default_application)?;
    check_stream_view(&input.stream_view)?;
    check_switch("Watermark", &input.watermark)?;
    check_switch("SessionRecording", &input.session_recording)?;
    check_direct_transfers(input.stream_view.as_deref(), input.default_application.as_deref(), &settings)?;
    let description = input.description.clone().unwrap_or_default();
    if description.chars().count() > 256 || input.display_name.as_ref().is_some_and(|d| d.chars().count() > 100) {
        return Err(ActionError::validation("Description is at most 256 characters and DisplayName at most 100"));
    }
    ctx.authorize(Resource::Service("streaming".into()))?;
    let inserted = sqlx::query(
        "INSERT INTO stacks (name, fleet, description, user_settings, home_folders_bucket, redirect_url, default_application, stream_view, watermark,
         session_recording, created)
         VALUES ($1, NULL, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&input.name)
    .bind(&description)
    .bind(serde_json::to_string(&settings).map_err(ActionError::internal)?)
    .bind(&bucket)
    .bind(&input.redirect_url)
    .bind(&input.default_application)
    .bind(input.stream_view.as_deref().unwrap_or("DESKTOP"))
    .bind(input.watermark.as_deref().unwrap_or("DISABLED"))
    .bind(input.session_recording.as_deref().unwrap_or("DISABLED"))
    .bind(now_millis())
    .execute(&plane.store.pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ActionError::conflict(ErrorCode::ResourceAlreadyExistsException, format!("stack `{}` already exists", input.name)));
    }
    Ok(json!({ "Stack": stack_json(plane, &stack_row(plane, &input.name).await?)? }))
}

pub(super) async fn update(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: StackInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let row = stack_row(plane, &input.name).await?;
    for attribute in &input.attributes_to_delete {
        if !["USER_SETTINGS", "STORAGE_CONNECTORS", "REDIRECT_URL"].contains(&attribute.as_str()) {
            return Err(ActionError::validation(format!(
                "AttributesToDelete `{attribute}` is not USER_SETTINGS, STORAGE_CONNECTORS or REDIRECT_URL"
            )));
        }
    }
    let deleting = |a: &str| input.attributes_to_delete.iter().any(|x| x == a);
    let current: Vec<UserSetting> = if deleting("USER_SETTINGS") {
        Vec::new()
    } else {
        serde_json::from_str(&row.try_get::<String, _>("user_settings")?).map_err(ActionError::internal)?
    };
    let settings = complete_settings(input.user_settings.as_deref().unwrap_or_default(), &current)?;
    let bucket = match &input.storage_connectors {
        Some(connectors) => home_bucket(plane, connectors).await?,
        None if deleting("STORAGE_CONNECTORS") => None,
        None => row.try_get("home_folders_bucket")?,
    };
    check_redirect(&input.redirect_url)?;
    let redirect = match &input.redirect_url {
        Some(url) => Some(url.clone()),
        None if deleting("REDIRECT_URL") => None,
        None => row.try_get("redirect_url")?,
    };
    let description = input.description.clone().map_or_else(|| row.try_get("description"), Ok)?;
    check_application(&input.default_application)?;
    check_stream_view(&input.stream_view)?;
    check_switch("Watermark", &input.watermark)?;
    check_switch("SessionRecording", &input.session_recording)?;
    let application = input.default_application.clone().map_or_else(|| row.try_get("default_application"), |a| Ok(Some(a)))?;
    let view = input.stream_view.clone().map_or_else(|| row.try_get("stream_view"), |v| Ok(Some(v)))?;
    let watermark = input.watermark.clone().map_or_else(|| row.try_get("watermark"), |w| Ok(Some(w)))?;
    let recording = input.session_recording.clone().map_or_else(|| row.try_get("session_recording"), |r| Ok(Some(r)))?;
    check_direct_transfers(view.as_deref(), application.as_deref(), &settings)?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    // Sessions already running keep the settings they started with.
    sqlx::query(
        "UPDATE stacks SET description = $1, user_settings = $2, home_folders_bucket = $3, redirect_url = $4, default_application = $5,
         stream_view = $6, watermark = $7, session_recording = $8 WHERE name = $9",
    )
    .bind(&description)
    .bind(serde_json::to_string(&settings).map_err(ActionError::internal)?)
    .bind(&bucket)
    .bind(&redirect)
    .bind(&application)
    .bind(&view)
    .bind(&watermark)
    .bind(&recording)
    .bind(&input.name)
    .execute(&plane.store.pool)
    .await?;
    Ok(json!({ "Stack": stack_json(plane, &stack_row(plane, &input.name).await?)? }))
}

pub(super) async fn delete(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    let plane = ctx.platform;
    stack_row(plane, &input.name).await?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    sqlx::query("DELETE FROM stacks WHERE name = $1").bind(&input.name).execute(&plane.store.pool).await?;
    Ok(json!({}))
}

pub(super) async fn describe(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: DescribeInput = ctx.parse(input)?;
    if input.next_token.is_some() {
        return Err(ActionError::validation("NextToken is not valid: DescribeStacks returns every stack in one page"));
    }
    ctx.authorize(Resource::Service("streaming".into()))?;
    let plane = ctx.platform;
    let rows = match input.names {
        Some(names) => {
            let mut rows = Vec::new();
            for name in &names {
                rows.push(stack_row(plane, name).await?);
            }
            rows
        }
        None => sqlx::query("SELECT * FROM stacks ORDER BY name").fetch_all(&plane.store.pool).await?,
    };
    let stacks = rows.iter().map(|row| stack_json(plane, row)).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "Stacks": stacks }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct AssociateInput {
    fleet_name: String,
    stack_name: String,
}

pub(super) async fn associate(ctx: &mut Ctx<'_>, input: Value, join: bool) -> Result<Value, ActionError> {
    let input: AssociateInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let row = stack_row(plane, &input.stack_name).await?;
    fleet_row(plane, &input.fleet_name).await?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    let current: Option<String> = row.try_get("fleet")?;
    let next = match (join, current.as_deref()) {
        (true, Some(other)) if other != input.fleet_name => {
            return Err(ActionError::conflict(
                ErrorCode::ResourceInUseException,
                format!("stack `{}` already uses fleet `{other}`; disassociate it first", input.stack_name),
            ));
        }
        (true, _) => Some(input.fleet_name.clone()),
        (false, Some(f)) if f == input.fleet_name => None,
        (false, _) => {
            return Err(ActionError::not_found(
                ErrorCode::ResourceNotFoundException,
                format!("fleet `{}` is not associated with stack `{}`", input.fleet_name, input.stack_name),
            ));
        }
    };
    sqlx::query("UPDATE stacks SET fleet = $1 WHERE name = $2").bind(&next).bind(&input.stack_name).execute(&plane.store.pool).await?;
    Ok(json!({}))
}

pub(super) async fn stack_row(plane: &Platform, name: &str) -> Result<sqlx::any::AnyRow, ActionError> {
    sqlx::query("SELECT * FROM stacks WHERE name = $1")
        .bind(name)
        .fetch_optional(&plane.store.pool)
        .await?
        .ok_or_else(|| not_found("stack", name))
}

fn stack_json(plane: &Platform, row: &sqlx::any::AnyRow) -> Result<Value, ActionError> {
    let name: String = row.try_get("name")?;
    let settings: Value = serde_json::from_str(&row.try_get::<String, _>("user_settings")?).map_err(ActionError::internal)?;
    let bucket: Option<String> = row.try_get("home_folders_bucket")?;
    let connectors: Vec<Value> = bucket.into_iter().map(|b| json!({ "ConnectorType": "HOMEFOLDERS", "ResourceIdentifier": b })).collect();
    Ok(json!({
        "Name": name,
        "Arn": arn(plane, "stack", &name),
        "Description": row.try_get::<String, _>("description")?,
        "CreatedTime": millis_to_rfc3339(row.try_get("created")?),
        "StorageConnectors": connectors,
        "RedirectURL": row.try_get::<Option<String>, _>("redirect_url")?,
        "UserSettings": settings,
        "FleetName": row.try_get::<Option<String>, _>("fleet")?,
        "DefaultApplication": row.try_get::<Option<String>, _>("default_application")?,
        "StreamView": row.try_get::<Option<String>, _>("stream_view")?.unwrap_or_else(|| "DESKTOP".to_owned()),
        "Watermark": row.try_get::<Option<String>, _>("watermark")?.unwrap_or_else(|| "DISABLED".to_owned()),
        "SessionRecording": row.try_get::<Option<String>, _>("session_recording")?.unwrap_or_else(|| "DISABLED".to_owned()),
        "StackErrors": [],
    }))
}
