//! `[tls]`: TLS and HTTP/2 towards diners.
//!
//! With `cert` and `key` set, every proxy listener speaks TLS (rustls; TLS 1.2 and
//! 1.3), offers HTTP/2 and HTTP/1.1 by ALPN, and speaks HTTP/1.1 to the waiters as
//! before. The certificate files are read again on `SIGHUP` (or `POST /tls/reload` on
//! the admin API): new handshakes get the new certificate, open connections keep theirs.
//!
//! | setting | default | HAProxy | nginx |
//! |---|---|---|---|
//! | `cert`, `key` | off | `bind ... ssl crt` | `ssl_certificate`, `ssl_certificate_key` |
//! | `http2` | on | `alpn h2,http/1.1` | `http2 on` |
//! | `h2_max_concurrent_streams` | 100 | `tune.h2.max-concurrent-streams` | `http2_max_concurrent_streams` |
//! | `hsts_max_age_secs` | 0 (off) | `http-response set-header Strict-Transport-Security` | `add_header Strict-Transport-Security` |

use crate::error::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

/// Longest HSTS `max-age` accepted: two years, what browsers' preload lists ask for.
pub const MAX_HSTS_AGE_SECS: u64 = 2 * 365 * 24 * 3600;

/// `[tls]`: TLS termination and HTTP/2 for diners.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first. Set with `key` to turn TLS on.
    pub cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`); off, only HTTP/1.1 is offered.
    pub http2: bool,
    /// Most requests one HTTP/2 connection may have in flight at once.
    pub h2_max_concurrent_streams: u32,
    /// `Strict-Transport-Security: max-age=N` on every answer; 0 sends none. Browsers
    /// then refuse plain HTTP to this host for N seconds: turn it on once TLS is known
    /// to stay.
    pub hsts_max_age_secs: u64,
    /// Adds `includeSubDomains` to the HSTS header.
    pub hsts_include_subdomains: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            http2: true,
            h2_max_concurrent_streams: 100,
            hsts_max_age_secs: 0,
            hsts_include_subdomains: false,
        }
    }
}

impl TlsConfig {
    /// Whether the proxy listeners speak TLS.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }

    /// The `Strict-Transport-Security` value to send, if any.
    pub fn hsts(&self) -> Option<String> {
        if !self.enabled() || self.hsts_max_age_secs == 0 {
            return None;
        }
        let mut value = format!("max-age={}", self.hsts_max_age_secs);
        if self.hsts_include_subdomains {
            value.push_str("; includeSubDomains");
        }
        Some(value)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "tls.key",
                    "a certificate needs its private key (--tls-key)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "tls.cert",
                    "a private key needs its certificate (--tls-cert)",
                ));
            }
            _ => {}
        }
        if !(1..=10_000).contains(&self.h2_max_concurrent_streams) {
            return Err(ConfigError::invalid(
                "tls.h2_max_concurrent_streams",
                "must be between 1 and 10000",
            ));
        }
        if self.hsts_max_age_secs > MAX_HSTS_AGE_SECS {
            return Err(ConfigError::invalid(
                "tls.hsts_max_age_secs",
                format!("at most {MAX_HSTS_AGE_SECS} (two years)"),
            ));
        }
        if !self.enabled() && (self.hsts_max_age_secs > 0 || self.hsts_include_subdomains) {
            return Err(ConfigError::invalid(
                "tls.hsts_max_age_secs",
                "HSTS is only sent over TLS: set tls.cert and tls.key too",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> TlsConfig {
        TlsConfig {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            ..TlsConfig::default()
        }
    }

    #[test]
    fn off_by_default_and_valid() {
        let tls = TlsConfig::default();
        assert!(!tls.enabled());
        assert_eq!(tls.hsts(), None);
        tls.validate().unwrap();
        on().validate().unwrap();
    }

    #[test]
    fn a_certificate_and_its_key_come_together() {
        let no_key = TlsConfig { key: None, ..on() };
        assert!(
            no_key
                .validate()
                .unwrap_err()
                .to_string()
                .contains("tls.key")
        );
        let no_cert = TlsConfig { cert: None, ..on() };
        assert!(
            no_cert
                .validate()
                .unwrap_err()
                .to_string()
                .contains("tls.cert")
        );
    }

    #[test]
    fn hsts_only_under_tls_and_within_two_years() {
        let hsts = TlsConfig {
            hsts_max_age_secs: 31_536_000,
            hsts_include_subdomains: true,
            ..on()
        };
        hsts.validate().unwrap();
        assert_eq!(
            hsts.hsts().as_deref(),
            Some("max-age=31536000; includeSubDomains")
        );
        let plain = TlsConfig {
            cert: None,
            key: None,
            ..hsts.clone()
        };
        assert!(plain.validate().is_err());
        let too_long = TlsConfig {
            hsts_max_age_secs: MAX_HSTS_AGE_SECS + 1,
            ..on()
        };
        assert!(too_long.validate().is_err());
        let streams = TlsConfig {
            h2_max_concurrent_streams: 0,
            ..on()
        };
        assert!(streams.validate().is_err());
    }
}
