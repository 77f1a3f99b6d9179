//! A small certificate authority for mutual TLS: the cloud's CA signs the cloud's own
//! certificate and every device's; the cloud accepts only devices whose certificate
//! chains to its CA *and* whose name is on its allowlist.
//!
//! Layout of a PKI directory (default `<tandem cache>/pki`):
//!
//! | file | what |
//! |------|------|
//! | `ca-cert.pem`, `ca-key.pem` | the CA (devices trust `ca-cert.pem`) |
//! | `cloud-cert.pem`, `cloud-key.pem` | the cloud's certificate, for [`DEFAULT_SERVER_NAME`] |
//! | `allowlist.txt` | devices the cloud accepts: `NAME SHA256` per line (`#` comments) |
//! | `devices/NAME-cert.pem`, `devices/NAME-key.pem` | each issued device identity |
//!
//! Keys are written with mode 0600, every file atomically. Each allowlist line pins one
//! certificate by its SHA-256 fingerprint, so re-issuing a name revokes the name's
//! previous certificate, and deleting the line revokes the device. The allowlist is
//! re-read for each new connection.

use super::{DEFAULT_SERVER_NAME, TransportError, tls::Identity};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A PKI directory.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

/// Files of one issued device identity.
#[derive(Clone, Debug)]
pub struct DeviceFiles {
    /// The device certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
}

fn pki_error(path: &Path, reason: impl std::fmt::Display) -> TransportError {
    TransportError::Certificate {
        what: "PKI file",
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The CA's parameters. Rebuilt identically whenever the CA signs, so the issuer name
/// and key identifier match the stored CA certificate without parsing it.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "tandem development CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Whether `name` can be a device name: a lowercase DNS label (the certificate's subject
/// alternative name; lowercase only, so names compare exactly).
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// One allowlisted device: its name and its certificate's SHA-256 fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowEntry {
    /// The device name (its certificate's subject alternative name).
    pub name: String,
    /// SHA-256 of the certificate's DER encoding.
    pub fingerprint: [u8; 32],
}

impl AllowEntry {
    fn line(&self) -> String {
        let hex: String = self
            .fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{} {hex}", self.name)
    }

    fn parse(line: &str) -> Option<Self> {
        let (name, hex) = line.split_once(char::is_whitespace)?;
        let hex = hex.trim();
        if !valid_node_name(name) || hex.len() != 64 {
            return None;
        }
        let mut fingerprint = [0u8; 32];
        for (i, byte) in fingerprint.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self {
            name: name.to_string(),
            fingerprint,
        })
    }
}

