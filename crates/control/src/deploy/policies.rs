//! The spec's Cedar policies as a deploy puts them in force: the `service-roles` stack ends by
//! swapping the authorizer, and the trail names every policy set by its texts' hashes.

use std::sync::Arc;

use model::spec::Spec;
use policy::Authorizer;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::core::error::ActionError;
use crate::core::platform::{Effect, Platform, ServiceEvent};

/// The policies of a spec as the trail names them: name, SHA-256 of the text, length.
pub(crate) fn policy_digests(spec: &Spec) -> Value {
    spec.policies
        .iter()
        .map(|p| json!({ "Name": p.name, "Sha256": hex::encode(sha2::Sha256::digest(p.text.as_bytes())), "Bytes": p.text.len() }))
        .collect()
}

/// Puts `spec`'s policies in force. Which texts (by SHA-256) is recorded first, so the trail
/// binds every policy a decision is made under; a new set (`Effect::Gated`) is refused if
/// that record cannot be written, while a rollback to the previous set goes ahead regardless.
pub(super) async fn swap_policies(
    plane: &Platform,
    spec: &Spec,
    correlation_id: Option<String>,
    effect: Effect,
) -> Result<(), ActionError> {
    let policies: Vec<(String, String)> = spec.policies.iter().map(|p| (p.name.clone(), p.text.clone())).collect();
    let authorizer = Authorizer::load(&policies, &crate::core::actions::declarations())
        .map_err(|errors| ActionError::validation(format!("the spec's policies are invalid: {}", errors.len())))?;
    let event = ServiceEvent {
        source: "deploy",
        name: "PoliciesActivated",
        principal: "deploy.datasandbox",
        parameters: json!({ "Policies": policy_digests(spec), "RolledBack": effect == Effect::Recorded }),
        correlation_id,
        effect,
        ..ServiceEvent::default()
    };
    plane.record_service_event(event).await?;
    *plane.authorizer.write().expect("authorizer lock") = Arc::new(authorizer);
    Ok(())
}
