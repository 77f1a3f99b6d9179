//! Certificates and the rustls/quinn configurations built from them: mutual TLS always,
//! with the certificates of [`super::pki`].

use super::{ALPN, TransportError, TransportLimits};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads a PEM certificate chain and a PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TransportError> {
        let chain = load_certificates(cert, "certificate")?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TransportError::Certificate {
            what: "private key",
            path: key.to_path_buf(),
            reason: pem_reason(e),
        })?;
        Ok(Self { chain, key })
    }
}

/// Reads every certificate of a PEM file; at least one must be present.
pub fn load_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let err = |reason: String| TransportError::Certificate {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(pem_reason(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(pem_reason(e)))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn pem_reason(err: rustls::pki_types::pem::Error) -> String {
    match err {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM item of that type in the file".into()
        }
        other => format!("not valid PEM ({other:?})"),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certificates(ca, "CA certificate")? {
        roots.add(cert).map_err(|e| TransportError::Certificate {
            what: "CA certificate",
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Server configuration: TLS 1.3, ALPN `tandem/1`, no 0-RTT, the given limits, and a
/// client certificate required that chains to the CA in `ca` (the allowlist is checked
/// per connection by the server, see [`super::pki::allowed_name`]).
pub fn server_config(
    identity: Identity,
    ca: &Path,
    limits: &TransportLimits,
) -> Result<quinn::ServerConfig, TransportError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca)?),
        provider(),
    )
    .build()
    .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // 0-RTT data is replayable; tandem never accepts it.
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(limits.to_quinn()));
    Ok(config)
}

/// The endpoint configuration of a server with `identity`: its stateless-reset key and
/// the key of its connection IDs are derived from the identity's private key
/// (HMAC-SHA256 under fixed labels), so the same cloud restarted on the same address
/// recognises the connection IDs of its previous process and answers their packets with
/// resets the devices can verify (RFC 9000, 10.3): they reconnect at once instead of
/// waiting out the idle timeout. Both keys are as secret as the private key.
pub fn server_endpoint_config(identity: &Identity) -> quinn::EndpointConfig {
    let base = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, identity.key.secret_der());
    let derive = |label: &[u8]| ring::hmac::sign(&base, label);
    let reset = derive(b"tandem/1 QUIC stateless reset key");
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset.as_ref(),
    )));
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&derive(b"tandem/1 QUIC connection ID key").as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// Client configuration: trusts exactly the certificates in `ca` (PEM) and presents
/// `identity` as the device's client certificate.
pub fn client_config(
    ca: &Path,
    identity: Identity,
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, TransportError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(limits.to_quinn()));
    Ok(config)
}
