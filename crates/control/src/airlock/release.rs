//! Release, revocation and download. A release writes a record of what was released and on
//! what grounds (the request, each file's hash, the checks and their policy version, the
//! reviewers and their votes, the times), signed with the platform's airlock key (Ed25519,
//! from a cluster secret, so every node signs alike) and recorded in the trail by its SHA-256.
//! `datasandbox airlock verify` checks such a record offline with the public key the server
//! writes to `<data-dir>/airlock-release.pub`.
//!
//! Only the researcher may download a released export's files, through links made for them
//! alone that expire (`airlock.link_hours`, 24 by default); each use is recorded; revoking
//! the release, or its expiry (`airlock.release_hours`), ends every link at once.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use policy::Resource;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::callers::{conflict, find_in, from_workspace, in_its_workspace, person, researcher_in_person, signed_in_person};
use super::repo::{self, LinkRow, RequestRow};
use super::requests::{state_changed, step};
use super::review::reviewers_needed;
use super::state::{AIRLOCK_BUCKET, Direction, RequestState};
use crate::core::codec::{decode_base64, encode_base64};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};

/// The cluster secret whose bytes are the airlock's signing key.
const SIGNING_SECRET: &str = "airlock-release-key";

/// The platform's release signing key.
async fn signing_key(plane: &Platform) -> Result<SigningKey, ActionError> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let seed = crate::cluster::shared_secret(&plane.store, &plane.keys, SIGNING_SECRET, seed).await.map_err(ActionError::internal)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes the release signing key's public half where `airlock verify` looks for it.
pub(crate) async fn publish_key(plane: &Platform) -> Result<(), ActionError> {
    let public = signing_key(plane).await?.verifying_key();
    std::fs::write(plane.data_dir.join("airlock-release.pub"), format!("{}\n", hex::encode(public.as_bytes())))
        .map_err(ActionError::internal)
}

