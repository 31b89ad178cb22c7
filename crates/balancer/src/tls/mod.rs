//! The certificate diners see, and reloading it without dropping a connection.
//!
//! [`TlsCerts`] holds the certificate chain and key read from the `[tls]` files behind
//! an [`ArcSwap`]; rustls asks it for the certificate at every handshake (it is the
//! server's certificate resolver). [`TlsCerts::reload`] reads the files again and swaps
//! the new pair in only when both parse and the key matches the certificate: a botched
//! renewal (a half-written file, the wrong key) leaves the old certificate serving and
//! says why. Connections already open keep the keys they negotiated.
//!
//! [`loopback`] makes a certificate for trying TLS on one machine (`bistro up --tls`).
//!
//! The crypto provider is *ring* (not rustls' default aws-lc-rs, which needs cmake and
//! builds for minutes): the same algorithms, TLS 1.2 and 1.3.

pub mod loopback;

use crate::config::TlsConfig;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a certificate could not be (re)loaded. The certificate in use, if any, stays.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The configuration names no certificate (`tls.cert`/`tls.key` unset).
    #[error("TLS is not configured (set tls.cert and tls.key, or --tls-cert and --tls-key)")]
    NotConfigured,
    /// A file could not be read or holds no PEM item of the needed kind.
    #[error("cannot read the TLS {what} from {path}: {reason}")]
    File {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A loopback certificate could not be made.
    #[error("cannot make a loopback certificate: {0}")]
    Generate(String),
    /// rustls refused the pair (an unsupported key type, or a key that does not belong
    /// to the certificate).
    #[error("the TLS certificate {cert} and key {key} cannot be used together: {source}")]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// What is being served now: for an operator comparing with `openssl x509 -fingerprint
/// -sha256` after a renewal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// SHA-256 of the leaf certificate's DER, upper-case hex pairs joined by `:`.
    pub sha256_fingerprint: String,
    /// Certificates in the chain, leaf included.
    pub chain_length: usize,
    /// Successful reloads since start.
    pub reloads: u64,
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
}

/// The certificate the proxy listeners serve, reloadable. Cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct TlsCerts {
    inner: Arc<Certs>,
}

#[derive(Debug)]
struct Certs {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    reloads: AtomicU64,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl TlsCerts {
    /// Reads the certificate and key `config` names.
    ///
    /// # Errors
    /// [`TlsError`] when TLS is not configured, a file cannot be read or parsed, or the
    /// key does not fit the certificate.
    pub fn load(config: &TlsConfig) -> Result<TlsCerts, TlsError> {
        let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
            return Err(TlsError::NotConfigured);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = read_pair(cert, key, &provider)?;
        Ok(TlsCerts {
            inner: Arc::new(Certs {
                cert: cert.clone(),
                key: key.clone(),
                provider,
                current: ArcSwap::from_pointee(pair),
                reloads: AtomicU64::new(0),
            }),
        })
    }

    /// Reads the files again and serves the new pair from the next handshake on.
    ///
    /// # Errors
    /// [`TlsError`] when the new files cannot be used; the old pair keeps serving.
    pub fn reload(&self) -> Result<CertInfo, TlsError> {
        let pair = read_pair(&self.inner.cert, &self.inner.key, &self.inner.provider)?;
        self.inner.current.store(Arc::new(pair));
        self.inner.reloads.fetch_add(1, Relaxed);
        Ok(self.info())
    }

    /// The certificate being served now.
    pub fn info(&self) -> CertInfo {
        let current = self.inner.current.load();
        CertInfo {
            sha256_fingerprint: fingerprint(&current.cert[0]),
            chain_length: current.cert.len(),
            reloads: self.inner.reloads.load(Relaxed),
            cert: self.inner.cert.clone(),
            key: self.inner.key.clone(),
        }
    }

