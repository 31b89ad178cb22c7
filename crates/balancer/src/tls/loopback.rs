//! A certificate for trying TLS on one machine: a throwaway certificate authority and a
//! certificate it signs for `localhost`, `127.0.0.1` and `::1`.
//!
//! Why two certificates rather than one self-signed: clients that verify properly
//! (rustls/webpki, browsers) refuse a certificate that is its own CA as a server
//! certificate, while every client accepts a server certificate signed by a CA it was
//! told to trust (`curl --cacert ca.pem`). The CA's private key is never written: the
//! CA can vouch for this one certificate and nothing else, so trusting it lends no one
//! the power to impersonate other sites.

use super::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The files [`write_loopback_certs`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopbackCerts {
    /// The CA certificate to trust (`curl --cacert`, a browser's authorities).
    pub ca: PathBuf,
    /// The server certificate chain (`--tls-cert`): the leaf, then the CA.
    pub cert: PathBuf,
    /// The server certificate's private key (`--tls-key`), readable by its owner only.
    pub key: PathBuf,
}

impl LoopbackCerts {
    /// A rustls client that trusts this CA and nothing else, offering `alpn` (most
    /// preferred first): what `bistro bench tls` and the tests connect with.
    ///
    /// # Errors
    /// [`TlsError::File`] when the CA file cannot be read or holds no usable certificate.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
        let bad = |reason: String| TlsError::File {
            what: "certificate",
            path: self.ca.clone(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).map_err(|e| bad(e.to_string()))? {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring's default provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// Writes `ca.pem`, `cert.pem` and `key.pem` for loopback into `dir` (created if need
/// be), replacing what is there.
///
/// # Errors
/// [`TlsError::File`] when a file cannot be written, [`TlsError::Generate`] when the
/// certificates cannot be made.
pub fn write_loopback_certs(dir: &Path) -> Result<LoopbackCerts, TlsError> {
    let generated = generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let write_error = |path: &Path, e: std::io::Error| TlsError::File {
        what: "certificate",
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let files = LoopbackCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.ca, &generated.ca).map_err(|e| write_error(&files.ca, e))?;
    std::fs::write(&files.cert, format!("{}{}", generated.leaf, generated.ca))
        .map_err(|e| write_error(&files.cert, e))?;
    write_private(&files.key, &generated.key).map_err(|e| write_error(&files.key, e))?;
    Ok(files)
}

/// PEM texts of a fresh CA, a leaf it signed, and the leaf's key.
struct Generated {
    ca: String,
    leaf: String,
    key: String,
}

fn generate() -> Result<Generated, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut ca_name = DistinguishedName::new();
    ca_name.push(DnType::CommonName, "bistro loopback CA (throwaway)");
    ca_params.distinguished_name = ca_name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()])?;
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    let mut leaf_name = DistinguishedName::new();
    leaf_name.push(DnType::CommonName, "localhost");
    leaf_params.distinguished_name = leaf_name;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    Ok(Generated {
        ca: ca_cert.pem(),
        leaf: leaf.pem(),
        key: leaf_key.serialize_pem(),
    })
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsConfig;
    use crate::tls::TlsCerts;

    #[test]
    fn the_written_pair_loads_and_the_key_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let files = write_loopback_certs(&tmp.path().join("tls")).unwrap();
        let certs = TlsCerts::load(&TlsConfig {
            cert: Some(files.cert.clone()),
            key: Some(files.key.clone()),
            ..TlsConfig::default()
        })
        .unwrap();
        assert_eq!(certs.info().chain_length, 2, "leaf, then the CA");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let ca = std::fs::read_to_string(&files.ca).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            !std::fs::read_to_string(&files.cert)
                .unwrap()
                .contains("PRIVATE")
        );
    }
}
