//! Finding 14: the streaming-URL key is created owner-only (see `control`'s
//! `attack_f14_the_url_key_is_never_readable_by_others_while_it_is_made`), and even with the
//! key in hand a URL made for one user is not redeemed as another: redemption compares the
//! URL's stored row with its claims.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::streaming::{open, server, streaming_url};

#[test]
fn f14_a_streaming_url_re_signed_for_another_user_opens_nothing() {
    let server = server(&[]);
    // The attacker gets a URL for themselves, and (finding 14's race) the signing key.
    let url = streaming_url(&server, "mallory");
    let key = std::fs::read(server.data_dir().join("streaming-url.key")).expect("the key");
    assert_eq!(key.len(), 32);
    let token = &url[url.find("/streaming/").expect("a streaming URL") + "/streaming/".len()..];
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(token.split('.').next().expect("claims")).expect("base64")).expect("JSON");
    // The same URL row, now claiming the victim, a local user (the portal's USERPOOL).
    claims["i"] = json!("victim");
    claims["t"] = json!("USERPOOL");
    let bytes = serde_json::to_vec(&claims).expect("JSON");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(&bytes);
    let forged = format!("{}.{}", b64.encode(&bytes), b64.encode(mac.finalize().into_bytes()));
    let opened = open(&server, &url.replace(token, &forged));
    assert_eq!(opened.status, 403, "a session as the victim: {}", opened.body);
    assert!(opened.body.contains("StreamingURLMismatch"), "{}", opened.body);
    let sessions = server.ok("streaming:DescribeSessions", json!({ "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet" }));
    assert_eq!(sessions["Sessions"], json!([]), "no session was made");
    let refused = server.audit(&[("EventName", "RedeemStreamingURL")]);
    assert_eq!(refused[0]["errorCode"], "StreamingURLMismatch", "the refusal is on the record");
    // The genuine URL still works.
    assert_eq!(open(&server, &url).status, 200);
}
