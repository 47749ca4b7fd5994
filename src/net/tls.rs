//! TLS settings for both sides, built on the config thread: the listener's server config (`tlscert`,
//! `tlskey`, optional `tlsclientca` for mutual TLS) and each https backend's client config (trust in
//! `tlsca` or the system roots, or none with `tlsinsecure`), plus the texts that say why a certificate
//! was refused.
//!
//! Everything here is immutable once built and travels inside the config snapshot, so rotation is a
//! config change like any other: a worker reads `node.tls` once per accepted connection, open
//! connections keep the settings they started with, and a file that fails to load makes the whole
//! new snapshot fail, which keeps the previous certificates in force. Each loaded file is remembered
//! with a fingerprint of the exact bytes used, so the config poll can tell that a file changed on disk
//! (`files_changed`) without a change in Redis.
//!
//! Only the `ring` provider is compiled in; TLS 1.2 and 1.3 with rustls' safe defaults.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// The only application protocol either side speaks.
const ALPN_HTTP11: &[u8] = b"http/1.1";
/// Server-side session cache entries (resumption for clients that reconnect often).
const SESSION_CACHE: usize = 4096;

/// Why TLS settings could not be built.
#[derive(Debug)]
pub enum TlsError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    Pem {
        path: PathBuf,
        error: String,
    },
    NoCertificate {
        path: PathBuf,
    },
    NoKey {
        path: PathBuf,
    },
    /// rustls refused the combination (a key that does not match its certificate, ...).
    Build {
        what: String,
        error: rustls::Error,
    },
    ClientCa {
        path: PathBuf,
        error: String,
    },
    NoSystemRoots(String),
    ServerName(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            TlsError::Pem { path, error } => write!(f, "{}: not valid PEM: {error}", path.display()),
            TlsError::NoCertificate { path } => write!(f, "{}: no CERTIFICATE in it", path.display()),
            TlsError::NoKey { path } => write!(f, "{}: no PRIVATE KEY in it", path.display()),
            TlsError::Build { what, error } => write!(f, "{what}: {error}"),
            TlsError::ClientCa { path, error } => {
                write!(f, "{}: cannot verify clients with it: {error}", path.display())
            }
            TlsError::NoSystemRoots(why) => {
                write!(f, "no system root certificates ({why}): install ca-certificates or set tlsca")
            }
            TlsError::ServerName(host) => write!(f, "{host:?} is not a valid TLS server name"),
        }
    }
}

impl std::error::Error for TlsError {}

/// A file the settings were built from, with a fingerprint of the bytes that were used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub path: PathBuf,
    fingerprint: u64,
}

impl Watched {
    fn read(path: &Path) -> Result<(Watched, Vec<u8>), TlsError> {
        let bytes = std::fs::read(path).map_err(|error| TlsError::Read { path: path.to_path_buf(), error })?;
        Ok((Watched { path: path.to_path_buf(), fingerprint: fingerprint(&bytes) }, bytes))
    }

    /// The file now holds other bytes (or cannot be read).
    pub fn changed(&self) -> bool {
        std::fs::read(&self.path).map_or(true, |b| fingerprint(&b) != self.fingerprint)
    }
}

fn fingerprint(bytes: &[u8]) -> u64 {
    (bytes.len() as u64) << 32 | u64::from(crc32fast::hash(bytes))
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

fn certificates(path: &Path) -> Result<(Watched, Vec<CertificateDer<'static>>), TlsError> {
    let (watched, bytes) = Watched::read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), error: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok((watched, certs))
}

fn private_key(path: &Path) -> Result<(Watched, PrivateKeyDer<'static>), TlsError> {
    let (watched, bytes) = Watched::read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok((watched, key)),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoKey { path: path.to_path_buf() }),
        Err(e) => Err(TlsError::Pem { path: path.to_path_buf(), error: e.to_string() }),
    }
}

fn root_store(path: &Path) -> Result<(Watched, RootCertStore), TlsError> {
    let (watched, certs) = certificates(path)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|error| TlsError::Build { what: format!("{}", path.display()), error })?;
    }
    Ok((watched, roots))
}

/// The platform's trust store, read once per process (it is the same for every backend).
fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        match (added, found.errors.first()) {
            (0, Some(e)) => Err(e.to_string()),
            (0, None) => Err("none found".into()),
            _ => Ok(Arc::new(roots)),
        }
    });
    roots.clone().map_err(TlsError::NoSystemRoots)
}

/// The listener's TLS: what a worker hands every new connection.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// `tlscert`, `tlskey`, `tlsclientca`.
    files: Vec<Watched>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.files).finish()
    }
}

impl ServerTls {
    /// TLS 1.2 and 1.3, ALPN `http/1.1`; with `client_ca`, every client must present a certificate
    /// issued by it.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTls, TlsError> {
        let (cert_file, chain) = certificates(cert)?;
        let (key_file, key_der) = private_key(key)?;
        let mut files = vec![cert_file, key_file];
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|error| TlsError::Build { what: "TLS versions".into(), error })?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let (watched, roots) = root_store(path)?;
                files.push(watched);
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::ClientCa { path: path.to_path_buf(), error: e.to_string() })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key_der).map_err(|error| TlsError::Build {
            what: format!("certificate {} with key {}", cert.display(), key.display()),
            error,
        })?;
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        // Stateless tickets let TLS 1.2 clients resume too; a failure only costs full handshakes.
        if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
            config.ticketer = ticketer;
        }
        Ok(ServerTls { config: Arc::new(config), files })
    }

    pub fn files_changed(&self) -> bool {
        self.files.iter().any(Watched::changed)
    }

    /// For `/health`: the files in force (`tlscert`, `tlskey`, then `tlsclientca` when set).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|w| w.path.as_path())
    }
}

