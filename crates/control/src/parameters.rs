//! `parameters:` — SSM Parameter Store's actions and members: versioned String, StringList and
//! SecureString parameters. SecureString values are encrypted by the key service and returned
//! in plaintext only with `WithDecryption` and a policy that allows `keys:Decrypt`.

use std::collections::BTreeMap;

use model::ParameterName;
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::core::actions::ParametersAction;
use crate::core::codec::{decode_token, encode_base64, encode_token};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};
use crate::keys;

mod repo;

use repo::{NewVersion, Version, current_version};

const MAX_VERSIONS: i64 = 100;
const DEFAULT_KEY_ALIAS: &str = "alias/datasandbox/parameters";

pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, action: ParametersAction, input: Value) -> Result<Value, ActionError> {
    match action {
        ParametersAction::PutParameter => put(ctx, input).await,
        ParametersAction::GetParameter => get(ctx, input).await,
        ParametersAction::GetParameters => get_many(ctx, input).await,
        ParametersAction::GetParametersByPath => get_by_path(ctx, input).await,
        ParametersAction::DeleteParameter => delete(ctx, input).await,
        ParametersAction::GetParameterHistory => history(ctx, input).await,
    }
}

fn arn(plane: &Platform, name: &str) -> String {
    model::arn::regional("parameters", &plane.spec.region, &plane.spec.account_id, &format!("parameter/{}", name.trim_start_matches('/')))
}

fn not_found(name: &str) -> ActionError {
    ActionError::not_found(ErrorCode::ParameterNotFound, format!("parameter `{name}` does not exist"))
}

fn resource(name: &str) -> Resource {
    Resource::Parameter { name: name.to_owned() }
}

/// The encryption context binds a SecureString's ciphertext to its parameter.
fn context(plane: &Platform, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("PARAMETER_ARN".to_owned(), arn(plane, name))])
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PutInput {
    name: ParameterName,
    value: String,
    #[serde(default, rename = "Type")]
    kind: Option<String>,
    #[serde(default)]
    overwrite: bool,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    data_type: Option<String>,
}

/// Checks a PutParameter input beyond its types (AWS's ranges and combinations); the type it
/// names, if any.
fn checked_kind(input: &PutInput) -> Result<Option<String>, ActionError> {
    if input.value.is_empty() || input.value.chars().count() > 4096 {
        return Err(ActionError::validation("Value must be 1..=4096 characters (Standard tier)"));
    }
    if input.tier.as_deref().is_some_and(|t| t != "Standard") {
        return Err(ActionError::validation("Tier must be Standard"));
    }
    if input.data_type.as_deref().is_some_and(|t| t != "text") {
        return Err(ActionError::validation("DataType must be text"));
    }
    if input.description.as_ref().is_some_and(|d| d.chars().count() > 1024) {
        return Err(ActionError::validation("Description is longer than 1024 characters"));
    }
    let kind = match input.kind.as_deref() {
        None | Some("String" | "StringList" | "SecureString") => input.kind.clone(),
        Some(other) => return Err(ActionError::validation(format!("Type `{other}` is not String, StringList or SecureString"))),
    };
    if input.key_id.is_some() && kind.as_deref() != Some("SecureString") {
        return Err(ActionError::validation("KeyId applies only to Type SecureString"));
    }
    Ok(kind)
}

async fn put(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: PutInput = ctx.parse(input)?;
    let name = input.name.as_str();
    let kind = checked_kind(&input)?;
    ctx.authorize(resource(name))?;
    let plane = ctx.platform;
    let current = current_version(plane, name).await?;
    let kind = match (kind, &current) {
        (Some(kind), _) => kind,
        (None, Some(current)) => current.kind.clone(),
        (None, None) => return Err(ActionError::validation(format!("Type is required to create parameter `{name}`"))),
    };
    if current.is_some() && !input.overwrite {
        return Err(ActionError::conflict(
            ErrorCode::ParameterAlreadyExists,
            format!("parameter `{name}` exists; set Overwrite to replace it"),
        ));
    }
    let (stored, key_id) = if kind == "SecureString" {
        let key = match &input.key_id {
            Some(reference) => keys::resolve_for_use(plane, reference).await?,
            None => default_key(plane).await?,
        };
        let aliases = keys::aliases_of(plane, key.id()).await?;
        ctx.authorize_also("keys:Encrypt", Resource::Key { id: key.id().to_owned(), aliases })?;
        (keys::encrypt_with(plane, &key, input.value.as_bytes(), &context(plane, name)).await?, Some(key.id().to_owned()))
    } else {
        (input.value.into_bytes(), None)
    };
    let description = input.description.or_else(|| current.as_ref().map(|c| c.description.clone())).unwrap_or_default();
    let new_version = NewVersion {
        name: name.to_owned(),
        kind,
        value: stored,
        key_id,
        description,
        last_modified: now_millis(),
        modified_by: ctx.principal_arn().to_owned(),
    };
    // As in SSM, the oldest version gives way once a parameter has 100.
    let Some(version) = repo::insert_next_version(plane, new_version, input.overwrite, MAX_VERSIONS).await? else {
        return Err(ActionError::conflict(
            ErrorCode::ParameterAlreadyExists,
            format!("parameter `{name}` exists; set Overwrite to replace it"),
        ));
    };
    Ok(json!({ "Version": version, "Tier": "Standard" }))
}

