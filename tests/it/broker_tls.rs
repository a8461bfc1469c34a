//! SSL listeners (issue 22): each broker serves a PLAINTEXT listener (the
//! brokers' own) and an SSL one that requires a client certificate. kcat and
//! confluent-kafka produce and consume over SSL and are told the SSL
//! addresses; a client without a certificate or speaking plaintext is
//! refused without harm; the certificate is rotated under a producer with
//! no error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel_tests::TestCluster;

use crate::broker_kcat::kcat_output;

/// Runs `openssl args` in `dir`; fails the test if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/setup installs it)");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA, and certificates it signed: `NAME.pem` and `NAME-key.pem`, the
/// server's for `ip`, the client's for client authentication.
fn issue(dir: &Path, name: &str, subject: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    let key = format!("{name}-key.pem");
    let csr = format!("{name}.csr");
    let ext = format!("{name}.ext");
    let pem = format!("{name}.pem");
    openssl(
        dir,
        &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            .into_iter()
            .chain(["-keyout", &key, "-out", &csr, "-subj", subject])
            .collect::<Vec<_>>(),
    );
    openssl(
        dir,
        &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "2"]
            .into_iter()
            .chain(["-out", &pem, "-extfile", &ext])
            .collect::<Vec<_>>(),
    );
}

pub(crate) fn make_certificates(dir: &Path, ip: std::net::IpAddr) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=keel test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    issue(dir, "server", "/CN=broker", &format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n"));
    issue(dir, "client", "/CN=orders-service", "extendedKeyUsage=clientAuth\n");
}

/// The address of every broker on listener `name`, once all have registered theirs.
pub(crate) async fn listener_addresses(test: &TestCluster, name: &str) -> Vec<String> {
    let client = Arc::new(test.cluster.client().unwrap());
    let cancel = tokio_util::sync::CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let (images, follow) = keel_controller_client::follower::follow(client, cancel.clone());
    let mut following = tokio::task::JoinSet::new();
    following.spawn(follow);
    keel_tests::eventually(Duration::from_secs(30), "every broker registered the listener", || {
        let image = images.borrow().clone();
        async move {
            let addresses: Vec<String> =
                image.brokers.values().filter_map(|node| node.kafka_address(name).map(str::to_owned)).collect();
            (addresses.len() == 3).then_some(addresses)
        }
    })
    .await
}

