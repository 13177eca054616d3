//! The signature, checked by Debian's `xmlsec1` (the engine pysaml2 and most SPs use), never by
//! code of ours, with the IdP's certificate from the metadata as the only key.

use std::time::Duration;

use super::provider::IdentityProvider;
use super::xml::rejected;
use crate::core::error::{ActionError, ErrorCode};

/// xmlsec1 checks under way at once, host-wide: each is a process of its own, and anyone can
/// post a response shaped well enough to reach one.
const XMLSEC_PARALLEL: usize = 2;
static XMLSEC: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(XMLSEC_PARALLEL);
/// How long a response waits for a free check before it is turned away.
const XMLSEC_WAIT: Duration = Duration::from_secs(5);

/// The signature, checked by xmlsec1 with the metadata's certificate as the only key.
pub(super) async fn check_signature(document: &str, idp: &IdentityProvider, node_name: &str, id: &str) -> Result<(), ActionError> {
    let _permit = match tokio::time::timeout(XMLSEC_WAIT, XMLSEC.acquire()).await {
        Ok(permit) => permit.map_err(ActionError::internal)?,
        Err(_) => {
            return Err(ActionError::new(
                429,
                ErrorCode::TooManyRequestsException,
                "too many SAML sign-ins are being checked at once; try again in a moment",
            ));
        }
    };
    let dir = tempfile::tempdir().map_err(ActionError::internal)?;
    let message = dir.path().join("response.xml");
    tokio::fs::write(&message, document).await.map_err(ActionError::internal)?;
    for (index, certificate) in idp.certificates.iter().enumerate() {
        let pem = dir.path().join(format!("idp-{index}.pem"));
        let wrapped: Vec<&str> = certificate.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
        tokio::fs::write(&pem, format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", wrapped.join("\n")))
            .await
            .map_err(ActionError::internal)?;
        let run = tokio::process::Command::new("xmlsec1")
            .args(["--verify", "--enabled-reference-uris", "same-doc", "--enabled-key-data", "key-name", "--pubkey-cert-pem"])
            .arg(&pem)
            .args(["--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:Response"])
            .args(["--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"])
            .args(["--node-id", id])
            .arg(&message)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = match tokio::time::timeout(Duration::from_secs(10), run).await {
            Err(_) => return Err(ActionError::internal("xmlsec1 took more than 10 s to check a signature")),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(ActionError::internal("SAML sign-in needs Debian's xmlsec1 on the server: apt-get install xmlsec1"));
            }
            Ok(Err(err)) => return Err(ActionError::internal(format_args!("running xmlsec1: {err}"))),
            Ok(Ok(output)) => output,
        };
        let said = String::from_utf8_lossy(&output.stderr);
        if output.status.success() && said.lines().any(|l| l.trim() == "OK") {
            return Ok(());
        }
        tracing::debug!(node_name, stderr = %said, "xmlsec1 refused a signature");
    }
    let what = if node_name.ends_with(":Response") { "Response" } else { "assertion" };
    Err(rejected(
        ErrorCode::SAMLSignatureInvalid,
        format!("the {what}'s signature does not verify with the certificate of `{}` from its metadata", idp.entity_id),
    ))
}