/// The key SecureStrings use when PutParameter names none, created on first use.
async fn default_key(plane: &Platform) -> Result<keys::KeyRow, ActionError> {
    match keys::resolve_for_use(plane, DEFAULT_KEY_ALIAS).await {
        Ok(key) => Ok(key),
        Err(err) if err.code == ErrorCode::NotFoundException => {
            let key = keys::insert_key(plane, "Default key for SecureString parameters").await?;
            if !keys::insert_alias_if_absent(plane, DEFAULT_KEY_ALIAS, key.id()).await? {
                // Another request created it first; use theirs.
                return keys::resolve_for_use(plane, DEFAULT_KEY_ALIAS).await;
            }
            Ok(key)
        }
        Err(err) => Err(err),
    }
}

/// The parameter as returned to the caller; SecureStrings are decrypted only when asked, and
/// only if the caller may decrypt with their key.
async fn render(ctx: &mut Ctx<'_>, version: &Version, with_decryption: bool, full: bool) -> Result<Value, ActionError> {
    let value = if version.kind == "SecureString" {
        if with_decryption {
            let key = version.key_id.clone().unwrap_or_default();
            let aliases = keys::aliases_of(ctx.platform, &key).await?;
            ctx.authorize_also("keys:Decrypt", Resource::Key { id: key, aliases })?;
            let (_, plaintext) = keys::decrypt_blob(ctx.platform, &version.value, &context(ctx.platform, &version.name)).await?;
            String::from_utf8(plaintext).map_err(ActionError::internal)?
        } else {
            encode_base64(&version.value)
        }
    } else {
        String::from_utf8(version.value.clone()).map_err(ActionError::internal)?
    };
    let mut out = json!({
        "Name": version.name,
        "Type": version.kind,
        "Value": value,
        "Version": version.version,
        "LastModifiedDate": millis_to_rfc3339(version.last_modified),
        "ARN": arn(ctx.platform, &version.name),
        "DataType": "text",
    });
    if full {
        out["Description"] = json!(version.description);
        out["LastModifiedUser"] = json!(version.modified_by);
        out["Labels"] = json!([]);
        out["Tier"] = json!("Standard");
        out["Policies"] = json!([]);
        if let Some(key) = &version.key_id {
            out["KeyId"] = json!(key);
        }
    }
    Ok(out)
}

/// `name` or `name:version`, as GetParameter accepts.
fn split_selector(raw: &str) -> Result<(ParameterName, Option<i64>), ActionError> {
    match raw.rsplit_once(':') {
        Some((name, version)) => {
            let version: i64 = version
                .parse()
                .map_err(|_| ActionError::validation(format!("`{raw}`: the selector after `:` must be a version number")))?;
            Ok((ParameterName::new(name)?, Some(version)))
        }
        None => Ok((ParameterName::new(raw)?, None)),
    }
}