    /// The rustls server configuration for `config`'s ALPN choices, resolving the
    /// certificate through `self` at every handshake.
    pub(crate) fn server_config(&self, config: &TlsConfig) -> Arc<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(self.inner.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring's default provider supports the default protocol versions");
        let mut server = builder
            .with_no_client_auth()
            .with_cert_resolver(self.inner.clone());
        server.alpn_protocols = alpn(config.http2);
        Arc::new(server)
    }
}

/// The ALPN protocols offered, most preferred first.
fn alpn(http2: bool) -> Vec<Vec<u8>> {
    if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    }
}

fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let file_error = |what, path: &Path, reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error("certificate", cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(
            "certificate",
            cert,
            "no CERTIFICATE block in the file".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        file_error(
            "private key",
            key,
            match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    "no PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1) in the file".into()
                }
                other => other.to_string(),
            },
        )
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|source| TlsError::Rejected {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })
}

fn fingerprint(der: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(der.as_ref());
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
    }

    fn files(tag: &str) -> Files {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("bistro-tls-{tag}-"))
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        Files { _tmp: tmp, dir }
    }

    fn write_pair(
        dir: &Path,
        name: &str,
    ) -> (PathBuf, PathBuf, rcgen::CertifiedKey<rcgen::KeyPair>) {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
        (cert, key, pair)
    }

    fn config(cert: &Path, key: &Path) -> TlsConfig {
        TlsConfig {
            cert: Some(cert.into()),
            key: Some(key.into()),
            ..TlsConfig::default()
        }
    }

    #[test]
    fn loads_a_pair_and_reports_its_fingerprint() {
        let f = files("load");
        let (cert, key, pair) = write_pair(&f.dir, "a");
        let certs = TlsCerts::load(&config(&cert, &key)).unwrap();
        let info = certs.info();
        assert_eq!(info.chain_length, 1);
        assert_eq!(info.reloads, 0);
        assert_eq!(info.sha256_fingerprint, fingerprint(pair.cert.der()));
        assert_eq!(info.sha256_fingerprint.len(), 32 * 3 - 1);
    }

    #[test]
    fn a_reload_swaps_in_the_new_pair_and_a_bad_one_keeps_the_old() {
        let f = files("reload");
        let (cert, key, first) = write_pair(&f.dir, "a");
        let certs = TlsCerts::load(&config(&cert, &key)).unwrap();
        let (cert_b, key_b, second) = write_pair(&f.dir, "b");
        std::fs::copy(&cert_b, &cert).unwrap();
        std::fs::copy(&key_b, &key).unwrap();
        let info = certs.reload().unwrap();
        assert_eq!(info.sha256_fingerprint, fingerprint(second.cert.der()));
        assert_ne!(info.sha256_fingerprint, fingerprint(first.cert.der()));
        assert_eq!(info.reloads, 1);

        // A renewal gone wrong: the first certificate with the second key.
        std::fs::write(&cert, first.cert.pem()).unwrap();
        let err = certs.reload().unwrap_err();
        assert!(matches!(err, TlsError::Rejected { .. }), "{err}");
        assert_eq!(
            certs.info().sha256_fingerprint,
            fingerprint(second.cert.der()),
            "the old pair keeps serving"
        );
        // A truncated key file.
        std::fs::write(&cert, second.cert.pem()).unwrap();
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA").unwrap();
        let err = certs.reload().unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        assert_eq!(certs.info().reloads, 1);
    }

    #[test]
    fn missing_files_and_empty_files_are_named() {
        let f = files("missing");
        let missing = f.dir.join("nope.pem");
        let err = TlsCerts::load(&config(&missing, &missing)).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");
        let empty = f.dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = TlsCerts::load(&config(&empty, &empty)).unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
        assert!(matches!(
            TlsCerts::load(&TlsConfig::default()),
            Err(TlsError::NotConfigured)
        ));
    }

    #[test]
    fn alpn_prefers_h2_unless_http2_is_off() {
        assert_eq!(alpn(true), vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(alpn(false), vec![b"http/1.1".to_vec()]);
    }
}
