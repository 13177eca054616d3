//! The nodes' own TLS, for the one thing a node asks of another directly: a notebook's traffic
//! (`gateway::relay`). Both ends prove they are nodes of this cluster (mutual TLS 1.3), and the
//! client checks that it reached the node it meant.
//!
//! The cluster's certificate authority is an Ed25519 key whose 32-byte seed is a cluster secret
//! in the store (wrapped with the master key, like every secret), so only a holder of the
//! master key can make a node's certificate. Every node derives the same authority from the
//! seed and, at each start, makes itself a fresh key and a certificate for
//! `<node>.nodes.datasandbox` signed by it; neither is ever written anywhere. The provider is
//! ring, passed explicitly (no process-wide default is installed).

use std::sync::Arc;

use rand::RngCore;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::core::keyring::KeyRing;
use crate::core::node::{NodeTls, server_name};
use crate::core::store::Store;

/// The cluster secret that seeds the nodes' certificate authority.
const CA_SECRET: &str = "node-ca-seed";

/// A PKCS#8 v1 document of an Ed25519 key is this prefix and the key's 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// This node's TLS, under the cluster's authority (made and stored by the first node).
pub(crate) async fn node_tls(store: &Store, keys: &KeyRing, node: &str) -> Result<NodeTls, String> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let seed = super::secrets::shared_secret(store, keys, CA_SECRET, seed).await?;
    build(&seed, node)
}

/// The authority from its seed, and a fresh key and certificate for `node` signed by it.
fn build(seed: &[u8; 32], node: &str) -> Result<NodeTls, String> {
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("cannot make this node's {what}: {e}");
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(seed);
    let ca_key = KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &PKCS_ED25519)
        .map_err(|e| failed("certificate authority", &e))?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "DataSandbox nodes");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    // Every node makes the same authority: same name, same key, so each trusts the others'.
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| failed("certificate authority", &e))?;
    let issuer = Issuer::new(ca, ca_key);

    let name = server_name(node)?;
    let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| failed("key", &e))?;
    let mut leaf = CertificateParams::new(vec![name.to_str().into_owned()]).map_err(|e| failed("certificate", &e))?;
    leaf.distinguished_name.push(DnType::CommonName, node);
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).map_err(|e| failed("certificate", &e))?;

    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let private = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).map_err(|e| failed("trust store", &e))?;
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| failed("client verifier", &e))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| failed("server configuration", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), private())
        .map_err(|e| failed("server configuration", &e))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| failed("client configuration", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private())
        .map_err(|e| failed("client configuration", &e))?;
    Ok(NodeTls { server: Arc::new(server), client: Arc::new(client) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a TLS 1.3 handshake in memory between `client` (reaching `node`) and `server`.
    fn handshake(client: &NodeTls, node: &str, server: &NodeTls) -> Result<(), rustls::Error> {
        let mut c = rustls::ClientConnection::new(client.client.clone(), server_name(node).expect("name"))?;
        let mut s = rustls::ServerConnection::new(server.server.clone())?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).expect("client writes");
            }
            s.read_tls(&mut &wire[..]).expect("server reads");
            s.process_new_packets()?;
            let mut wire = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut wire).expect("server writes");
            }
            c.read_tls(&mut &wire[..]).expect("client reads");
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn nodes_of_one_cluster_authenticate_each_other() {
        let seed = [7u8; 32];
        let (a, b) = (build(&seed, "node-a").expect("a"), build(&seed, "node-b").expect("b"));
        handshake(&a, "node-b", &b).expect("a reaches b");
        handshake(&b, "node-a", &a).expect("b reaches a");
    }

    #[test]
    fn a_stranger_is_refused_either_way_and_a_node_is_checked_by_name() {
        let (a, b) = (build(&[7u8; 32], "node-a").expect("a"), build(&[7u8; 32], "node-b").expect("b"));
        let stranger = build(&[8u8; 32], "node-b").expect("stranger");
        // A server of another cluster, under the expected name: the client refuses it.
        assert!(handshake(&a, "node-b", &stranger).is_err(), "a node trusted a server of another authority");
        // A client of another cluster: the server refuses it.
        assert!(handshake(&stranger, "node-a", &a).is_err(), "a node served a client of another authority");
        // The right cluster, the wrong node: b's certificate is not a's.
        assert!(handshake(&a, "node-a", &b).is_err(), "a client accepted node-b as node-a");
    }
}
