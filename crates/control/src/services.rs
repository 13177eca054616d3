//! The services behind the pipeline. Each handler parses its typed input, authorizes, then acts.

pub(crate) mod audit_log;
pub(crate) mod deploy;
pub(crate) mod keys;
pub(crate) mod notebooks;
pub(crate) mod parameters;
pub(crate) mod storage;
pub(crate) mod streaming;

use serde_json::Value;

use crate::error::ActionError;
use crate::pipeline::Ctx;

pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, name: &str, input: Value) -> Result<Value, ActionError> {
    let (service, action) = name.split_once(':').expect("registered action names have a colon");
    match service {
        "parameters" => parameters::dispatch(ctx, action, input).await,
        "storage" => storage::dispatch(ctx, action, input).await,
        "keys" => keys::dispatch(ctx, action, input).await,
        "notebooks" => notebooks::dispatch(ctx, action, input).await,
        "audit" => audit_log::dispatch(ctx, action, input).await,
        "streaming" => streaming::dispatch(ctx, action, input).await,
        "deploy" => deploy::dispatch(ctx, action, input).await,
        "identity" => match action {
            "CreateSessionToken" => crate::identity::create_session_token(ctx, input).await,
            "GetCallerIdentity" => crate::identity::get_caller_identity(ctx, input).await,
            "SignIn" => crate::identity::sign_in(ctx, input).await,
            "AssumeRoleWithSAML" => crate::identity::assume_federated_role(ctx, input, "SAML").await,
            "AssumeRoleWithWebIdentity" => crate::identity::assume_federated_role(ctx, input, "OIDC").await,
            "CreateLocalUser" => crate::identity::local::create(ctx, input).await,
            "DeleteLocalUser" => crate::identity::local::delete(ctx, input).await,
            "UnlockLocalUser" => crate::identity::local::unlock(ctx, input).await,
            "AssociateSoftwareToken" => crate::identity::local::associate(ctx, input).await,
            "VerifySoftwareToken" => crate::identity::local::verify_token(ctx, input).await,
            _ => Err(unregistered(name)),
        },
        _ => Err(unregistered(name)),
    }
}

/// A registered action with no handler is our bug, not the caller's.
pub(crate) fn unregistered(name: &str) -> ActionError {
    ActionError::internal(format_args!("action `{name}` is registered but has no handler"))
}

/// An optional numeric member with its default, checked against its allowed range.
pub(crate) fn bounded(member: &str, value: Option<i64>, default: i64, range: std::ops::RangeInclusive<i64>) -> Result<i64, ActionError> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ActionError::validation(format!("{member} {value} is outside {}..={}", range.start(), range.end())))
    }
}

/// Decodes a base64 member, naming it in the error.
pub(crate) fn decode_base64(member: &str, value: &str) -> Result<Vec<u8>, ActionError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|err| ActionError::validation(format!("`{member}` is not valid base64: {err}")))
}

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Pagination tokens are opaque to callers: base64 of the position to resume after.
pub(crate) fn decode_token(token: Option<&str>) -> Result<Option<String>, ActionError> {
    let Some(token) = token else { return Ok(None) };
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| ActionError::validation("the pagination token is invalid; pass the token a previous response returned"))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| ActionError::validation("the pagination token is invalid; pass the token a previous response returned"))
}

pub(crate) fn encode_token(position: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position.as_bytes())
}
