//! The host CA: issues the short-lived mTLS client certificates that are a host's identity
//! after a passing attestation round.
//!
//! - The certificate's key is the agent's own P-256 key; its public half was bound into the
//!   TPM quote's qualifying data (`strata_attest::round::qualifying_data`), so a certificate
//!   is only ever issued for a key that the attested TPM vouched for in that very round.
//! - The subject alternative name is `strata://hosts/{hostId}`; the lifetime is a few
//!   attestation intervals, so a host that stops passing loses its identity by expiry even if
//!   nobody revokes it.
//! - Revocation is immediate: the host document keeps the SHA-256 of the one current
//!   certificate, and the agent door accepts a certificate only when it is that one and the
//!   host is Trusted. Leaving Trusted clears it.
//!
//! The CA key lives in the store, sealed under the root key (shared by every replica), apart
//! from the server CA, so host certificates can never authenticate as anything else and
//! server certificates never as a host.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm,
};

use crate::setup::SetupError;

/// The host CA, loaded once at start.
pub struct HostCa {
    key: KeyPair,
    params: CertificateParams,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Strata host identity CA");
    dn.push(DnType::OrganizationName, "Strata");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = at(strata_types::time::now_unix() - 3600);
    p.not_after = at(strata_types::time::now_unix() + 10 * 365 * 86_400);
    p
}

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// An agent's P-256 public key (uncompressed SEC1 point), as rcgen wants it.
struct AgentKey<'a>(&'a [u8]);

impl PublicKeyData for AgentKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// The URI that names a host inside its certificate.
pub fn host_uri(host_id: &str) -> String {
    format!("strata://hosts/{host_id}")
}

/// SHA-256 of a certificate's DER, hex: how the host document names its current certificate.
pub fn fingerprint(der: &[u8]) -> String {
    strata_attest::hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// An issued certificate.
pub struct Issued {
    pub pem: String,
    pub fingerprint: String,
    pub not_after: i64,
}

impl HostCa {
    /// Loads the host CA from the store (its key sealed under the root key), creating it on
    /// first start; every replica of one control plane shares it, so a host certificate is
    /// accepted by all of them.
    pub fn load_or_create(
        store: &dyn strata_store::Store,
        root: &crate::crypto::RootKey,
    ) -> Result<HostCa, SetupError> {
        const META: &str = "fabric_host_ca";
        let fresh = {
            let key = KeyPair::generate().map_err(SetupError::tls)?;
            let cert = ca_params().self_signed(&key).map_err(SetupError::tls)?;
            serde_json::to_vec(&serde_json::json!({
                "keyPem": key.serialize_pem(),
                "certPem": cert.pem(),
            }))
            .map_err(|e| SetupError::Invalid(e.to_string()))?
        };
        let sealed = root.seal(META, &fresh)?;
        let stored = store
            .meta_init(META, sealed.as_bytes())
            .map_err(|e| SetupError::Invalid(format!("reading the host CA: {e}")))?;
        let plain = root.open(META, &String::from_utf8_lossy(&stored))?;
        let v: serde_json::Value =
            serde_json::from_slice(&plain).map_err(|e| SetupError::Invalid(e.to_string()))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| SetupError::Invalid(format!("the stored host CA lacks {k}")))
        };
        let key = KeyPair::from_pem(&field("keyPem")?).map_err(SetupError::tls)?;
        let cert_pem = field("certPem")?;
        let cert_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .ok_or_else(|| SetupError::Invalid("the stored host CA has no certificate".into()))?
            .map_err(|e| SetupError::Invalid(e.to_string()))?
            .to_vec();
        Ok(HostCa {
            key,
            params: ca_params(),
            cert_pem,
            cert_der,
        })
    }

    /// Issues a client certificate for `host_id` over the agent's P-256 public key, valid for
    /// `lifetime_secs`.
    pub fn issue(
        &self,
        host_id: &str,
        agent_public_key: &[u8],
        lifetime_secs: i64,
    ) -> Result<Issued, String> {
        if agent_public_key.len() != 65 || agent_public_key[0] != 4 {
            return Err("the agent key must be an uncompressed P-256 point (65 bytes)".into());
        }
        // Reject points that are not on the curve before putting them in a certificate: an
        // ephemeral ECDH agreement validates the peer point.
        let rng = ring::rand::SystemRandom::new();
        let ours =
            ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
                .map_err(|_| "no randomness".to_string())?;
        let theirs =
            ring::agreement::UnparsedPublicKey::new(&ring::agreement::ECDH_P256, agent_public_key);
        ring::agreement::agree_ephemeral(ours, &theirs, |_| ())
            .map_err(|_| "the agent key is not a valid P-256 public key".to_string())?;
        let now = strata_types::time::now_unix();
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("strata host {host_id}"));
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::URI(
            host_uri(host_id).try_into().map_err(|e| format!("{e}"))?,
        )];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = at(now - 60);
        let not_after = now + lifetime_secs;
        p.not_after = at(not_after);
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| "no randomness".to_string())?;
        serial[0] &= 0x7f;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p
            .signed_by(&AgentKey(agent_public_key), &issuer)
            .map_err(|e| e.to_string())?;
        Ok(Issued {
            fingerprint: fingerprint(cert.der()),
            pem: cert.pem(),
            not_after,
        })
    }

    /// The verifier the TLS listener uses: client certificates are optional (users and the
    /// CLI use bearer tokens), but one that is presented must chain to the host CA.
    pub fn client_verifier(
        &self,
    ) -> Result<std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>, SetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                self.cert_der.clone(),
            ))
            .map_err(SetupError::tls)?;
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .allow_unauthenticated()
        .build()
        .map_err(SetupError::tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_only_for_valid_points_and_fingerprints_differ() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = strata_store::SqliteStore::open(&dir.path().join("s.db"))
            .unwrap_or_else(|e| panic!("{e}"));
        let root = crate::crypto::RootKey::from_bytes(&[7u8; 32]).unwrap_or_else(|e| panic!("{e}"));
        let ca = HostCa::load_or_create(&store, &root).unwrap_or_else(|e| panic!("{e}"));
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        use ring::signature::KeyPair as _;
        let public = kp.public_key().as_ref().to_vec();
        let a = ca
            .issue("h1", &public, 30)
            .unwrap_or_else(|e| panic!("{e}"));
        let b = ca
            .issue("h1", &public, 30)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.fingerprint, b.fingerprint, "serials are random");
        assert!(a.pem.contains("BEGIN CERTIFICATE"));
        let mut bad = public.clone();
        bad[10] ^= 1;
        assert!(ca.issue("h1", &bad, 30).is_err());
        assert!(ca.issue("h1", &public[1..], 30).is_err());
        // A second load (another replica, a restart) reads the same CA back.
        let again = HostCa::load_or_create(&store, &root).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.cert_der, ca.cert_der);
    }
}