/// `hours` in milliseconds, at the platform's time scale (`streaming.timeout_scale_ms`, which
/// tests shorten).
fn hours_ms(plane: &Platform, hours: u32) -> i64 {
    i64::from(hours) * 3600 * i64::from(plane.spec.timeout_scale_ms)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RequestInput {
    request_id: String,
}

/// A request acted on by someone other than its researcher.
async fn others_request(ctx: &mut Ctx<'_>, request_id: &str, what: &str) -> Result<(RequestRow, model::UserRef), ActionError> {
    // Who may act is settled before the request is looked up (see `review::cast_vote`).
    ctx.authorize(Resource::Service("airlock".into()))?;
    let user = signed_in_person(ctx)?;
    let request = find_in(ctx, request_id).await?;
    if request.creator == user.principal_id() {
        return Err(ActionError::new(
            403,
            ErrorCode::AccessDeniedException,
            format!("you created airlock request `{request_id}`: others {what} it, whatever roles you hold"),
        ));
    }
    Ok((request, user))
}

/// Approved → released: the signed record is written, kept with the request and recorded in
/// the trail by its hash.
pub(super) async fn release(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: RequestInput = ctx.parse(input)?;
    let (request, releaser) = others_request(ctx, &input.request_id, "release").await?;
    if request.state != RequestState::Approved {
        return Err(conflict(&request, "release it"));
    }
    let plane = ctx.platform;
    let now = now_millis();
    let expires = now + hours_ms(plane, plane.current().airlock.release_hours);
    let files = repo::files(&plane.store, &request.request_id).await?;
    let checks = repo::checks(&plane.store, &request.request_id, request.submission).await?;
    let votes = repo::votes(&plane.store, &request.request_id, request.submission).await?;
    let record = json!({
        "RequestId": request.request_id,
        "Direction": request.direction.as_str(),
        "Workspace": request.workspace,
        "Researcher": request.creator_name,
        "Justification": request.justification,
        "Submission": request.submission,
        "PolicyVersion": request.policy_version,
        "ReviewersNeeded": reviewers_needed(ctx, request.direction),
        "Files": files.iter().map(|f| json!({ "Path": f.path, "Size": f.size, "Sha256": f.sha256 })).collect::<Vec<_>>(),
        "Checks": checks.iter().map(|c| json!({ "Path": c.path, "Rule": c.rule, "Outcome": c.outcome, "Detail": c.detail })).collect::<Vec<_>>(),
        "Votes": votes.iter().map(|v| json!({
            "Reviewer": v.reviewer_name, "Decision": v.decision.as_str(), "Comment": v.comment, "CastTime": millis_to_rfc3339(v.cast),
        })).collect::<Vec<_>>(),
        "CreationTime": millis_to_rfc3339(request.created),
        "ReleasedBy": releaser.to_string(),
        "ReleaseTime": millis_to_rfc3339(now),
        "ExpiryTime": millis_to_rfc3339(expires),
    });
    let key = signing_key(plane).await?;
    let signed = sign(&key, record)?;
    let text = serde_json::to_string(&signed).map_err(ActionError::internal)?;
    if !repo::release(&plane.store, &request.request_id, &text, now, expires).await? {
        return Err(conflict(&repo::find(&plane.store, &request.request_id).await?, "release it"));
    }
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    let changed = json!({ "RequestId": request.request_id, "From": "approved", "To": "released", "ReleaseRecordSha256": digest });
    state_changed(ctx, &request.request_id, changed).await;
    Ok(
        json!({ "RequestId": request.request_id, "State": RequestState::Released.as_str(), "ReleaseRecordSha256": digest, "ExpiryTime": millis_to_rfc3339(expires) }),
    )
}

/// The record with its signature: `{Record, Signature, PublicKey}` (base64 and hex).
fn sign(key: &SigningKey, record: Value) -> Result<Value, ActionError> {
    let bytes = serde_json::to_vec(&record).map_err(ActionError::internal)?;
    let signature = key.sign(&bytes);
    Ok(
        json!({ "Record": record, "Signature": encode_base64(&signature.to_bytes()), "PublicKey": hex::encode(key.verifying_key().as_bytes()) }),
    )
}

/// Checks a signed release record against the platform's public key (hex): the record as
/// signed, by that key. Returns the request id, or what is wrong.
pub fn verify_record(document: &str, public_key_hex: &str) -> Result<String, String> {
    let document: Value = serde_json::from_str(document).map_err(|e| format!("not a release record (JSON): {e}"))?;
    let key_bytes: [u8; 32] =
        hex::decode(public_key_hex.trim()).ok().and_then(|b| b.try_into().ok()).ok_or("the public key is not 32 bytes of hex")?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|e| format!("the public key is not an Ed25519 key: {e}"))?;
    if document["PublicKey"].as_str() != Some(hex::encode(key_bytes).as_str()) {
        return Err("the record was signed with another key than this platform's".into());
    }
    let signature = document["Signature"].as_str().ok_or("the record has no Signature")?;
    let signature = decode_base64("Signature", signature).map_err(|e| e.message)?;
    let signature = Signature::from_slice(&signature).map_err(|e| format!("the Signature is malformed: {e}"))?;
    let record = &document["Record"];
    let bytes = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    key.verify(&bytes, &signature).map_err(|_| "the signature does not match the record: it was changed after it was signed".to_owned())?;
    Ok(record["RequestId"].as_str().unwrap_or_default().to_owned())
}

/// The signed release record of a released (or since revoked or expired) request, for its
/// reviewers and auditors (and the operator): it names the reviewers and where the lineage
/// checks found what they found, which its researcher is not shown (review finding); the
/// researcher's own view is `DescribeRequests`.
pub(super) async fn get_record(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: RequestInput = ctx.parse(input)?;
    ctx.authorize(Resource::Service("airlock".into()))?;
    let reader = ctx.permitted("airlock:DescribeReviewQueue", &Resource::Service("airlock".into()));
    if !reader {
        return Err(ActionError::not_found(
            ErrorCode::ResourceNotFoundException,
            format!("airlock request `{}` does not exist", input.request_id),
        ));
    }
    let request = find_in(ctx, &input.request_id).await?;
    let record = request.release_record.as_deref().ok_or_else(|| conflict(&request, "show a release record (it was never released)"))?;
    serde_json::from_str(record).map_err(ActionError::internal)
}