/// SHA-256 of a certificate's DER bytes.
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl Pki {
    /// The PKI in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The PKI under the tandem cache (see [`crate::paths::cache_dir`]).
    pub fn default_location() -> Self {
        Self::new(crate::paths::cache_dir().join("pki"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate devices trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca-cert.pem")
    }

    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }

    /// The allowlist file.
    pub fn allowlist_path(&self) -> PathBuf {
        self.dir.join("allowlist.txt")
    }

    /// The files a device identity `node` is (or would be) stored in.
    pub fn device_files(&self, node: &str) -> DeviceFiles {
        let dir = self.dir.join("devices");
        DeviceFiles {
            cert: dir.join(format!("{node}-cert.pem")),
            key: dir.join(format!("{node}-key.pem")),
        }
    }

    /// Whether the CA exists.
    pub fn is_initialised(&self) -> bool {
        self.ca_cert().exists() && self.ca_key().exists()
    }

    /// Creates the CA and the cloud's certificate. Refuses to overwrite an existing CA
    /// (that would orphan every issued device).
    pub fn init(&self) -> Result<(), TransportError> {
        if self.ca_cert().exists() || self.ca_key().exists() {
            return Err(pki_error(
                &self.ca_cert(),
                "a CA already exists here; remove the directory to start over",
            ));
        }
        let ca_key = KeyPair::generate().map_err(|e| pki_error(&self.ca_key(), e))?;
        let ca_cert = ca_params()
            .and_then(|p| p.self_signed(&ca_key))
            .map_err(|e| pki_error(&self.ca_cert(), e))?;
        // Key first: a crash before the certificate is written leaves no usable CA, and
        // `init` can simply be run again after removing the stray key.
        write(&self.ca_key(), ca_key.serialize_pem().as_bytes(), 0o600)?;
        write(&self.ca_cert(), ca_cert.pem().as_bytes(), 0o644)?;
        let names = vec![
            DEFAULT_SERVER_NAME.to_string(),
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ];
        self.sign_leaf(
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
            &self.dir.join("cloud-cert.pem"),
            &self.dir.join("cloud-key.pem"),
        )?;
        if !self.allowlist_path().exists() {
            write(
                &self.allowlist_path(),
                b"# devices tandem-cloud accepts: NAME SHA256 (written by `tandem-cloud ca issue`)\n",
                0o644,
            )?;
        }
        Ok(())
    }

    /// The cloud's own identity.
    pub fn cloud_identity(&self) -> Result<Identity, TransportError> {
        Identity::load(
            &self.dir.join("cloud-cert.pem"),
            &self.dir.join("cloud-key.pem"),
        )
    }

    /// Issues a client certificate for device `node` and adds it to the allowlist.
    pub fn issue(&self, node: &str) -> Result<DeviceFiles, TransportError> {
        if !valid_node_name(node) {
            return Err(pki_error(
                &self.allowlist_path(),
                format!(
                    "'{node}' is not a valid device name (lowercase letters, digits and '-', at \
                     most 63)"
                ),
            ));
        }
        let files = self.device_files(node);
        let der = self.sign_leaf(
            vec![node.to_string()],
            ExtendedKeyUsagePurpose::ClientAuth,
            &files.cert,
            &files.key,
        )?;
        // Replace any line for this name: the previous certificate is revoked.
        let entry = AllowEntry {
            name: node.to_string(),
            fingerprint: fingerprint(&der),
        };
        let old = std::fs::read_to_string(self.allowlist_path()).unwrap_or_default();
        let mut list: String = old
            .lines()
            .filter(|l| AllowEntry::parse(l.trim()).is_none_or(|e| e.name != node))
            .flat_map(|l| [l, "\n"])
            .collect();
        list.push_str(&entry.line());
        list.push('\n');
        write(&self.allowlist_path(), list.as_bytes(), 0o644)?;
        Ok(files)
    }

    /// The allowlisted devices. Blank lines and `#` comments are skipped; a malformed
    /// line is skipped with a warning (it admits nobody). A missing file is an empty list.
    pub fn allowlist(&self) -> Result<Vec<AllowEntry>, TransportError> {
        let path = self.allowlist_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(pki_error(&path, e)),
        };
        let mut entries = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match AllowEntry::parse(line) {
                Some(entry) => entries.push(entry),
                None => tracing::warn!(
                    "{}:{}: ignored, expected `NAME SHA256-HEX`",
                    path.display(),
                    number + 1
                ),
            }
        }
        Ok(entries)
    }

    fn sign_leaf(
        &self,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Vec<u8>, TransportError> {
        let ca_pem =
            std::fs::read_to_string(self.ca_key()).map_err(|e| pki_error(&self.ca_key(), e))?;
        let ca_key = KeyPair::from_pem(&ca_pem).map_err(|e| pki_error(&self.ca_key(), e))?;
        let issuer = Issuer::new(
            ca_params().map_err(|e| pki_error(&self.ca_cert(), e))?,
            ca_key,
        );
        let key = KeyPair::generate().map_err(|e| pki_error(key_path, e))?;
        let mut params = CertificateParams::new(names).map_err(|e| pki_error(cert_path, e))?;
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| pki_error(cert_path, e))?;
        write(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write(cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok(cert.der().to_vec())
    }
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TransportError> {
    crate::paths::write_atomic(path, bytes, mode)
        .map_err(|e| pki_error(path, format!("cannot write: {e}")))
}

/// The name of the allowlist entry that pins `cert` (a device's leaf certificate,
/// already verified against the CA by TLS), if any; the certificate must also be issued
/// for that name.
pub fn allowed_name(
    cert: &rustls::pki_types::CertificateDer<'_>,
    allowlist: &[AllowEntry],
) -> Option<String> {
    let pinned = fingerprint(cert.as_ref());
    let entry = allowlist.iter().find(|e| e.fingerprint == pinned)?;
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let server_name = rustls::pki_types::ServerName::try_from(entry.name.as_str()).ok()?;
    parsed.verify_is_valid_for_subject_name(&server_name).ok()?;
    Some(entry.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries_round_trip_and_reject_malformed_lines() {
        let entry = AllowEntry {
            name: "pi-01".into(),
            fingerprint: [0xab; 32],
        };
        assert_eq!(AllowEntry::parse(&entry.line()), Some(entry));
        for bad in ["pi-01", "PI-01 ab", "pi-01 zz", "-pi abab", "pi_01 00"] {
            assert_eq!(AllowEntry::parse(bad), None, "{bad}");
        }
        assert!(valid_node_name("pi-01") && !valid_node_name("Pi-01") && !valid_node_name(""));
    }

    #[test]
    fn reissuing_a_name_revokes_its_previous_certificate() {
        let dir = std::env::temp_dir().join(format!("tandem-pki-{}", std::process::id()));
        let pki = Pki::new(&dir);
        pki.init().unwrap();
        let first =
            Identity::load(&pki.issue("pi").unwrap().cert, &pki.device_files("pi").key).unwrap();
        let list = pki.allowlist().unwrap();
        assert_eq!(allowed_name(&first.chain[0], &list).as_deref(), Some("pi"));
        let second =
            Identity::load(&pki.issue("pi").unwrap().cert, &pki.device_files("pi").key).unwrap();
        let list = pki.allowlist().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            allowed_name(&first.chain[0], &list),
            None,
            "old certificate still admitted"
        );
        assert_eq!(allowed_name(&second.chain[0], &list).as_deref(), Some("pi"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
