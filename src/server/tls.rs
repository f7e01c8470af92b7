//! TLS for the public listeners: a rustls `ServerConfig` built from the PEM files of
//! `listen[i].tls` (ring provider, TLS 1.3 and 1.2, ALPN `h2` then `http/1.1`), and
//! the handshake of each accepted connection, bounded by [`HANDSHAKE_TIMEOUT`].
//!
//! Each TLS listener's config sits behind a swappable pointer: a SIGHUP re-reads the
//! files ([`TlsReload::reload_tls`]) and new handshakes use the new certificate,
//! while connections already open keep the session they have. Files are read only
//! here, when binding, checking (`--check`) or reloading; a missing or bad file is
//! an error that names its key (`listen[1].tls.cert`), so `main` can exit 2.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::config::{ListenerConfig, TlsConfig};

/// A client that has not finished its handshake by then is dropped, so a stalled
/// (or deliberately slow) handshake can't hold a connection for long.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocol id of HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Why a TLS listener's certificate or key could not be loaded. A config error:
/// the gateway exits 2 at start, and a reload keeps the running certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("listen[{index}].tls.cert: cannot read certificates from {}", path.display())]
    Cert {
        index: usize,
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("listen[{index}].tls.cert: {} holds no PEM certificate", path.display())]
    NoCert { index: usize, path: PathBuf },
    #[error("listen[{index}].tls.key: cannot read a private key from {}", path.display())]
    Key {
        index: usize,
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error(
        "listen[{index}].tls.key: {} holds no PEM private key (PKCS#8, SEC1 or PKCS#1)",
        path.display()
    )]
    NoKey { index: usize, path: PathBuf },
    #[error("listen[{index}].tls.key: the key does not fit the certificate or is not supported")]
    Unusable {
        index: usize,
        #[source]
        source: rustls::Error,
    },
}

/// Builds the `ServerConfig` of listener `index` from its PEM files.
///
/// # Errors
/// A file that cannot be read, holds no certificate or key, or a key rustls can't
/// use with that certificate.
pub(crate) fn server_config(index: usize, tls: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(index, &tls.cert)?;
    let key = read_key(index, &tls.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|source| TlsError::Unusable { index, source })?;
    // h2 first: a browser that offers both gets HTTP/2, so its SSE streams share one
    // connection instead of hitting HTTP/1.1's six-per-origin cap.
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(config)
}

fn read_certs(index: usize, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |source| TlsError::Cert {
        index,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            index,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(index: usize, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // `PrivateKeyDer` takes the first `PRIVATE KEY` (PKCS#8), `EC PRIVATE KEY`
    // (SEC1) or `RSA PRIVATE KEY` (PKCS#1) section, whatever else the file holds.
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey {
            index,
            path: path.to_owned(),
        },
        source => TlsError::Key {
            index,
            path: path.to_owned(),
            source,
        },
    })
}

/// Loads every TLS listener's files without binding anything (`--check`).
///
/// # Errors
/// The first listener whose files can't be used.
pub fn check(listen: &[ListenerConfig]) -> Result<(), TlsError> {
    for (index, listener) in listen.iter().enumerate() {
        if let Some(tls) = &listener.tls {
            server_config(index, tls)?;
        }
    }
    Ok(())
}

// === impl TlsAcceptor ===

/// One TLS listener's handshake side. Clones share the config, so a reload reaches
/// every clone.
#[derive(Clone)]
pub(crate) struct TlsAcceptor {
    config: Arc<RwLock<Arc<ServerConfig>>>,
}

impl TlsAcceptor {
    pub(crate) fn new(config: ServerConfig) -> Self {
        Self {
            config: Arc::new(RwLock::new(Arc::new(config))),
        }
    }

    /// Runs the server side of the handshake with the current config.
    ///
    /// # Errors
    /// The peer failed or aborted the handshake. The caller bounds the time.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        // A poisoned lock still holds a complete config: a swap is one assignment.
        let config = Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()));
        tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
    }

    fn replace(&self, config: ServerConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }
}

// === impl TlsReload ===

/// Re-reads the certificates and keys of the bound TLS listeners (on SIGHUP).
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct TlsReload {
    listeners: Arc<Vec<Reloadable>>,
}

/// One bound TLS listener, as the reload handle sees it.
pub(crate) struct Reloadable {
    index: usize,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    /// The files last loaded; a reload may point the listener at new ones.
    files: Mutex<TlsConfig>,
}

impl Reloadable {
    pub(crate) fn new(
        index: usize,
        addr: SocketAddr,
        files: TlsConfig,
        acceptor: TlsAcceptor,
    ) -> Self {
        Self {
            index,
            addr,
            acceptor,
            files: Mutex::new(files),
        }
    }
}

