//! Checks for the `tls_accept` fuzz target: the first bytes a client sends to the https listener.
//!
//! Input layout: `[mode, bytes...]`. A server-side rustls session built by the proxy's own
//! `net::tls::ServerTls` (ALPN http/1.1, TLS 1.2 + 1.3; with `tlsclientca` when `mode & 0x80`) is fed
//! `bytes` as the client's side of the connection, in pieces of `1 + (mode & 0x3f)` bytes, the way
//! `net::stream` drives it: read the records, process them, read any plaintext, send what the
//! session answers. Whatever the bytes, nothing panics, a failed session stays failed, and nothing
//! the session buffers grows past its limits.
//!
//! Shared by `fuzz/fuzz_targets/tls_accept.rs` and, through `#[path]`, any plain test: public API only.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use influx_proxy::net::tls::ServerTls;

/// A self-signed P-256 certificate for 127.0.0.1 (valid until 2126), made with openssl for this check.
const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBkDCCATagAwIBAgIULQqLiRV9213z+8S6GlQr/ear9WUwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJMTI3LjAuMC4xMCAXDTI2MTIwMTEzNDY1MFoYDzIxMjYxMTA3
MTM0NjUwWjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAR81r195+l7CFitf1TZxRrb0F0MPxCukDdySiVT9PrL89YYO2P3ZOvR
52NuXnhMNzJnhe9ZtjveNC87SUjqi/eYo2QwYjAdBgNVHQ4EFgQUEu2WLGNkJ/hG
BwIl3qVaQyzG6Q4wHwYDVR0jBBgwFoAUEu2WLGNkJ/hGBwIl3qVaQyzG6Q4wDwYD
VR0TAQH/BAUwAwEB/zAPBgNVHREECDAGhwR/AAABMAoGCCqGSM49BAMCA0gAMEUC
IA2BfRdvSnLEA6Sc//BcEFP8v9Q4dZm6IHcKmViF927YAiEAsU6YUymc7VT4UOVR
YVWm49O9Uw0UTDm9K/JawUNHu7c=
-----END CERTIFICATE-----
";
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTMx+r3aUAYMwbC77
icUHKSIVY7LspEBk9ScMrjY0lxehRANCAAR81r195+l7CFitf1TZxRrb0F0MPxCu
kDdySiVT9PrL89YYO2P3ZOvR52NuXnhMNzJnhe9ZtjveNC87SUjqi/eY
-----END PRIVATE KEY-----
";

fn configs() -> &'static [Arc<rustls::ServerConfig>; 2] {
    static CONFIGS: OnceLock<[Arc<rustls::ServerConfig>; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let dir: PathBuf = std::env::temp_dir().join(format!("tls-accept-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, CERT).expect("write cert");
        std::fs::write(&key, KEY).expect("write key");
        let plain = ServerTls::load(&cert, &key, None).expect("server TLS");
        let mutual = ServerTls::load(&cert, &key, Some(&cert)).expect("server TLS with client CA");
        let _ = std::fs::remove_dir_all(&dir);
        [plain.config, mutual.config]
    })
}

pub fn run(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else { return };
    let config = configs()[usize::from(mode >> 7)].clone();
    let mut conn = rustls::ServerConnection::new(config).expect("a new session");
    let piece = 1 + usize::from(mode & 0x3f);
    let mut failed = false;
    let mut plain = [0u8; 4096];
    let mut sent = Vec::new();
    for chunk in bytes.chunks(piece) {
        let mut rd: &[u8] = chunk;
        while !rd.is_empty() {
            match conn.read_tls(&mut rd) {
                Ok(0) => break,
                Ok(_) => {}
                // The deframer's buffer is full: the session must be processed first.
                Err(_) => break,
            }
            match conn.process_new_packets() {
                Ok(_) => assert!(!failed, "a failed session recovered"),
                Err(_) => failed = true,
            }
            while let Ok(n) = conn.reader().read(&mut plain) {
                if n == 0 {
                    break;
                }
            }
            while conn.wants_write() {
                sent.clear();
                if conn.write_tls(&mut sent).is_err() {
                    break;
                }
            }
            if failed {
                return;
            }
        }
    }
    // Application data written before the handshake ends is buffered, never lost or panicked on.
    let _ = conn.writer().write(b"HTTP/1.1 204 No Content\r\n\r\n");
    conn.send_close_notify();
    let _ = conn.write_tls(&mut sent);
}
