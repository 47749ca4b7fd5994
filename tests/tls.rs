//! TLS on both sides, against real things: influxd serving https with certificates made here by
//! `openssl`, the proxy verifying them, and real clients (curl, `openssl s_client`, Python requests)
//! verifying the proxy's https listener.
//!
//! Every certificate is for 127.0.0.1 (an IP SAN): the proxy checks IP-address urls against IP SANs.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use util::{Process, Proxy, ProxyConfig, Redis, TempDir, free_port, wait_until};

const DB: &str = "tlsdb";
const WAIT: Duration = Duration::from_secs(20);

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A private CA, and certificates it (or another CA) issues, all files in one temp dir.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki { dir: TempDir::new("pki") };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.issue("srv", "ca", 1001);
        pki.issue("client", "ca", 3003);
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn ca(&self, name: &str) {
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args([
                "-nodes",
                "-keyout",
                &self.path(&format!("{name}.key")),
                "-out",
                &self.path(&format!("{name}.pem")),
                "-days",
                "3",
                "-subj",
                &format!("/CN=test {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]));
    }

    /// `{name}.pem` + `{name}.key` for 127.0.0.1 and localhost, signed by `ca`.
    fn issue(&self, name: &str, ca: &str, serial: u32) {
        self.issue_for(name, ca, serial, "IP:127.0.0.1,DNS:localhost");
    }

    /// Like `issue`, for the subject alternative names `san`.
    fn issue_for(&self, name: &str, ca: &str, serial: u32, san: &str) {
        let ext = self.path("ext.cnf");
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .unwrap();
        let csr = self.path(&format!("{name}.csr"));
        run(Command::new("openssl")
            .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-keyout", &self.path(&format!("{name}.key")), "-out", &csr, "-subj", "/CN=127.0.0.1"]));
        run(Command::new("openssl").args(["x509", "-req", "-in", &csr]).args([
            "-CA",
            &self.path(&format!("{ca}.pem")),
            "-CAkey",
            &self.path(&format!("{ca}.key")),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &self.path(&format!("{name}.pem")),
        ]));
    }
}

/// influxd serving https only, with `srv.pem` (or another certificate of the `Pki`).
struct HttpsInfluxd {
    _process: Process,
    _dir: TempDir,
    port: u16,
}

impl HttpsInfluxd {
    fn start(pki: &Pki) -> HttpsInfluxd {
        HttpsInfluxd::start_with(pki, "srv")
    }

    fn start_with(pki: &Pki, cert: &str) -> HttpsInfluxd {
        for _ in 0..5 {
            let dir = TempDir::new("influxd-tls");
            let (port, rpc) = (free_port(), free_port());
            let d = dir.path().display();
            let config = format!(
                "reporting-enabled = false\nbind-address = \"127.0.0.1:{rpc}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n  logging-enabled = false\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [monitor]\n  store-enabled = false\n[subscriber]\n  enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{port}\"\n  bind-socket = \"{d}/influxd.sock\"\n  log-enabled = false\n\
                 \x20 https-enabled = true\n  https-certificate = \"{}\"\n  https-private-key = \"{}\"\n\
                 [logging]\n  level = \"warn\"\n  suppress-logo = true\n",
                pki.path(&format!("{cert}.pem")),
                pki.path(&format!("{cert}.key"))
            );
            std::fs::write(dir.join("influxd.toml"), config).unwrap();
            let mut cmd = Command::new("influxd");
            cmd.arg("run").arg("-config").arg(dir.join("influxd.toml"));
            let mut process = Process::spawn("influxd", &mut cmd, &dir.join("influxd.log"));
            let url = format!("https://127.0.0.1:{port}");
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline && process.is_running() {
                // -k: a certificate made to be refused by the proxy still lets the test set up.
                if curl(&pki.path("ca.pem"), &["-k", &format!("{url}/ping")]).0 == 204 {
                    let influxd = HttpsInfluxd { _process: process, _dir: dir, port };
                    influxd.query(pki, &format!("CREATE DATABASE {DB}"));
                    return influxd;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Port taken meanwhile by another test binary: try fresh ports.
        }
        panic!("influxd with https did not start");
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn query(&self, pki: &Pki, q: &str) -> String {
        let (status, body) = curl(
            &pki.path("ca.pem"),
            &["-k", "-XPOST", &format!("{}/query?db={DB}", self.url()), "--data-urlencode", &format!("q={q}")],
        );
        assert_eq!(status, 200, "{q}: {body}");
        body
    }

    fn count(&self, pki: &Pki, measurement: &str) -> u64 {
        let body = self.query(pki, &format!("SELECT count(value) FROM {measurement}"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["results"][0]["series"][0]["values"][0][1].as_u64().unwrap_or(0)
    }
}

/// A site started with `node_extra` whose only backend, `i1`, is an https influxd it trusts through
/// `tlsca`, with `fields` added.
fn site_with_https_backend(fields: &[(&str, &str)], node_extra: &[(&str, &str)]) -> (HttpsInfluxd, Site) {
    let pki = Pki::new();
    let i1 = HttpsInfluxd::start(&pki);
    let ca = pki.path("ca.pem");
    let mut all = vec![("tlsca", ca.as_str())];
    all.extend_from_slice(fields);
    let config = ProxyConfig::new().backend("i1", &i1.url(), &all).keymap("_default_", &["i1"]);
    (i1, Site::start(pki, config, node_extra))
}

/// POSTs the file at `path` to the site's `/write?db=DB` with curl (plus `args`): status and answer.
fn post_file(site: &Site, path: &std::path::Path, args: &[&str]) -> (u16, String) {
    let (url, data) = (site.url(&format!("/write?db={DB}")), format!("@{}", path.display()));
    let all: Vec<&str> =
        ["-XPOST", url.as_str(), "--data-binary", data.as_str()].into_iter().chain(args.iter().copied()).collect();
    curl(&site.ca(), &all)
}

/// curl with `--cacert ca`; (status, body). Status 0: no HTTP answer (TLS refused, ...).
fn curl(ca: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", ca, "-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let status = code.trim().parse().unwrap_or(0);
    if status == 0 {
        return (0, format!("{body}{}", String::from_utf8_lossy(&out.stderr)));
    }
    (status, body.to_string())
}

struct Site {
    pki: Pki,
    redis: Redis,
    proxy: Proxy,
    port: u16,
}

impl Site {
    /// A proxy whose node serves https with `srv.pem` (plus `node` fields), polling its config every
    /// 200 ms, with `config`'s backends.
    fn start(pki: Pki, config: ProxyConfig, node: &[(&str, &str)]) -> Site {
        let redis = Redis::start();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let (cert, key) = (pki.path("srv.pem"), pki.path("srv.key"));
        let mut fields = vec![("listenaddr", listen.as_str()), ("tlscert", cert.as_str()), ("tlskey", key.as_str())];
        fields.push(("interval", "0"));
        fields.extend_from_slice(node);
        config.node("n1", &fields).write_to(&redis);
        let mut proxy = Proxy::builder(&redis, "n1", port).arg("--poll-interval").arg("200").spawn();
        let deadline = Instant::now() + WAIT;
        let ca = pki.path("ca.pem");
        let client = [pki.path("client.pem"), pki.path("client.key")];
        loop {
            let (status, _) =
                curl(&ca, &["--cert", &client[0], "--key", &client[1], &format!("https://127.0.0.1:{port}/ping")]);
            if status == 204 {
                return Site { pki, redis, proxy, port };
            }
            assert!(proxy.is_running() && Instant::now() < deadline, "proxy did not start:\n{}", proxy.log_tail(30));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn ca(&self) -> String {
        self.pki.path("ca.pem")
    }

    fn write(&self, lines: &str) -> (u16, String) {
        curl(&self.ca(), &["-XPOST", &self.url(&format!("/write?db={DB}")), "--data-binary", lines])
    }

    fn health(&self) -> serde_json::Value {
        let (status, body) = curl(&self.ca(), &[&self.url("/health")]);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn backend_health(&self, name: &str) -> serde_json::Value {
        let h = self.health();
        h["backends"].as_array().unwrap().iter().find(|b| b["name"] == name).cloned().unwrap_or_default()
    }

    fn reload(&self) -> u16 {
        curl(&self.ca(), &["-XPOST", &self.url("/reload")]).0
    }
}

fn tools() -> bool {
    let ok = have("openssl") && have("curl") && util::Influxd::available();
    if !ok {
        eprintln!("skipped: needs openssl, curl and influxd");
    }
    ok
}

#[test]
fn writes_queries_and_health_over_https_on_both_sides() {
    if !tools() {
        return;
    }
    let pki = Pki::new();
    let (i1, i2) = (HttpsInfluxd::start(&pki), HttpsInfluxd::start(&pki));
    let ca = pki.path("ca.pem");
    let config = ProxyConfig::new()
        .backend("i1", &i1.url(), &[("tlsca", &ca), ("interval", "20")])
        .backend("i2", &i2.url(), &[("tlsca", &ca), ("interval", "20"), ("gzip", "1")])
        .keymap("cpu", &["i1", "i2"])
        .keymap("mem", &["i1"])
        .keymap("disk", &["i2"])
        .keymap("big", &["i1"]);
    let site = Site::start(pki, config, &[]);

    // Writes: plain, gzip-compressed, and a batch of many lines.
    let mut lines = String::new();
    for i in 0..2000 {
        lines.push_str(&format!("cpu,host=h{} value={i} {}\n", i % 7, 1_600_000_000_000_000_000u64 + i));
    }
    assert_eq!(site.write(&lines).0, 204);
    assert_eq!(site.write("mem value=1 1600000000000000000\ndisk value=2 1600000000000000000").0, 204);
    let gz = site.pki.dir.join("body.gz");
    let mut gzip = Command::new("gzip").arg("-c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    gzip.stdin.take().unwrap().write_all(b"mem value=2 1600000000000000001\n").unwrap();
    std::fs::write(&gz, gzip.wait_with_output().unwrap().stdout).unwrap();
    let (status, body) = curl(
        &site.ca(),
        &[
            "-XPOST",
            &site.url(&format!("/write?db={DB}")),
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            &format!("@{}", gz.display()),
        ],
    );
    assert_eq!(status, 204, "{body}");
    // A body far larger than the socket buffers, both ways through TLS (client → proxy → backend).
    let big: String = (0..60_000)
        .map(|i| {
            format!("big,host=h{} value={i},pad=\"{}\" {}\n", i % 13, "x".repeat(40), 1_600_000_000_000_000_000u64 + i)
        })
        .collect();
    let big_file = site.pki.dir.join("big.txt");
    std::fs::write(&big_file, &big).unwrap();
    let (status, body) = curl(
        &site.ca(),
        &["-XPOST", &site.url(&format!("/write?db={DB}")), "--data-binary", &format!("@{}", big_file.display())],
    );
    assert_eq!(status, 204, "{body}");
    wait_until(WAIT, "every line on both https backends", || {
        i1.count(&site.pki, "cpu") == 2000 && i2.count(&site.pki, "cpu") == 2000 && i1.count(&site.pki, "mem") == 2
    });
    assert_eq!(i2.count(&site.pki, "disk"), 1);
    wait_until(WAIT, "the big body delivered", || i1.count(&site.pki, "big") == 60_000);

    // Queries: relayed (one backend), chunked, and merged (fanned out to both).
    let q = |params: &[&str]| {
        let mut args = vec!["-G", "--data-urlencode", "db=tlsdb"];
        for p in params {
            args.extend(["--data-urlencode", p]);
        }
        let url = site.url("/query");
        args.push(&url);
        curl(&site.ca(), &args.iter().map(|s| &**s).collect::<Vec<_>>())
    };
    let (status, body) = q(&["q=SELECT count(value) FROM mem WHERE time > 0"]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(",2]]"), "{body}");
    let (status, body) = q(&["q=SELECT value FROM cpu WHERE time > 0", "chunked=true", "chunk_size=500"]);
    assert_eq!(status, 200);
    assert_eq!(body.lines().filter(|l| !l.is_empty()).count(), 4, "4 chunks of 500 rows: {}", &body[..200]);
    let (status, body) = q(&["q=SHOW MEASUREMENTS"]);
    assert_eq!(status, 200, "{body}");
    for m in ["cpu", "disk", "mem"] {
        assert!(body.contains(&format!("[\"{m}\"]")), "merged SHOW MEASUREMENTS lacks {m}: {body}");
    }

    // Health pings go over TLS: both up, no error.
    for b in ["i1", "i2"] {
        let h = site.backend_health(b);
        assert_eq!((h["up"].as_bool(), h["last_error"].as_str()), (Some(true), None), "{h}");
        assert!(h["tls"].as_str().is_some_and(|t| t.contains("tlsca") && t.contains("ca.pem")), "{h}");
    }
    let served = site.health()["tls"].to_string();
    assert!(served.contains("srv.pem") && served.contains("srv.key"), "{served}");

    // Python requests, verifying the listener with the CA.
    if Command::new("python3").args(["-c", "import requests"]).status().is_ok_and(|s| s.success()) {
        let script = format!(
            "import requests\nr = requests.post('{}', data=b'mem value=3 1600000000000000002', verify='{}')\n\
             assert r.status_code == 204, r.text\n\
             r = requests.get('{}', params={{'db': '{DB}', 'q': 'SELECT count(value) FROM mem WHERE time > 0'}}, verify='{}')\n\
             print(r.status_code)\n",
            site.url(&format!("/write?db={DB}")),
            site.ca(),
            site.url("/query"),
            site.ca()
        );
        let out = run(Command::new("python3").args(["-c", &script]));
        assert_eq!(out.trim(), "200");
        wait_until(WAIT, "the Python write", || i1.count(&site.pki, "mem") == 3);
    }
    let m = curl(&site.ca(), &[&site.url("/metrics")]).1;
    assert!(m.contains("influx_proxy_write_requests_total"), "metrics over https: {m}");
}

#[test]
fn a_wrong_ca_marks_the_backend_down_and_a_reload_with_the_right_one_delivers_everything() {
    if !tools() {
        return;
    }
    let pki = Pki::new();
    let i1 = HttpsInfluxd::start(&pki);
    let wrong = pki.path("other-ca.pem");
    let config = |ca: &str| {
        ProxyConfig::new()
            .backend("i1", &i1.url(), &[("tlsca", ca), ("interval", "20"), ("checkinterval", "200")])
            .keymap("_default_", &["i1"])
    };
    let site = Site::start(pki, config(&wrong), &[]);
    for i in 0..50 {
        assert_eq!(site.write(&format!("cpu value={i} {}", 1_600_000_000_000_000_000u64 + i)).0, 204);
    }
    wait_until(WAIT, "the backend marked down for its certificate", || {
        let h = site.backend_health("i1");
        h["up"] == false && h["last_error"].as_str().is_some_and(|e| e.contains("unknown issuer"))
    });
    let h = site.backend_health("i1");
    let error = h["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("certificate") && error.contains("other-ca.pem"), "{error}");
    assert_eq!(i1.count(&site.pki, "cpu"), 0);
    assert!(h["backlog_records"].as_u64().unwrap_or(0) > 0, "the data waits in the outbox: {h}");

    config(&site.pki.path("ca.pem")).node("n1", &node_fields(&site)).write_to(&site.redis);
    assert_eq!(site.reload(), 204);
    wait_until(WAIT, "all 50 lines delivered after the reload", || i1.count(&site.pki, "cpu") == 50);
    wait_until(WAIT, "the backend up again", || site.backend_health("i1")["up"] == true);
}

/// The node fields `Site::start` wrote, for a test that rewrites the config.
fn node_fields(site: &Site) -> Vec<(&'static str, &'static str)> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        ("listenaddr", leak(format!("127.0.0.1:{}", site.port))),
        ("tlscert", leak(site.pki.path("srv.pem"))),
        ("tlskey", leak(site.pki.path("srv.key"))),
        ("interval", "0"),
    ]
}

#[test]
fn tlsinsecure_skips_verification_and_says_so_at_every_load() {
    if !tools() {
        return;
    }
    let pki = Pki::new();
    let i1 = HttpsInfluxd::start(&pki);
    let config = ProxyConfig::new()
        .backend("i1", &i1.url(), &[("tlsinsecure", "1"), ("interval", "20")])
        .keymap("_default_", &["i1"]);
    let site = Site::start(pki, config.clone(), &[]);
    assert_eq!(site.write("cpu value=1 1600000000000000000").0, 204);
    wait_until(WAIT, "the line delivered without verification", || i1.count(&site.pki, "cpu") == 1);
    let warnings = site.health()["config"]["warnings"].to_string();
    assert!(warnings.contains("tlsinsecure") && warnings.contains("NOT verified"), "{warnings}");
    // Every load repeats the warning.
    config.backend("spare", &i1.url(), &[("tlsinsecure", "1")]).node("n1", &node_fields(&site)).write_to(&site.redis);
    assert_eq!(site.reload(), 204);
    wait_until(WAIT, "the warning logged at the reload too", || {
        site.proxy.log().matches("tlsinsecure = 1").count() >= 3
    });
}

/// The serial `openssl s_client` sees on a new connection to the proxy.
fn served_serial(site: &Site) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", site.port), "-CAfile", &site.ca()])
        .args(["-verify_return_error", "-servername", "localhost"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    x509.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    String::from_utf8_lossy(&x509.wait_with_output().unwrap().stdout).trim().to_string()
}

/// A keep-alive https connection made with rustls, verifying with `ca`.
fn tls_connection(port: u16, ca: &str) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One keep-alive `GET /ping` on `stream`; the status.
fn ping_on(stream: &mut impl ReadWrite) -> u16 {
    stream.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf[9..12]).parse().unwrap()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn a_rotated_certificate_serves_new_connections_and_open_ones_keep_going() {
    if !tools() {
        return;
    }
    let (_i1, mut site) = site_with_https_backend(&[], &[]);
    assert_eq!(served_serial(&site), "serial=03E9");
    let mut open = tls_connection(site.port, &site.ca());
    assert_eq!(ping_on(&mut open), 204);

    // New files in place (as certbot or cert-manager would): the config poll notices.
    site.pki.issue("srv", "ca", 2002);
    wait_until(WAIT, "the new certificate served", || served_serial(&site) == "serial=07D2");
    assert_eq!(ping_on(&mut open), 204, "the connection opened before the rotation still works");
    assert!(site.proxy.log().contains("config version 2 applied"), "{}", site.proxy.log_tail(20));

    // A broken new certificate keeps the one in force, and says why.
    std::fs::write(site.pki.path("srv.pem"), "-----BEGIN CERTIFICATE-----\nnot base64 !\n").unwrap();
    wait_until(WAIT, "the broken certificate reported in /health", || {
        site.health()["config"]["last_error"].as_str().is_some_and(|e| e.contains("srv.pem"))
    });
    assert_eq!(served_serial(&site), "serial=07D2");
    assert!(site.proxy.log().contains("srv.pem"), "logged too");
    assert_eq!(site.reload(), 400, "/reload answers the problem");

    // Fixed, then picked up by SIGHUP as well as by the poll.
    site.pki.issue("srv", "ca", 3003);
    site.proxy.signal(libc::SIGHUP);
    wait_until(WAIT, "the fixed certificate served", || served_serial(&site) == "serial=0BBB");
    wait_until(WAIT, "the error cleared", || site.health()["config"]["last_error"].is_null());
    assert_eq!(ping_on(&mut open), 204);
}

#[test]
fn plain_http_garbage_and_stalled_handshakes_on_the_tls_port() {
    if !tools() {
        return;
    }
    let (_i1, site) = site_with_https_backend(&[], &[("idletimeout", "2")]);
    let addr = ("127.0.0.1", site.port);

    // Plain HTTP: Go's plain-text 400, then the connection is closed.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    plain.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 400") && answer.contains("HTTPS server"), "{answer:?}");
    let (status, body) = curl(&site.ca(), &[&format!("http://127.0.0.1:{}/ping", site.port)]);
    assert_eq!(status, 400, "{body}");

    // Garbage that starts like a TLS record: an alert or a close, never a hang.
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    junk.write_all(b"\x16\x03\x01\x00\x05hello-not-a-client-hello").unwrap();
    let mut rest = Vec::new();
    let _ = junk.read_to_end(&mut rest);
    assert!(rest.len() < 64 && !rest.starts_with(b"HTTP"), "{rest:?}");

    // A stalled handshake (connected, sends nothing) and a half handshake are timed out like idle
    // connections; meanwhile everyone else is served.
    let mut stalled = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(curl(&site.ca(), &[&site.url("/ping")]).0, 204);
    }
    for s in [&mut stalled, &mut half] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(8), "closed after {took:?}");
    assert!(site.proxy.log().lines().all(|l| !l.contains("panic")));
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_tlsclientca() {
    if !tools() {
        return;
    }
    let pki = Pki::new();
    let i1 = HttpsInfluxd::start(&pki);
    pki.issue("stranger", "other-ca", 4004);
    let config =
        ProxyConfig::new().backend("i1", &i1.url(), &[("tlsca", &pki.path("ca.pem"))]).keymap("_default_", &["i1"]);
    let client_ca = pki.path("ca.pem");
    let site = Site::start(pki, config, &[("tlsclientca", &client_ca)]);
    let write = format!("/write?db={DB}");
    let (status, body) = curl(&site.ca(), &["-XPOST", &site.url(&write), "--data-binary", "cpu value=1"]);
    assert_eq!(status, 0, "no client certificate, no request: {body}");
    let (cert, key) = (site.pki.path("stranger.pem"), site.pki.path("stranger.key"));
    let (status, _) = curl(
        &site.ca(),
        &["--cert", &cert, "--key", &key, "-XPOST", &site.url(&write), "--data-binary", "cpu value=1"],
    );
    assert_eq!(status, 0, "a certificate from another CA is refused");
    let (cert, key) = (site.pki.path("client.pem"), site.pki.path("client.key"));
    let (status, body) = curl(
        &site.ca(),
        &[
            "--cert",
            &cert,
            "--key",
            &key,
            "-XPOST",
            &site.url(&write),
            "--data-binary",
            "cpu value=1 1600000000000000000",
        ],
    );
    assert_eq!(status, 204, "{body}");
    wait_until(WAIT, "the mTLS write delivered", || i1.count(&site.pki, "cpu") == 1);
}

/// Runs `config.py` on the config `json` (its `--from` format) with `args`: (exit code, stderr).
fn config_py(json: &serde_json::Value, dir: &TempDir, args: &[&str]) -> (i32, String) {
    let file = dir.join("config.json");
    std::fs::write(&file, json.to_string()).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("--from")
        .arg(&file)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python3 config.py");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// config.py writes every TLS field (an https url, `tlsca`, `tlsinsecure`, `tlscert`, `tlskey`,
/// `tlsclientca`) into Redis, where the proxy puts them in force, and refuses the combinations the
/// proxy refuses.
#[test]
fn config_py_writes_the_tls_fields() {
    let python_redis = Command::new("python3").args(["-c", "import redis"]).status().is_ok_and(|s| s.success());
    if !tools() || !python_redis {
        eprintln!("skipped: needs python3 with its redis package too");
        return;
    }
    let (i1, site) = site_with_https_backend(&[], &[]);
    let (ca, cert, key) = (site.ca(), site.pki.path("srv.pem"), site.pki.path("srv.key"));
    let node = serde_json::json!({
        "listenaddr": format!("127.0.0.1:{}", site.port), "interval": 0,
        "tlscert": cert, "tlskey": key, "tlsclientca": ca,
    });
    let backend = serde_json::json!({ "url": i1.url(), "tlsca": ca, "tlsinsecure": false, "interval": 20 });
    let config = serde_json::json!({
        "DEFAULT_NODE": {}, "NODES": { "n1": node }, "BACKENDS": { "py": backend }, "KEYMAPS": { "_default_": ["py"] },
    });
    let dir = TempDir::new("config-py-tls");
    let port = site.redis.port().to_string();
    let (code, err) = config_py(&config, &dir, &["-p", &port]);
    assert_eq!(code, 0, "config.py refused the TLS fields: {err}");
    // With a client certificate: the poller may have applied the new config already.
    let (cert, key) = (site.pki.path("client.pem"), site.pki.path("client.key"));
    let with_cert =
        |args: &[&str]| curl(&site.ca(), &[&["--cert", cert.as_str(), "--key", key.as_str()], args].concat());
    assert_eq!(with_cert(&["-XPOST", &site.url("/reload")]).0, 204);

    // The client CA is in force (no certificate, no request), and the https backend written by
    // config.py gets the lines.
    let write = site.url(&format!("/write?db={DB}"));
    assert_eq!(site.write("cpu value=1 1600000000000000000").0, 0, "a client without a certificate got an answer");
    let (status, body) = with_cert(&["-XPOST", &write, "--data-binary", "cpu value=2 1600000000000000000"]);
    assert_eq!(status, 204, "{body}");
    wait_until(WAIT, "the line delivered to config.py's https backend", || i1.count(&site.pki, "cpu") == 1);
    let (_, health) = with_cert(&[&site.url("/health")]);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["config"]["last_error"], serde_json::Value::Null, "{health}");
    assert_eq!(health["backends"][0]["name"], "py", "{health}");

    // What the proxy would refuse, config.py refuses before writing anything.
    let refused = [
        ("/NODES/n1/tlskey", serde_json::Value::Null, "must be set together"),
        ("/NODES/n1/tlscert", serde_json::Value::Null, "must be set together"),
        ("/BACKENDS/py/tlsinsecure", serde_json::json!("maybe"), "must be 0 or 1"),
        ("/BACKENDS/py/url", serde_json::json!("ftp://127.0.0.1:1"), "http(s)://"),
    ];
    for (field, value, reason) in refused {
        let mut bad = config.clone();
        *bad.pointer_mut(field).unwrap() = value;
        if let serde_json::Value::Object(node) = &mut bad["NODES"]["n1"] {
            node.retain(|_, v| !v.is_null());
        }
        let (code, err) = config_py(&bad, &dir, &["--json"]);
        assert!(code == 1 && err.contains(reason), "{field}: exit {code}: {err}");
    }
    let mut bad = config.clone();
    let node = bad["NODES"]["n1"].as_object_mut().unwrap();
    node.remove("tlscert");
    node.remove("tlskey");
    let (code, err) = config_py(&bad, &dir, &["--json"]);
    assert!(code == 1 && err.contains("'tlsclientca' needs"), "exit {code}: {err}");
    // A client CA shared by every node in DEFAULT_NODE, each node with its own certificate, is what
    // the proxy accepts (it merges the two): config.py too.
    let mut shared = config.clone();
    let ca = shared["NODES"]["n1"].as_object_mut().unwrap().remove("tlsclientca").unwrap();
    shared["DEFAULT_NODE"]["tlsclientca"] = ca;
    let (code, err) = config_py(&shared, &dir, &["--json"]);
    assert_eq!(code, 0, "a shared tlsclientca: {err}");
}

#[test]
fn an_ip_url_is_verified_against_the_ip_sans() {
    if !tools() {
        return;
    }
    let pki = Pki::new();
    pki.issue_for("dns-only", "ca", 5005, "DNS:localhost");
    let i1 = HttpsInfluxd::start_with(&pki, "dns-only");
    let config = ProxyConfig::new()
        .backend("i1", &i1.url(), &[("tlsca", &pki.path("ca.pem")), ("checkinterval", "200")])
        .keymap("_default_", &["i1"]);
    let site = Site::start(pki, config, &[]);
    wait_until(WAIT, "the backend marked down: its certificate has no IP SAN for 127.0.0.1", || {
        let h = site.backend_health("i1");
        h["up"] == false && h["last_error"].as_str().is_some_and(|e| e.contains("not valid for name \"127.0.0.1\""))
    });
}

#[test]
fn compressed_batches_larger_than_the_socket_buffer_reach_an_https_backend_without_a_stall() {
    // Batches of barely compressible lines (4 MiB each, ~3 MB gzipped) over TLS: each request takes
    // many writable events, and every byte the TLS layer holds must reach the socket without waiting
    // for the send timeout (30 s here, longer than the wait below).
    if !tools() {
        return;
    }
    let (i1, site) = site_with_https_backend(&[("interval", "20"), ("gzip", "1"), ("timeout", "30000")], &[]);
    let mut rng = util::rng::Rng(0x9e37_79b9_7f4a_7c15);
    let mut random = || rng.next();
    let mut body = String::new();
    for i in 0..90_000u64 {
        body.push_str(&format!(
            "noise,h={:x} value={i},s=\"{:x}{:x}{:x}\" {}\n",
            random(),
            random(),
            random(),
            random(),
            1_600_000_000_000_000_000u64 + i
        ));
    }
    assert!(body.len() > 8 << 20, "{} bytes", body.len());
    let file = site.pki.dir.join("noise.txt");
    std::fs::write(&file, &body).unwrap();
    let (status, answer) = post_file(&site, &file, &[]);
    assert_eq!(status, 204, "{answer}");
    wait_until(WAIT, "every line on the https backend", || i1.count(&site.pki, "noise") == 90_000);
}

#[test]
fn batches_stored_gzip_reach_an_https_backend() {
    // Bodies that are batches as they stand are stored gzip and lent from the log to the TLS layer:
    // one the client compressed (forwarded as it came), one the proxy compressed when storing it.
    if !tools() {
        return;
    }
    let (i1, site) = site_with_https_backend(&[("interval", "20"), ("gzip", "1")], &[]);
    let lines = |m: &str| -> String {
        (0..3000u64).map(|i| format!("{m},host=h{} value={i} {}\n", i % 40, 1_600_000_000_000_000_000u64 + i)).collect()
    };
    let gz = site.pki.dir.join("whole.gz");
    std::fs::write(&gz, util::http::gzip_two_members(lines("forwarded").as_bytes())).unwrap();
    let plain = site.pki.dir.join("whole.txt");
    std::fs::write(&plain, lines("compressed")).unwrap();
    for (file, headers) in [(&gz, &["-H", "Content-Encoding: gzip"][..]), (&plain, &[][..])] {
        let (status, answer) = post_file(&site, file, headers);
        assert_eq!(status, 204, "{answer}");
    }
    for m in ["forwarded", "compressed"] {
        wait_until(WAIT, &format!("every {m} line on the https backend"), || i1.count(&site.pki, m) == 3000);
    }
}
