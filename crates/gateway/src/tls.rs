//! TLS on the listeners browsers reach: the API (portal, console, session pages, streams) and
//! the notebook origin.
//!
//! The certificate is the operator's (`[server] tls_cert`, `tls_key`, PEM), or, when the public
//! URL is `https://` and none is given, one issued at each start by a local authority whose key
//! stays in the data directory (`tls/authority.pem`, the file a browser is told to trust). The
//! files are read again on SIGHUP: connections made after it get the new certificate, and open
//! ones (a session's stream) keep theirs. A reload that fails keeps the certificate in use.
//!
//! Under TLS every cookie is `Secure` and every answer carries HSTS (see [`secure_headers`]).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long browsers keep to HTTPS for this host once told (a year).
const HSTS: &str = "max-age=31536000";

/// The listeners' TLS configuration and the files it came from.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    cert: PathBuf,
    key: PathBuf,
}

impl ServerTls {
    /// Reads the certificate chain and key at `cert` and `key`; the error says which file is wrong.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, String> {
        let config = config(cert, key)?;
        Ok(ServerTls { current: Arc::new(RwLock::new(config)), cert: cert.to_owned(), key: key.to_owned() })
    }

    /// Reads the files again; on an error the certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        Ok(())
    }

    /// What a new connection's handshake uses.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