/// How an https backend's certificate is checked, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    SystemRoots,
    Bundle(PathBuf),
    Insecure,
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::SystemRoots => f.write_str("the system roots"),
            Trust::Bundle(p) => write!(f, "tlsca {}", p.display()),
            Trust::Insecure => f.write_str("nothing (tlsinsecure)"),
        }
    }
}

/// An https backend's TLS: one client config per backend, shared by every worker, so its session
/// cache lets new connections resume instead of paying a full handshake.
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    /// SNI and the name verified: the URL's host (an IP address is checked against IP SANs).
    pub name: ServerName<'static>,
    pub trust: Trust,
    files: Vec<Watched>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").field("name", &self.name).field("trust", &self.trust).finish()
    }
}

impl ClientTls {
    /// `host` without port or brackets. `ca`: PEM bundle to trust instead of the system roots.
    pub fn new(host: &str, ca: Option<&Path>, insecure: bool) -> Result<ClientTls, TlsError> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|error| TlsError::Build { what: "TLS versions".into(), error })?;
        let mut files = Vec::new();
        let (builder, trust) = if insecure {
            let verifier = Arc::new(NoVerification(provider()));
            (builder.dangerous().with_custom_certificate_verifier(verifier), Trust::Insecure)
        } else if let Some(path) = ca {
            let (watched, roots) = root_store(path)?;
            files.push(watched);
            (builder.with_root_certificates(roots), Trust::Bundle(path.to_path_buf()))
        } else {
            (builder.with_root_certificates(system_roots()?), Trust::SystemRoots)
        };
        let mut config = builder.with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(ClientTls { config: Arc::new(config), name, trust, files })
    }

    pub fn files_changed(&self) -> bool {
        self.files.iter().any(Watched::changed)
    }

    pub fn connection(&self) -> Result<rustls::ClientConnection, rustls::Error> {
        rustls::ClientConnection::new(self.config.clone(), self.name.clone())
    }
}

/// `tlsinsecure`: any certificate is accepted, but the handshake signatures are still checked (the
/// peer holds the key of the certificate it shows), so a corrupted handshake still fails.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What went wrong in a handshake, in words an operator can act on. `trust` says what the peer's
/// certificate was checked against (client side).
pub fn describe(error: &rustls::Error, trust: Option<&Trust>) -> String {
    let against = trust.map(|t| format!(" (checked against {t})")).unwrap_or_default();
    match error {
        rustls::Error::InvalidCertificate(c) => {
            let what = match c {
                CertificateError::UnknownIssuer => "it is not signed by a trusted CA (unknown issuer)".to_string(),
                CertificateError::BadSignature => "its signature does not verify".to_string(),
                CertificateError::Expired => "it has expired".to_string(),
                CertificateError::NotValidYet => "it is not valid yet".to_string(),
                CertificateError::NotValidForName => "it is not valid for the host name in the url".to_string(),
                CertificateError::Revoked => "it is revoked".to_string(),
                CertificateError::BadEncoding => "it is not a well-formed X.509 certificate".to_string(),
                CertificateError::InvalidPurpose => "it is not meant for TLS servers (extended key usage)".to_string(),
                other => other.to_string(),
            };
            format!("TLS: certificate rejected: {what}{against}")
        }
        rustls::Error::NoCertificatesPresented => "TLS: the peer presented no certificate".to_string(),
        rustls::Error::AlertReceived(alert) => format!("TLS: the peer refused the handshake (alert {alert:?})"),
        rustls::Error::InvalidMessage(_) => "TLS: the peer does not speak TLS (invalid TLS record)".to_string(),
        rustls::Error::NoApplicationProtocol => "TLS: no common application protocol (ALPN)".to_string(),
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_say_what_is_wrong_with_the_certificate() {
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let t = describe(&e, Some(&Trust::Bundle("/etc/ca.pem".into())));
        assert!(t.contains("unknown issuer") && t.contains("tlsca /etc/ca.pem"), "{t}");
        let e = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert!(describe(&e, None).contains("expired"));
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = std::env::temp_dir().join(format!("tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = ServerTls::load(&dir.join("nope.pem"), &empty, None).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");
        let e = ServerTls::load(&empty, &empty, None).unwrap_err().to_string();
        assert!(e.contains("no CERTIFICATE"), "{e}");
        let e = ClientTls::new("127.0.0.1", Some(&empty), false).unwrap_err().to_string();
        assert!(e.contains("empty.pem"), "{e}");
        assert!(ClientTls::new("127.0.0.1", None, true).is_ok());
        let w = Watched::read(&empty).unwrap().0;
        assert!(!w.changed());
        std::fs::write(&empty, "something else\n").unwrap();
        assert!(w.changed());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