async fn find(plane: &Platform, name: &str, version: Option<i64>) -> Result<Option<Version>, ActionError> {
    match version {
        None => current_version(plane, name).await,
        Some(v) => repo::find_version(plane, name, v).await,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct GetInput {
    name: String,
    #[serde(default)]
    with_decryption: bool,
}

async fn get(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: GetInput = ctx.parse(input)?;
    let (name, version) = split_selector(&input.name)?;
    ctx.authorize(resource(name.as_str()))?;
    let found = find(ctx.platform, name.as_str(), version).await?.ok_or_else(|| not_found(&input.name))?;
    Ok(json!({ "Parameter": render(ctx, &found, input.with_decryption, false).await? }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct GetManyInput {
    names: Vec<String>,
    #[serde(default)]
    with_decryption: bool,
}

async fn get_many(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: GetManyInput = ctx.parse(input)?;
    if !(1..=10).contains(&input.names.len()) {
        return Err(ActionError::validation(format!("Names has {} entries; it must have 1..=10", input.names.len())));
    }
    let selectors = input.names.iter().map(|n| split_selector(n)).collect::<Result<Vec<_>, _>>()?;
    ctx.authorize(Resource::Service("parameters".into()))?;
    for (name, _) in &selectors {
        ctx.authorize_also("parameters:GetParameter", resource(name.as_str()))?;
    }
    let mut parameters = Vec::new();
    let mut invalid = Vec::new();
    for ((name, version), raw) in selectors.iter().zip(&input.names) {
        match find(ctx.platform, name.as_str(), *version).await? {
            Some(found) => parameters.push(render(ctx, &found, input.with_decryption, false).await?),
            None => invalid.push(raw.clone()),
        }
    }
    Ok(json!({ "Parameters": parameters, "InvalidParameters": invalid }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PathInput {
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    with_decryption: bool,
    #[serde(default)]
    max_results: Option<i64>,
    #[serde(default)]
    next_token: Option<String>,
}

async fn get_by_path(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: PathInput = ctx.parse(input)?;
    let max = crate::core::codec::bounded("MaxResults", input.max_results, 10, 1..=10)?;
    if input.path != "/" {
        ParameterName::new(input.path.trim_end_matches('/'))?;
    }
    if !input.path.starts_with('/') {
        return Err(ActionError::validation(format!("Path `{}` must start with `/`", input.path)));
    }
    ctx.authorize(resource(&input.path))?;
    let prefix = if input.path.ends_with('/') { input.path.clone() } else { format!("{}/", input.path) };
    let after = decode_token(input.next_token.as_deref())?.unwrap_or_default();
    let mut found = Vec::new();
    let mut cursor = after;
    let mut next = None;
    'scan: loop {
        let names = repo::names_after(ctx.platform, &cursor, &prefix).await?;
        if names.is_empty() {
            break;
        }
        for name in names {
            cursor.clone_from(&name);
            let Some(rest) = name.strip_prefix(&prefix) else { break 'scan };
            if !input.recursive && rest.contains('/') {
                continue;
            }
            if found.len() as i64 == max {
                next = found.last().map(|v: &Version| encode_token(&v.name));
                break 'scan;
            }
            if let Some(version) = current_version(ctx.platform, &name).await? {
                found.push(version);
            }
        }
    }
    let mut parameters = Vec::new();
    for version in &found {
        parameters.push(render(ctx, version, input.with_decryption, false).await?);
    }
    let mut out = json!({ "Parameters": parameters });
    if let Some(token) = next {
        out["NextToken"] = json!(token);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NameInput {
    name: ParameterName,
}

async fn delete(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    ctx.authorize(resource(input.name.as_str()))?;
    if !repo::delete_parameter(ctx.platform, input.name.as_str()).await? {
        return Err(not_found(input.name.as_str()));
    }
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct HistoryInput {
    name: ParameterName,
    #[serde(default)]
    with_decryption: bool,
    #[serde(default)]
    max_results: Option<i64>,
    #[serde(default)]
    next_token: Option<String>,
}

async fn history(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: HistoryInput = ctx.parse(input)?;
    let max = crate::core::codec::bounded("MaxResults", input.max_results, 50, 1..=50)?;
    ctx.authorize(resource(input.name.as_str()))?;
    let after: i64 = match decode_token(input.next_token.as_deref())? {
        Some(token) => token.parse().map_err(|_| ActionError::validation("NextToken is invalid"))?,
        None => 0,
    };
    let mut versions = repo::versions_after(ctx.platform, input.name.as_str(), after, max + 1).await?;
    if versions.is_empty() && after == 0 {
        return Err(not_found(input.name.as_str()));
    }
    let more = versions.len() as i64 > max;
    versions.truncate(max as usize);
    let mut parameters = Vec::new();
    for version in &versions {
        parameters.push(render(ctx, version, input.with_decryption, true).await?);
    }
    let mut out = json!({ "Parameters": parameters });
    if more {
        out["NextToken"] = json!(encode_token(&versions.last().map_or(0, |v| v.version).to_string()));
    }
    Ok(out)
}
