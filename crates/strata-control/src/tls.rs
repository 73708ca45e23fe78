//! The control plane's own PKI: on first start it creates a CA and a server certificate in the
//! data directory; clients trust that CA through their profile. TLS 1.3 only, no plaintext
//! listener anywhere.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::Path;
use std::sync::Arc;

use crate::setup::{SetupError, read_file, write_private, write_public};

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Strata control-plane CA");
    dn.push(DnType::OrganizationName, "Strata");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = time_years_from_now(0);
    p.not_after = time_years_from_now(10);
    p
}

fn time_years_from_now(years: i64) -> time::OffsetDateTime {
    let t = strata_types::time::now_unix() - 3600 + years * 365 * 86_400;
    time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Makes sure `tls/ca.pem`, `tls/server.pem` and `tls/server.key` exist and that the server
/// certificate covers `sans`. Returns the CA certificate PEM.
pub fn ensure_pki(dir: &Path, sans: &[String]) -> Result<String, SetupError> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).map_err(|e| SetupError::io(&tls, e))?;
    let ca_key_path = tls.join("ca.key");
    let ca_pem_path = tls.join("ca.pem");
    let ca_key = if ca_key_path.exists() {
        KeyPair::from_pem(&read_file(&ca_key_path)?).map_err(SetupError::tls)?
    } else {
        let key = KeyPair::generate().map_err(SetupError::tls)?;
        let cert = ca_params().self_signed(&key).map_err(SetupError::tls)?;
        write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
        write_public(&ca_pem_path, cert.pem().as_bytes())?;
        key
    };
    let ca_pem = read_file(&ca_pem_path)?;

    let sans_path = tls.join("server.sans");
    let want = sans.join(",");
    let have = std::fs::read_to_string(&sans_path).unwrap_or_default();
    if have != want || !tls.join("server.pem").exists() || !tls.join("server.key").exists() {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Strata control plane");
        params.distinguished_name = dn;
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(SetupError::tls),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = time_years_from_now(0);
        params.not_after = time_years_from_now(2);
        let key = KeyPair::generate().map_err(SetupError::tls)?;
        let issuer = Issuer::new(ca_params(), &ca_key);
        let cert = params.signed_by(&key, &issuer).map_err(SetupError::tls)?;
        write_private(&tls.join("server.key"), key.serialize_pem().as_bytes())?;
        write_public(
            &tls.join("server.pem"),
            format!("{}{}", cert.pem(), ca_pem).as_bytes(),
        )?;
        write_public(&sans_path, want.as_bytes())?;
    }
    Ok(ca_pem)
}

/// The rustls server configuration: TLS 1.3 only, ring provider, HTTP/1.1. Client
/// certificates are optional and, when presented, must chain to the host CA (`clients`).
pub fn server_config(
    dir: &Path,
    clients: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<Arc<rustls::ServerConfig>, SetupError> {
    let tls = dir.join("tls");
    let certs = rustls_pemfile::certs(&mut read_file(&tls.join("server.pem"))?.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SetupError::io(&tls.join("server.pem"), e))?;
    let key = rustls_pemfile::private_key(&mut read_file(&tls.join("server.key"))?.as_bytes())
        .map_err(|e| SetupError::io(&tls.join("server.key"), e))?
        .ok_or_else(|| {
            SetupError::Invalid(format!(
                "{}: no private key",
                tls.join("server.key").display()
            ))
        })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(SetupError::tls)?
    .with_client_cert_verifier(clients)
    .with_single_cert(certs, key)
    .map_err(SetupError::tls)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