fn config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate chain `{}` (server.tls_cert): {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("`{}` (server.tls_cert) holds no PEM certificate", cert.display()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read the private key `{}` (server.tls_key): {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| format!("the certificate `{}` and the key `{}` do not go together: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where a local authority's files are, once [`local_authority`] has made them.
pub struct LocalAuthority {
    /// The authority's certificate: what browsers and `curl --cacert` must trust.
    pub authority: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long the local authority is valid, and a certificate it issues (issued again at each
/// start, so a server's certificate is rarely more than days old).
const AUTHORITY_DAYS: i64 = 10 * 365;
const CERTIFICATE_DAYS: i64 = 397;

/// The data directory's local authority (made on first use, kept in `dir`), and a certificate
/// it issues now for `hosts` (names and addresses). The authority may issue only for the hosts
/// it was made for (name constraints: trusting it trusts nothing else); when the hosts grow,
/// a new authority is made, and browsers must be told to trust it instead.
pub fn local_authority(dir: &Path, hosts: &[String]) -> Result<LocalAuthority, String> {
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("cannot make the local authority's {what} in `{}`: {e}", dir.display());
    fs::create_dir_all(dir).map_err(|e| failed("directory", &e))?;
    let (authority, authority_key, covered) = (dir.join("authority.pem"), dir.join("authority.key"), dir.join("authority.hosts"));
    let made_for: Vec<String> = fs::read(&covered).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let kept = authority.exists() && hosts.iter().all(|h| made_for.contains(h));
    let hosts_of_authority = if kept { made_for } else { hosts.to_vec() };
    let issuer_params = |hosts: &[String]| {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "DataSandbox local authority");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.name_constraints = Some(rcgen::NameConstraints { permitted_subtrees: subtrees(hosts), excluded_subtrees: Vec::new() });
        valid_for(&mut params, AUTHORITY_DAYS);
        params
    };
    let signing_key = match fs::read_to_string(&authority_key) {
        Ok(pem) if kept => KeyPair::from_pem(&pem).map_err(|e| failed("key", &e))?,
        _ => {
            if authority.exists() {
                tracing::warn!(authority = %authority.display(), "the hosts changed: a new local authority replaces the old one; have browsers trust the new one");
            }
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| failed("key", &e))?;
            let cert = issuer_params(&hosts_of_authority).self_signed(&key).map_err(|e| failed("certificate", &e))?;
            let _ = fs::remove_file(&authority_key);
            write_private(&authority_key, key.serialize_pem().as_bytes()).map_err(|e| failed("key", &e))?;
            fs::write(&authority, cert.pem()).map_err(|e| failed("certificate", &e))?;
            fs::write(&covered, serde_json::to_vec(&hosts_of_authority).expect("names serialize")).map_err(|e| failed("host list", &e))?;
            key
        }
    };
    // The same name and key as the certificate browsers trust: what it issues chains to it.
    let issuer = Issuer::new(issuer_params(&hosts_of_authority), signing_key);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| failed("server key", &e))?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(|e| failed("server certificate", &e))?;
    params.distinguished_name.push(DnType::CommonName, hosts.first().map_or("localhost", String::as_str));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    valid_for(&mut params, CERTIFICATE_DAYS);
    let cert = params.signed_by(&key, &issuer).map_err(|e| failed("server certificate", &e))?;
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    let _ = fs::remove_file(&key_path);
    write_private(&key_path, key.serialize_pem().as_bytes()).map_err(|e| failed("server key", &e))?;
    fs::write(&cert_path, cert.pem()).map_err(|e| failed("server certificate", &e))?;
    Ok(LocalAuthority { authority, cert: cert_path, key: key_path })
}

/// What the authority may issue for: each host name (and its subdomains), each address alone.
fn subtrees(hosts: &[String]) -> Vec<rcgen::GeneralSubtree> {
    hosts
        .iter()
        .map(|host| match host.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::GeneralSubtree::IpAddress(rcgen::CidrSubnet::from_addr_prefix(ip, if ip.is_ipv4() { 32 } else { 128 })),
            Err(_) => rcgen::GeneralSubtree::DnsName(host.clone()),
        })
        .collect()
}

/// Valid from yesterday (clocks differ) to `days` from now.
fn valid_for(params: &mut CertificateParams, days: i64) {
    let today = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    let date = |day: i64| {
        let (year, month, day) = civil_date(day);
        rcgen::date_time_ymd(year, month, day)
    };
    (params.not_before, params.not_after) = (date(today - 1), date(today + days));
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_date(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let (era, day_of_era) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year as i32, month as u8, day as u8)
}

/// Writes `bytes` to `path`, readable by its owner only, from the moment it exists.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    let _ = fs::remove_file(&partial);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&partial, path)
}

/// Under TLS: every cookie `Secure`, and HSTS on every answer.
pub(crate) async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let cookies: Vec<HeaderValue> = headers.get_all(header::SET_COOKIE).iter().cloned().collect();
    if !cookies.is_empty() {
        headers.remove(header::SET_COOKIE);
        for cookie in cookies {
            let secured = match cookie.to_str() {
                Ok(text) if !text.to_ascii_lowercase().contains("; secure") => HeaderValue::from_str(&format!("{text}; Secure")).ok(),
                _ => None,
            };
            headers.append(header::SET_COOKIE, secured.unwrap_or(cookie));
        }
    }
    headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_authority_is_kept_and_what_it_issues_loads() {
        let dir = tempfile_dir();
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = local_authority(&dir, &hosts).expect("made");
        let authority = fs::read(&first.authority).expect("authority");
        ServerTls::load(&first.cert, &first.key).expect("loads");
        let second = local_authority(&dir, &hosts).expect("again");
        assert_eq!(fs::read(&second.authority).expect("authority"), authority, "the authority browsers trust stays");
        let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(dir.join("authority.key")).expect("key").permissions());
        assert_eq!(mode & 0o777, 0o600);
        let tls = ServerTls::load(&second.cert, &second.key).expect("loads");
        fs::write(&second.cert, "not a certificate").expect("write");
        assert!(tls.reload().is_err_and(|e| e.contains("server.tls_cert")), "a broken file is named");
        // More hosts than the authority was made for: a new authority, constrained to them.
        let grown = local_authority(&dir, &["localhost".to_owned(), "sandbox.example".to_owned()]).expect("grown");
        assert_ne!(fs::read(&grown.authority).expect("authority"), authority, "an authority issued beyond its constraints");
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(20_792), (2026, 12, 5));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gateway-tls-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }
}
