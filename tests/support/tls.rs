//! Certificates made at run time (rcgen) and TLS clients that trust them. Nothing
//! secret is committed: every test run makes its own CA and keys.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SignatureAlgorithm,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::TempDir;

/// A throwaway CA that signs leaf certificates for `localhost` and `127.0.0.1`.
pub struct TestCa {
    root: CertificateDer<'static>,
    root_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sse-gateway test ca");
        let cert = params.self_signed(&key).unwrap();
        Self {
            root: cert.der().clone(),
            root_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, for trust stores.
    pub fn root(&self) -> CertificateDer<'static> {
        self.root.clone()
    }

    /// A leaf certificate and its key, as PEM, with a key of `alg`.
    pub fn leaf(&self, alg: &'static SignatureAlgorithm) -> (String, String) {
        let key = KeyPair::generate_for(alg).unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a leaf (ECDSA P-256) to `dir` as `<name>.pem` and `<name>-key.pem`.
    pub fn write_leaf(&self, dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf(&rcgen::PKCS_ECDSA_P256_SHA256);
        (
            dir.write(&format!("{name}.pem"), &cert),
            dir.write(&format!("{name}-key.pem"), &key),
        )
    }

    /// A server config presenting a fresh leaf for `localhost` and `127.0.0.1`.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let (cert, key) = self.leaf(&rcgen::PKCS_ECDSA_P256_SHA256);
        let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(config)
    }

    /// The CA certificate as PEM, for a route's `ca` file.
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// A client config trusting only this CA, offering `alpn` (none if empty).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// Connects to `addr` and completes a handshake for `localhost`.
    pub async fn connect(&self, addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        self.try_connect(addr, alpn).await.unwrap()
    }

    pub async fn try_connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(self.client_config(alpn));
        let name = ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await
    }
}

/// The ALPN protocol the server chose on this connection.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// The end entity certificate the server presented.
pub fn peer_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}
