//! What the analyst portal needs: AppStream's user-stack associations (which users may launch
//! which stacks: `BatchAssociateUserStack`, `BatchDisassociateUserStack`,
//! `DescribeUserStackAssociations`) and the launch itself, `CreateUserStreamingURL`
//! (DataSandbox's): a signed-in user asks for a streaming URL of a stack they are associated
//! with, for themselves only, and opens it like any other (single use, 60 s).

use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use policy::Resource;

use super::fleets::fleet_row;
use super::repo;
use super::sessions::{access_mode, portal_user, session_status};
use super::stacks::stack_row;
use super::urls::{UrlFor, mint_url};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::store::now_millis;

#[derive(Deserialize, Clone)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Association {
    stack_name: String,
    user_name: String,
    authentication_type: String,
    /// A SAML user's identity provider (its entity id, or an OpenID provider's issuer URL):
    /// DataSandbox's addition, since two providers may each have a user of one name.
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    send_email_notification: Option<bool>,
}

impl Association {
    /// The issuer as stored: '' for a USERPOOL user.
    fn issuer(&self) -> &str {
        self.issuer.as_deref().unwrap_or_default()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct BatchInput {
    user_stack_associations: Vec<Association>,
}

fn check_batch(input: &BatchInput) -> Result<(), ActionError> {
    let count = input.user_stack_associations.len();
    if !(1..=25).contains(&count) {
        return Err(ActionError::validation(format!("UserStackAssociations must hold 1..=25 entries, not {count}")));
    }
    if let Some(bad) = input.user_stack_associations.iter().find(|a| !["USERPOOL", "SAML"].contains(&a.authentication_type.as_str())) {
        return Err(ActionError::validation(format!(
            "AuthenticationType `{}` is not USERPOOL or SAML (API users get streaming URLs instead)",
            bad.authentication_type
        )));
    }
    for association in &input.user_stack_associations {
        let mode = access_mode(&association.authentication_type);
        if let Err(err) = model::UserRef::from_parts(mode, association.issuer.as_deref(), &association.user_name) {
            let hint = match mode {
                model::AccessMode::Federated => "; a SAML user is named with their identity provider's Issuer",
                _ => "; a USERPOOL user has no Issuer",
            };
            return Err(ActionError::validation(format!("{err}{hint}")));
        }
    }
    Ok(())
}

fn association_json(a: &Association) -> Value {
    let mut out = json!({ "StackName": a.stack_name, "UserName": a.user_name, "AuthenticationType": a.authentication_type });
    if let Some(issuer) = &a.issuer {
        out["Issuer"] = json!(issuer);
    }
    out
}

/// `streaming:BatchAssociateUserStack`: each entry that names no stack (or, for USERPOOL, no
/// local user) is reported in `errors`, as AWS does; the others are made.
pub(crate) async fn associate(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: BatchInput = ctx.parse(input)?;
    check_batch(&input)?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    let plane = ctx.platform;
    let mut errors = Vec::new();
    for association in &input.user_stack_associations {
        let _ = association.send_email_notification;
        let stack =
            sqlx::query("SELECT name FROM stacks WHERE name = $1").bind(&association.stack_name).fetch_optional(&plane.store.pool).await?;
        let user_known =
            association.authentication_type != "USERPOOL" || crate::identity::local::exists(&plane.store, &association.user_name).await?;
        let problem = match (stack.is_some(), user_known) {
            (false, _) => Some(("STACK_NOT_FOUND", format!("no stack `{}`", association.stack_name))),
            (true, false) => Some(("USER_NAME_NOT_FOUND", format!("no local user `{}`", association.user_name))),
            (true, true) => None,
        };
        match problem {
            Some((code, message)) => {
                errors.push(json!({ "UserStackAssociation": association_json(association), "ErrorCode": code, "ErrorMessage": message }))
            }
            None => {
                sqlx::query(
                    "INSERT INTO user_stack_associations (stack, user_name, authentication_type, issuer, created) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (stack, user_name, authentication_type, issuer) DO NOTHING",
                )
                .bind(&association.stack_name)
                .bind(&association.user_name)
                .bind(&association.authentication_type)
                .bind(association.issuer())
                .bind(now_millis())
                .execute(&plane.store.pool)
                .await?;
            }
        }
    }
    Ok(json!({ "errors": errors }))
}

/// `streaming:BatchDisassociateUserStack`.
pub(crate) async fn disassociate(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: BatchInput = ctx.parse(input)?;
    check_batch(&input)?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    for association in &input.user_stack_associations {
        sqlx::query("DELETE FROM user_stack_associations WHERE stack = $1 AND user_name = $2 AND authentication_type = $3 AND issuer = $4")
            .bind(&association.stack_name)
            .bind(&association.user_name)
            .bind(&association.authentication_type)
            .bind(association.issuer())
            .execute(&ctx.platform.store.pool)
            .await?;
    }
    Ok(json!({ "errors": [] }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DescribeInput {
    #[serde(default)]
    stack_name: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    authentication_type: Option<String>,
}

fn caller_user(ctx: &Ctx<'_>) -> Option<model::UserRef> {
    portal_user(&ctx.caller.principal)
}

/// What a SAML user may launch: every stack their roles permit them to stream as themselves.
async fn permitted_stacks(ctx: &Ctx<'_>, me: &str) -> Result<Vec<String>, ActionError> {
    let rows = sqlx::query("SELECT name FROM stacks ORDER BY name").fetch_all(&ctx.platform.store.pool).await?;
    let mut stacks = Vec::new();
    for row in rows {
        let name: String = row.try_get("name")?;
        if ctx.permitted("streaming:CreateUserStreamingURL", &Resource::Stack { name: name.clone(), user: me.to_owned() }) {
            stacks.push(name);
        }
    }
    Ok(stacks)
}

/// `streaming:DescribeUserStackAssociations`: operators see any; a signed-in user their own.
pub(crate) async fn describe(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let mut input: DescribeInput = ctx.parse(input)?;
    if input.stack_name.is_none() && input.user_name.is_none() {
        return Err(ActionError::validation("name a StackName, or a UserName with its AuthenticationType"));
    }
    if input.user_name.is_some() != input.authentication_type.is_some() {
        return Err(ActionError::validation("UserName and AuthenticationType go together"));
    }
    let mut granted = Vec::new();
    let mut issuer: Option<String> = None;
    match caller_user(ctx) {
        Some(me) => {
            if input.user_name.as_deref().is_some_and(|u| u != me.user().as_str()) {
                return Err(ActionError::new(403, ErrorCode::AccessDeniedException, "a user sees only their own associations"));
            }
            if me.mode() == model::AccessMode::Federated {
                granted = permitted_stacks(ctx, me.user().as_str()).await?;
            }
            input.user_name = Some(me.user().to_string());
            input.authentication_type = Some(me.mode().authentication_type().into());
            issuer = Some(me.issuer_str().unwrap_or_default().to_owned());
            ctx.authorize_always();
        }
        None => ctx.authorize(Resource::Service("streaming".into()))?,
    }
    let rows = sqlx::query(
        "SELECT stack, user_name, authentication_type, issuer FROM user_stack_associations
         WHERE ($1 IS NULL OR stack = $1) AND ($2 IS NULL OR user_name = $2) AND ($3 IS NULL OR authentication_type = $3)
         AND ($4 IS NULL OR issuer = $4)
         ORDER BY stack, user_name",
    )
    .bind(&input.stack_name)
    .bind(&input.user_name)
    .bind(&input.authentication_type)
    .bind(&issuer)
    .fetch_all(&ctx.platform.store.pool)
    .await?;
    let mut associations = Vec::new();
    // A SAML user's roles grant stacks as AppStream's IAM roles do: they count as associations.
    for stack in granted.iter().filter(|s| input.stack_name.as_ref().is_none_or(|n| n == *s)) {
        associations.push(json!({ "StackName": stack, "UserName": input.user_name, "AuthenticationType": "SAML" }));
    }
    for row in rows {
        if granted.contains(&row.try_get::<String, _>("stack")?) {
            continue;
        }
        let mut association = json!({
            "StackName": row.try_get::<String, _>("stack")?,
            "UserName": row.try_get::<String, _>("user_name")?,
            "AuthenticationType": row.try_get::<String, _>("authentication_type")?,
        });
        if let Some(issuer) = row.try_get::<Option<String>, _>("issuer")?.filter(|i| !i.is_empty()) {
            association["Issuer"] = json!(issuer);
        }
        associations.push(association);
    }
    Ok(json!({ "UserStackAssociations": associations }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct LaunchInput {
    stack_name: String,
    #[serde(default)]
    application_id: Option<String>,
}

/// `streaming:CreateUserStreamingURL`: a signed-in user's own streaming URL for a stack they
/// are associated with, or, for a SAML user, that their roles permit them to stream as
/// themselves (60 s, single use, like any streaming URL).
pub(crate) async fn launch(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: LaunchInput = ctx.parse(input)?;
    let me = caller_user(ctx).ok_or_else(|| {
        ActionError::validation(
            "CreateUserStreamingURL is for users signed in on the portal (their sign-in's token); operators use CreateStreamingURL",
        )
    })?;
    let kind = me.mode().authentication_type();
    let plane = ctx.platform;
    let associated = sqlx::query(
        "SELECT stack FROM user_stack_associations WHERE stack = $1 AND user_name = $2 AND authentication_type = $3 AND issuer = $4",
    )
    .bind(&input.stack_name)
    .bind(me.user().as_str())
    .bind(kind)
    .bind(me.issuer_str().unwrap_or_default())
    .fetch_optional(&plane.store.pool)
    .await?
    .is_some();
    let stack_resource = Resource::Stack { name: input.stack_name.clone(), user: me.user().to_string() };
    if associated {
        // The association is the grant, and the URL is the caller's own.
        ctx.authorize_always();
    } else if kind == "SAML" {
        ctx.authorize(stack_resource)?;
    } else {
        return Err(ActionError::new(
            403,
            ErrorCode::AccessDeniedException,
            format!("you are not associated with stack `{}`", input.stack_name),
        ));
    }
    let stack = stack_row(plane, &input.stack_name).await?;
    let fleet_name: String = stack.try_get::<Option<String>, _>("fleet")?.ok_or_else(|| {
        ActionError::new(400, ErrorCode::OperationNotPermittedException, format!("stack `{}` has no fleet", input.stack_name))
    })?;
    let fleet = fleet_row(plane, &fleet_name).await?;
    // A SAML user's session lasts no longer than their sign-in (its `SessionDuration`), as
    // AppStream's federated sessions do.
    let max_duration = match (kind, ctx.caller.expires) {
        ("SAML", Some(expires)) => {
            let left = (expires - now_millis()) / 1000;
            if left < 60 {
                return Err(ActionError::new(401, ErrorCode::ExpiredTokenException, "your sign-in expires within a minute; sign in again"));
            }
            Some(left)
        }
        _ => None,
    };
    // The application must be in the image's catalog, as for CreateStreamingURL: it reaches
    // records and the usage reports operators open (finding 17).
    if let Some(app) = &input.application_id {
        let image: String = fleet.try_get("image")?;
        let catalog = crate::instances::catalog(plane, &image)?;
        if !catalog.iter().any(|a| a == app) {
            let shown = audit::bound::cut(app, 64);
            return Err(ActionError::validation(format!(
                "ApplicationId `{shown}` is not in image `{image}`'s catalog ({})",
                catalog.join(", ")
            )));
        }
    }
    let url = UrlFor {
        stack: input.stack_name,
        fleet: fleet_name,
        user: me,
        application: input.application_id,
        session_context: None,
        max_duration,
    };
    mint_url(plane, &fleet, url, 60).await
}

/// `streaming:DescribeUserSessions` (DataSandbox's, the portal's "my sessions"): a signed-in
/// local user's own sessions, newest first (at most 20), each as its session page sees it —
/// state, end reason, and every command an operator ran in its instance.
pub(crate) async fn my_sessions(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::core::caller::Empty = ctx.parse(input)?;
    let me = caller_user(ctx).ok_or_else(|| {
        ActionError::validation(
            "DescribeUserSessions is for users signed in on the portal (their sign-in's token); operators use DescribeSessions",
        )
    })?;
    ctx.authorize_always();
    let plane = ctx.platform;
    let ids = repo::list_user_session_ids(&plane.store, &me).await?;
    let mut sessions = Vec::new();
    for id in ids {
        let mut status = session_status(plane, &id).await?;
        // The notebook URL belongs to the session's own page.
        if let Some(fields) = status.as_object_mut() {
            fields.remove("NotebookUrl");
        }
        sessions.push(status);
    }
    Ok(json!({ "Sessions": sessions }))
}