impl TlsReload {
    pub(crate) fn new(listeners: Vec<Reloadable>) -> Self {
        Self {
            listeners: Arc::new(listeners),
        }
    }

    /// Reads the files of every TLS listener again and, if all of them load,
    /// switches new handshakes to them. `listen` is the newly loaded
    /// configuration: a listener at the same index and address takes its (possibly
    /// new) `tls` paths; other listener changes need a restart and are ignored here.
    /// Connections already open keep their session.
    ///
    /// Returns how many listeners were reloaded.
    ///
    /// # Errors
    /// The first listener whose files can't be used; then nothing is switched.
    pub fn reload_tls(&self, listen: &[ListenerConfig]) -> Result<usize, TlsError> {
        let mut loaded = Vec::with_capacity(self.listeners.len());
        for listener in self.listeners.iter() {
            let files = match listen.get(listener.index) {
                Some(new) if new.addr == listener.addr => new.tls.clone(),
                _ => None,
            }
            .unwrap_or_else(|| {
                listener
                    .files
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            });
            let config = server_config(listener.index, &files)?;
            loaded.push((config, files));
        }
        for (listener, (config, files)) in self.listeners.iter().zip(loaded) {
            listener.acceptor.replace(config);
            *listener.files.lock().unwrap_or_else(|e| e.into_inner()) = files;
        }
        Ok(self.listeners.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and key with a key of `alg`, written to a fresh
    /// directory as `cert.pem` and `key.pem`.
    fn files(alg: &'static rcgen::SignatureAlgorithm, tag: &str) -> (PathBuf, TlsConfig) {
        let dir =
            std::env::temp_dir().join(format!("sse-gateway-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        (dir, files)
    }

    #[test]
    fn ecdsa_and_ed25519_pkcs8_keys_load_with_alpn_h2_first() {
        for (tag, alg) in [
            ("p256", &rcgen::PKCS_ECDSA_P256_SHA256),
            ("p384", &rcgen::PKCS_ECDSA_P384_SHA384),
            ("ed25519", &rcgen::PKCS_ED25519),
        ] {
            let (dir, files) = files(alg, tag);
            let config = server_config(0, &files).unwrap();
            assert_eq!(
                config.alpn_protocols,
                [b"h2".to_vec(), b"http/1.1".to_vec()]
            );
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn a_key_that_does_not_fit_the_certificate_names_the_key() {
        let (dir_a, a) = files(&rcgen::PKCS_ECDSA_P256_SHA256, "mismatch-a");
        let (dir_b, b) = files(&rcgen::PKCS_ECDSA_P256_SHA256, "mismatch-b");
        let crossed = TlsConfig {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let err = server_config(3, &crossed).unwrap_err();
        assert!(
            matches!(err, TlsError::Unusable { index: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("listen[3].tls.key: "), "{err}");
        std::fs::remove_dir_all(dir_a).unwrap();
        std::fs::remove_dir_all(dir_b).unwrap();
    }

    #[test]
    fn a_certificate_file_without_certificates_names_the_cert() {
        let (dir, mut files) = files(&rcgen::PKCS_ED25519, "nocert");
        files.cert = files.key.clone();
        let err = server_config(1, &files).unwrap_err();
        assert!(matches!(err, TlsError::NoCert { index: 1, .. }), "{err:?}");
        assert!(err.to_string().starts_with("listen[1].tls.cert: "), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// rcgen (on ring) writes only PKCS#8 keys; the `openssl` tool makes the PKCS#1
    /// and SEC1 files operators commonly have. Skipped where it isn't installed.
    #[test]
    fn pkcs1_rsa_and_sec1_ec_keys_load() {
        let Ok(version) = std::process::Command::new("openssl")
            .arg("version")
            .output()
        else {
            eprintln!("openssl not installed; PKCS#1 and SEC1 keys not checked");
            return;
        };
        assert!(version.status.success());
        let dir =
            std::env::temp_dir().join(format!("sse-gateway-tls-openssl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        run(&["genrsa", "-traditional", "-out", "rsa.pem", "2048"]);
        run(&[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            "ec.pem",
        ]);
        for (key, label) in [("rsa", "RSA PRIVATE KEY"), ("ec", "EC PRIVATE KEY")] {
            let key_file = dir.join(format!("{key}.pem"));
            let text = std::fs::read_to_string(&key_file).unwrap();
            assert!(
                text.starts_with(&format!("-----BEGIN {label}-----")),
                "{text}"
            );
            let cert = format!("{key}-cert.pem");
            run(&[
                "req",
                "-x509",
                "-key",
                &format!("{key}.pem"),
                "-subj",
                "/CN=localhost",
                "-days",
                "1",
                "-out",
                &cert,
            ]);
            let files = TlsConfig {
                cert: dir.join(cert),
                key: key_file,
            };
            server_config(0, &files).unwrap_or_else(|e| panic!("{label}: {e:?}"));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
