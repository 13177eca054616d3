//! The cryptographic actions: blobs of AES-256-GCM under a key's current material, with a
//! header naming the key and version and the encryption context as associated data.

use policy::Resource;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};

use super::repo::KeyRow;
use super::rows::{DAY_MS, authorized_key, invalid_ciphertext, key_arn, material, require_enabled, resolve, rotate};
use crate::core::codec::{decode_base64, encode_base64};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::keyring::{open, seal};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::now_millis;

const MAGIC: &[u8; 4] = b"DSK1";

/// The additional authenticated data: the blob's header plus the encryption context, with
/// its pairs sorted so that member order does not matter.
fn aad(header: &[u8], context: &std::collections::BTreeMap<String, String>) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(serde_json::to_string(context).expect("a map of strings serializes").as_bytes());
    aad
}

/// Encrypts under the key's current material, rotating first when its period has passed.
pub(crate) async fn encrypt_with(
    plane: &Platform,
    key: &KeyRow,
    plaintext: &[u8],
    context: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<u8>, ActionError> {
    require_enabled(key)?;
    let mut version = key.current_version;
    if key.rotation_period_days.is_some_and(|days| now_millis() >= key.last_rotated + days * DAY_MS) {
        version = rotate(plane, key).await?;
    }
    let cipher = material(plane, &key.key_id, version).await?;
    let mut header = MAGIC.to_vec();
    header.push(key.key_id.len() as u8);
    header.extend_from_slice(key.key_id.as_bytes());
    header.extend_from_slice(&(version as u32).to_be_bytes());
    let sealed = seal(&cipher, plaintext, &aad(&header, context));
    Ok([header, sealed].concat())
}

/// Decrypts a blob made by [`encrypt_with`]; returns the key it was made with.
pub(crate) async fn decrypt_blob(
    plane: &Platform,
    blob: &[u8],
    context: &std::collections::BTreeMap<String, String>,
) -> Result<(KeyRow, Vec<u8>), ActionError> {
    let (key_id, version, header_len) = parse_header(blob).ok_or_else(invalid_ciphertext)?;
    let key = resolve(plane, &key_id).await.map_err(|_| invalid_ciphertext())?;
    require_enabled(&key)?;
    let cipher = material(plane, &key.key_id, version).await?;
    let plaintext = open(&cipher, &blob[header_len..], &aad(&blob[..header_len], context)).map_err(|()| invalid_ciphertext())?;
    Ok((key, plaintext))
}

/// The key a blob names, without decrypting it (to authorize before doing anything).
pub(crate) fn blob_key_id(blob: &[u8]) -> Option<String> {
    parse_header(blob).map(|(id, _, _)| id)
}

fn parse_header(blob: &[u8]) -> Option<(String, i64, usize)> {
    let rest = blob.strip_prefix(MAGIC)?;
    let (&len, rest) = rest.split_first()?;
    // A key id holds no NUL (a ciphertext naming one was not ours; PostgreSQL's text cannot).
    let id = std::str::from_utf8(rest.get(..len as usize)?).ok().filter(|id| !id.contains('\0'))?.to_owned();
    let version = u32::from_be_bytes(rest.get(len as usize..len as usize + 4)?.try_into().ok()?);
    Some((id, i64::from(version), MAGIC.len() + 1 + len as usize + 4))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct GenerateDataKeyInput {
    key_id: String,
    #[serde(default)]
    key_spec: Option<String>,
    #[serde(default)]
    number_of_bytes: Option<i64>,
    #[serde(default)]
    encryption_context: std::collections::BTreeMap<String, String>,
}

pub(super) async fn generate_data_key(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: GenerateDataKeyInput = ctx.parse(input)?;
    let size = match (input.key_spec.as_deref(), input.number_of_bytes) {
        (Some(_), Some(_)) => return Err(ActionError::validation("give KeySpec or NumberOfBytes, not both")),
        (Some("AES_256"), None) | (None, None) => 32,
        (Some("AES_128"), None) => 16,
        (Some(other), None) => return Err(ActionError::validation(format!("KeySpec `{other}` is not AES_256 or AES_128"))),
        (None, Some(n)) if (1..=1024).contains(&n) => n as usize,
        (None, Some(n)) => return Err(ActionError::validation(format!("NumberOfBytes {n} is outside 1..=1024"))),
    };
    let key = authorized_key(ctx, &input.key_id).await?;
    let mut plaintext = vec![0u8; size];
    rand::rngs::OsRng.fill_bytes(&mut plaintext);
    let blob = encrypt_with(ctx.platform, &key, &plaintext, &input.encryption_context).await?;
    Ok(
        json!({ "CiphertextBlob": encode_base64(&blob), "Plaintext": encode_base64(&plaintext), "KeyId": key_arn(ctx.platform, &key.key_id) }),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct EncryptInput {
    key_id: String,
    plaintext: String,
    #[serde(default)]
    encryption_context: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    encryption_algorithm: Option<String>,
}

pub(super) async fn encrypt(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: EncryptInput = ctx.parse(input)?;
    let plaintext = decode_base64("Plaintext", &input.plaintext)?;
    if !(1..=4096).contains(&plaintext.len()) {
        return Err(ActionError::validation(format!("Plaintext is {} bytes; it must be 1..=4096", plaintext.len())));
    }
    if input.encryption_algorithm.as_deref().is_some_and(|a| a != "SYMMETRIC_DEFAULT") {
        return Err(ActionError::validation("EncryptionAlgorithm must be SYMMETRIC_DEFAULT"));
    }
    let key = authorized_key(ctx, &input.key_id).await?;
    let blob = encrypt_with(ctx.platform, &key, &plaintext, &input.encryption_context).await?;
    Ok(
        json!({ "CiphertextBlob": encode_base64(&blob), "KeyId": key_arn(ctx.platform, &key.key_id), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT" }),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DecryptInput {
    ciphertext_blob: String,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    encryption_context: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    encryption_algorithm: Option<String>,
}

pub(super) async fn decrypt(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: DecryptInput = ctx.parse(input)?;
    let blob = decode_base64("CiphertextBlob", &input.ciphertext_blob)?;
    if input.encryption_algorithm.as_deref().is_some_and(|a| a != "SYMMETRIC_DEFAULT") {
        return Err(ActionError::validation("EncryptionAlgorithm must be SYMMETRIC_DEFAULT"));
    }
    let Some(named) = blob_key_id(&blob) else {
        ctx.authorize(Resource::Key { id: "*".into(), aliases: Vec::new() })?;
        return Err(invalid_ciphertext());
    };
    let key = authorized_key(ctx, &named).await?;
    if let Some(expected) = &input.key_id {
        let expected = resolve(ctx.platform, expected).await?;
        if expected.key_id != key.key_id {
            return Err(ActionError::new(
                400,
                ErrorCode::IncorrectKeyException,
                "the ciphertext was made with a different key than KeyId names",
            ));
        }
    }
    let (key, plaintext) = decrypt_blob(ctx.platform, &blob, &input.encryption_context).await?;
    Ok(
        json!({ "Plaintext": encode_base64(&plaintext), "KeyId": key_arn(ctx.platform, &key.key_id), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT" }),
    )
}