/// Released → revoked: every download link ends now.
pub(super) async fn revoke(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: RequestInput = ctx.parse(input)?;
    let (request, _) = others_request(ctx, &input.request_id, "revoke").await?;
    let request = expire_if_due(ctx, request).await?;
    if request.state != RequestState::Released {
        return Err(conflict(&request, "revoke it"));
    }
    step(ctx, &request.request_id, RequestState::Released, RequestState::Revoked).await?;
    let ended = repo::delete_links(&ctx.platform.store, &request.request_id).await?;
    Ok(json!({ "RequestId": request.request_id, "State": RequestState::Revoked.as_str(), "LinksEnded": ended }))
}

/// A release past its expiry becomes expired (and its links end) when next looked at.
async fn expire_if_due(ctx: &Ctx<'_>, request: RequestRow) -> Result<RequestRow, ActionError> {
    if request.state == RequestState::Released && request.expires.is_some_and(|e| e <= now_millis()) {
        if repo::transition(&ctx.platform.store, &request.request_id, RequestState::Released, RequestState::Expired, now_millis()).await? {
            repo::delete_links(&ctx.platform.store, &request.request_id).await?;
            state_changed(ctx, &request.request_id, json!({ "RequestId": request.request_id, "From": "released", "To": "expired" })).await;
        }
        return repo::find(&ctx.platform.store, &request.request_id).await;
    }
    Ok(request)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct LinkInput {
    request_id: String,
    path: String,
}

/// A download link for one file of a released export, for its researcher alone.
pub(super) async fn create_download_url(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: LinkInput = ctx.parse(input)?;
    ctx.authorize(Resource::Service("airlock".into()))?;
    let user = researcher_in_person(ctx)?;
    // Another's request is not found, as one that does not exist, and the refusal is not filed
    // under its correlation id.
    let request = repo::find(&ctx.platform.store, &input.request_id).await?;
    if request.creator != user.principal_id() {
        return Err(ActionError::not_found(
            ErrorCode::ResourceNotFoundException,
            format!("airlock request `{}` does not exist", input.request_id),
        ));
    }
    let request = find_in(ctx, &request.request_id).await?;
    if request.direction != Direction::Export {
        return Err(ActionError::validation("an import's files land in the workspace; there is nothing to download"));
    }
    let request = expire_if_due(ctx, request).await?;
    if request.state != RequestState::Released {
        return Err(conflict(&request, "download from it"));
    }
    if !repo::files(&ctx.platform.store, &request.request_id).await?.iter().any(|f| f.path == input.path) {
        return Err(ActionError::not_found(
            ErrorCode::ResourceNotFoundException,
            format!("airlock request `{}` has no file `{}`", request.request_id, input.path),
        ));
    }
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let now = now_millis();
    let expires = (now + hours_ms(ctx.platform, ctx.platform.current().airlock.link_hours)).min(request.expires.unwrap_or(i64::MAX));
    let link = LinkRow { request_id: request.request_id.clone(), path: input.path.clone(), user_id: user.principal_id(), expires };
    repo::insert_link(&ctx.platform.store, &hex::encode(Sha256::digest(token.as_bytes())), &link, now).await?;
    // Under the portal's path, where its sign-in cookie is sent.
    let url = format!("{}/portal/airlock/download/{token}", ctx.platform.public_base());
    Ok(json!({ "Url": url, "ExpiryTime": millis_to_rfc3339(expires) }))
}

#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DownloadInput {
    token: crate::core::recorded::Redacted<String>,
}