/// The subject of the certificate a TLS server at `address` presents, as
/// `subject=CN=...` (spaces removed: OpenSSL 3 writes `CN = ...`).
fn served_subject(dir: &Path, address: &str) -> String {
    let output = std::process::Command::new("openssl")
        .args(["s_client", "-connect", address, "-CAfile", "ca.pem", "-cert", "client.pem", "-key", "client-key.pem"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = text.lines().find(|line| line.starts_with("subject=")).unwrap_or_else(|| panic!("no subject in {text}"));
    line.replace(' ', "")
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_clients_use_an_ssl_listener_with_client_certificates_and_rotation_drops_nothing() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    make_certificates(dir, test.cluster.ip());
    test.start_wal_nodes(3).await.unwrap();
    let ssl_listener = format!("SSL://{}:0", test.cluster.ip());
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client-key.pem"));
    let args = [
        "--listeners".to_owned(),
        ssl_listener,
        "--ssl-certificate".into(),
        file("server.pem"),
        "--ssl-private-key".into(),
        file("server-key.pem"),
        "--ssl-client-ca".into(),
        ca.clone(),
        "--ssl-client-auth".into(),
        "required".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    test.start_brokers(3, &args).await.unwrap();
    let addresses = listener_addresses(&test, "SSL").await;
    let bootstrap = addresses.join(",");
    let ssl = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["-b", &bootstrap, "-X", "security.protocol=SSL", "-X"]
            .into_iter()
            .map(str::to_owned)
            .chain([format!("ssl.ca.location={ca}")])
            .collect();
        args.extend(["-X".into(), format!("ssl.certificate.location={cert}")]);
        args.extend(["-X".into(), format!("ssl.key.location={key}")]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    // Metadata over SSL names the brokers at their SSL addresses only.
    let listed = kcat_output(&ssl(&["-L"]), "").await;
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.status.success(), "kcat -L over SSL: {}", String::from_utf8_lossy(&listed.stderr));
    for address in &addresses {
        assert!(listing.contains(&format!("at {address}")), "{address} missing from {listing}");
    }
    for plaintext in test.cluster.bootstrap().split(',') {
        assert!(!listing.contains(plaintext), "the plaintext address {plaintext} was given over SSL: {listing}");
    }

    // kcat produces and consumes over SSL.
    let input: String = (0..100).map(|i| format!("secure-{i}\n")).collect();
    let produced = kcat_output(&ssl(&["-P", "-t", "secure"]), &input).await;
    assert!(produced.status.success(), "kcat -P over SSL: {}", String::from_utf8_lossy(&produced.stderr));
    let consumed = kcat_output(&ssl(&["-C", "-t", "secure", "-e", "-q"]), "").await;
    let mut read: Vec<String> = String::from_utf8_lossy(&consumed.stdout).lines().map(str::to_owned).collect();
    read.sort();
    let mut wanted: Vec<String> = input.lines().map(str::to_owned).collect();
    wanted.sort();
    assert_eq!(read, wanted, "read back over SSL");

    // No client certificate, and plaintext on the SSL port: refused, counted.
    let admins: Vec<_> = test.cluster.brokers.iter().map(|b| b.spec.admin).collect();
    let failed_before = keel_tests::metric_total(&admins, "keel_broker_tls_handshakes_failed_total").await;
    let anonymous =
        ["-b", &bootstrap, "-X", "security.protocol=SSL", "-X", &format!("ssl.ca.location={ca}"), "-m", "5", "-L"];
    let anonymous: Vec<String> = anonymous.iter().map(|s| s.to_string()).collect();
    assert!(!kcat_output(&anonymous, "").await.status.success(), "a client without a certificate was served");
    let plaintext: Vec<String> = ["-b", &bootstrap, "-m", "5", "-L"].iter().map(|s| s.to_string()).collect();
    assert!(!kcat_output(&plaintext, "").await.status.success(), "a plaintext client was served on the SSL port");
    let failed = keel_tests::metric_total(&admins, "keel_broker_tls_handshakes_failed_total").await;
    assert!(failed >= failed_before + 2.0, "refused handshakes counted: {failed_before} -> {failed}");

    // Rotation under a producer: a new certificate with a new subject is
    // written over the old files and each broker gets SIGHUP; the producer
    // sees no error and new connections get the new certificate.
    assert_eq!(served_subject(dir, &addresses[0]), "subject=CN=broker");
    let clients = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap()).join("clients");
    let producer = tokio::process::Command::new(keel_tools::launcher::python())
        .arg(clients.join("tls_producer.py"))
        .args([&bootstrap, &ca, &cert, &key, "rotated", "600"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    issue(
        dir,
        "server",
        "/CN=broker-rotated",
        &format!("subjectAltName=IP:{}\nextendedKeyUsage=serverAuth\n", test.cluster.ip()),
    );
    for broker in &test.cluster.brokers {
        let pid = broker.pid().expect("the broker runs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    }
    let output = tokio::time::timeout(Duration::from_secs(120), producer.wait_with_output())
        .await
        .expect("the producer ended")
        .unwrap();
    assert!(
        output.status.success(),
        "producing across the rotation: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    keel_tests::eventually(Duration::from_secs(10), "new connections get the new certificate", || {
        let subject = served_subject(dir, &addresses[0]);
        async move { (subject == "subject=CN=broker-rotated").then_some(()) }
    })
    .await;
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}
