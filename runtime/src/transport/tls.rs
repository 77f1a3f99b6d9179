//! Certificates and the rustls/quinn configurations built from them.
//!
//! For development and loopback demos the cloud creates a self-signed certificate for
//! [`DEFAULT_SERVER_NAME`](super::DEFAULT_SERVER_NAME) under the tandem cache
//! ([`DevCertificate`]); a device trusts exactly that certificate. Production
//! deployments pass their own PEM files.

use super::{ALPN, TransportError, TransportLimits};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
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

/// The self-signed development certificate of a cloud peer, kept as two PEM files.
#[derive(Clone, Debug)]
pub struct DevCertificate {
    /// The certificate; devices pass it as `--ca` (it is its own CA).
    pub cert: PathBuf,
    /// The private key (mode 0600).
    pub key: PathBuf,
}

impl DevCertificate {
    /// The files under `dir` (usually `<tandem cache>/pki`).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("cloud-cert.pem"),
            key: dir.join("cloud-key.pem"),
        }
    }

    /// The files under the tandem cache (see [`crate::paths::cache_dir`]).
    pub fn default_location() -> Self {
        Self::in_dir(&crate::paths::cache_dir().join("pki"))
    }

    /// Loads the certificate and key, creating a new pair first unless both files
    /// exist (a lone key or certificate, e.g. from a crash between the two writes, is
    /// replaced). Returns whether it created them. Each file is written atomically.
    ///
    /// Not safe against two processes creating the pair at the same moment: start one
    /// `tandem-cloud` first.
    pub fn load_or_create(&self) -> Result<(Identity, bool), TransportError> {
        let created = !(self.cert.exists() && self.key.exists());
        if created {
            self.create()?;
        }
        Ok((Identity::load(&self.cert, &self.key)?, created))
    }

    fn create(&self) -> Result<(), TransportError> {
        let names = vec![
            super::DEFAULT_SERVER_NAME.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let certified =
            rcgen::generate_simple_self_signed(names).map_err(|e| TransportError::Certificate {
                what: "certificate",
                path: self.cert.clone(),
                reason: format!("cannot generate: {e}"),
            })?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e: std::io::Error| TransportError::Certificate {
                what: "certificate",
                path,
                reason: format!("cannot write: {e}"),
            }
        };
        crate::paths::write_atomic(
            &self.key,
            certified.signing_key.serialize_pem().as_bytes(),
            0o600,
        )
        .map_err(io(&self.key))?;
        crate::paths::write_atomic(&self.cert, certified.cert.pem().as_bytes(), 0o644)
            .map_err(io(&self.cert))?;
        Ok(())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server configuration: TLS 1.3, ALPN `tandem/1`, no 0-RTT, the given limits.
pub fn server_config(
    identity: Identity,
    limits: &TransportLimits,
) -> Result<quinn::ServerConfig, TransportError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
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

/// Client configuration trusting exactly the certificates in `ca` (PEM).
pub fn client_config(
    ca: &Path,
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certificates(ca, "CA certificate")? {
        roots.add(cert).map_err(|e| TransportError::Certificate {
            what: "CA certificate",
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(limits.to_quinn()));
    Ok(config)
}