/// One use of a download link: by the user it was made for, while it and the release last.
pub(super) async fn download(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: DownloadInput = ctx.parse_recorded(input)?;
    ctx.authorize(Resource::Service("airlock".into()))?;
    let user = researcher_in_person(ctx)?;
    let gone = || {
        ActionError::new(
            403,
            ErrorCode::AccessDeniedException,
            "this download link is not valid: it expired, was revoked, or never existed",
        )
    };
    let link = repo::find_link(&ctx.platform.store, &hex::encode(Sha256::digest(input.token.0.as_bytes()))).await?.ok_or_else(gone)?;
    // The record says which file the link opens, refused or not.
    ctx.record_found("RequestId", json!(link.request_id));
    ctx.record_found("Path", json!(link.path));
    if link.user_id != user.principal_id() {
        return Err(ActionError::new(403, ErrorCode::AccessDeniedException, "this download link was made for another user"));
    }
    if link.expires <= now_millis() {
        return Err(gone());
    }
    let request = find_in(ctx, &link.request_id).await?;
    let request = expire_if_due(ctx, request).await?;
    if request.state != RequestState::Released {
        return Err(gone());
    }
    let file = repo::files(&ctx.platform.store, &request.request_id).await?.into_iter().find(|f| f.path == link.path).ok_or_else(gone)?;
    let body = crate::storage::read_internal(ctx.platform, AIRLOCK_BUCKET, &file.object_key).await?;
    if hex::encode(Sha256::digest(&body)) != file.sha256 {
        return Err(ActionError::internal(format_args!("the released copy of `{}` does not match its recorded hash", file.path)));
    }
    Ok(json!({ "RequestId": request.request_id, "Path": file.path, "Sha256": file.sha256, "Body": encode_base64(&body) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ImportsInput {
    workspace: String,
}

/// The caller's released imports into a workspace, whole (an instance lays them out under
/// `/imports` when it is given to the caller's session there).
pub(super) async fn imports(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ImportsInput = ctx.parse(input)?;
    ctx.authorize(Resource::Service("airlock".into()))?;
    let user = person(ctx)?;
    // From inside a workspace, only that workspace's imports: another's would come in with no
    // review of their coming here (review finding).
    if from_workspace(ctx) {
        in_its_workspace(ctx, &input.workspace, "what comes in").await?;
    }
    let mut files = Vec::new();
    for request in repo::list(&ctx.platform.store, Some(&user.principal_id())).await? {
        if request.direction != Direction::Import || request.workspace != input.workspace {
            continue;
        }
        let request = expire_if_due(ctx, request).await?;
        if request.state != RequestState::Released {
            continue;
        }
        for file in repo::files(&ctx.platform.store, &request.request_id).await? {
            let body = crate::storage::read_internal(ctx.platform, AIRLOCK_BUCKET, &file.object_key).await?;
            if hex::encode(Sha256::digest(&body)) != file.sha256 {
                return Err(ActionError::internal(format_args!("the released copy of `{}` does not match its recorded hash", file.path)));
            }
            files.push(json!({ "RequestId": request.request_id, "Path": file.path, "Sha256": file.sha256, "Body": encode_base64(&body) }));
        }
    }
    Ok(json!({ "Files": files }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_record_verifies_and_any_edit_or_other_key_fails() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let public = hex::encode(key.verifying_key().as_bytes());
        let signed = serde_json::to_string(
            &sign(&key, json!({ "RequestId": "ar-1", "Files": [{ "Path": "t.csv", "Sha256": "ab" }] })).expect("sign"),
        )
        .expect("json");
        assert_eq!(verify_record(&signed, &public).as_deref(), Ok("ar-1"));
        let edited = signed.replace("\"ab\"", "\"cd\"");
        assert!(verify_record(&edited, &public).expect_err("an edit").contains("changed after it was signed"));
        let other = hex::encode(SigningKey::from_bytes(&[8u8; 32]).verifying_key().as_bytes());
        assert!(verify_record(&signed, &other).is_err(), "another platform's key verified the record");
    }
}
