//! SASL listeners (issue 22): SASL_SSL and SASL_PLAINTEXT beside the
//! brokers' own PLAINTEXT one, SCRAM credentials kept by the controllers.
//! `clients/sasl.py` (confluent-kafka) makes credentials, produces and
//! consumes with SCRAM-SHA-512 and -256, logs in with PLAIN, and checks the
//! errors of wrong passwords and removed credentials; kcat produces over
//! SASL_SSL; raw requests check what Kafka does before authentication.

use std::path::PathBuf;
use std::time::Duration;

use kafka_protocol::messages::{MetadataRequest, SaslHandshakeRequest};
use keel_tests::TestCluster;
use keel_tools::kafka;

#[tokio::test(flavor = "multi_thread")]
async fn scram_and_plain_clients_authenticate_and_bad_credentials_get_kafkas_errors() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    crate::broker_tls::make_certificates(dir, test.cluster.ip());
    test.start_wal_nodes(3).await.unwrap();
    let ip = test.cluster.ip();
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let args = [
        "--listeners".to_owned(),
        format!("SASL_SSL://{ip}:0,SASL_PLAINTEXT://{ip}:0"),
        "--sasl-enabled-mechanisms".into(),
        "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN".into(),
        "--ssl-certificate".into(),
        file("server.pem"),
        "--ssl-private-key".into(),
        file("server-key.pem"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    test.start_brokers(3, &args).await.unwrap();
    let sasl_ssl = crate::broker_tls::listener_addresses(&test, "SASL_SSL").await.join(",");
    let sasl_plaintext = crate::broker_tls::listener_addresses(&test, "SASL_PLAINTEXT").await;

    // Before authentication: only ApiVersions and the SASL requests; an
    // unknown mechanism gets UNSUPPORTED_SASL_MECHANISM with the list.
    let connection = kafka::Connection::connect(&sasl_plaintext[0]).await.unwrap();
    let handshake = SaslHandshakeRequest::default().with_mechanism("OAUTHBEARER".into());
    let answer = connection.send(1, &handshake).await.unwrap();
    assert_eq!(answer.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    let offered: Vec<String> = answer.mechanisms.iter().map(|m| m.to_string()).collect();
    assert_eq!(offered, ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]);
    let connection = kafka::Connection::connect(&sasl_plaintext[0]).await.unwrap();
    let metadata = connection.send(kafka::METADATA_VERSION, &MetadataRequest::default()).await;
    assert!(metadata.is_err(), "Metadata before authentication closes the connection: {metadata:?}");

    let clients = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap()).join("clients");
    let run = tokio::process::Command::new(keel_tools::launcher::python())
        .arg(clients.join("sasl.py"))
        .args([&test.cluster.bootstrap(), &sasl_ssl, &sasl_plaintext.join(","), &file("ca.pem")])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run).await.expect("sasl.py ended").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "sasl.py:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));

    // kcat (Debian's librdkafka) over SASL_SSL with SCRAM-SHA-512.
    let settings = [
        "security.protocol=SASL_SSL".to_owned(),
        "sasl.mechanism=SCRAM-SHA-512".into(),
        "sasl.username=orders-service".into(),
        "sasl.password=correct horse battery staple".into(),
        format!("ssl.ca.location={}", file("ca.pem")),
    ];
    let mut kcat_args: Vec<&str> = vec!["-b", &sasl_ssl];
    for setting in &settings {
        kcat_args.extend(["-X", setting]);
    }
    let input: String = (0..50).map(|i| format!("kcat-{i}\n")).collect();
    crate::broker_kcat::kcat(&[&kcat_args[..], &["-P", "-t", "kcat-secured"]].concat(), &input).await;
    let read =
        crate::broker_kcat::kcat(&[&kcat_args[..], &["-C", "-t", "kcat-secured", "-e", "-q"]].concat(), "").await;
    assert_eq!(read.lines().count(), 50, "read back over SASL_SSL: {read}");

    // keelctl user: the password from standard input, listed, used, removed.
    let run_keelctl = |args: &[&str], input: &str| {
        let mut command = keel_tests::keelctl(&test);
        command.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        command.stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("keelctl runs");
        let input = input.to_owned();
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        async move {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.as_bytes()).await.unwrap();
            drop(stdin);
            let output = child.wait_with_output().await.unwrap();
            let text =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            assert!(output.status.success(), "keelctl {args:?}: {text}");
            text
        }
    };
    let said = run_keelctl(&["user", "set", "cli-user", "--mechanism", "SCRAM-SHA-256"], "from-stdin pw\n").await;
    assert!(said.contains("set cli-user's SCRAM-SHA-256 credential (8192 iterations)"), "{said}");
    let listed = run_keelctl(&["user", "list", "--json"], "").await;
    let users: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let cli_user = users.as_array().unwrap().iter().find(|u| u["name"] == "cli-user").expect("cli-user listed");
    assert_eq!(cli_user["credentials"], serde_json::json!([{"mechanism": "SCRAM-SHA-256", "iterations": 8192}]));
    let login = |password: &'static str| {
        let settings = [
            "security.protocol=SASL_SSL".to_owned(),
            "sasl.mechanism=SCRAM-SHA-256".into(),
            "sasl.username=cli-user".into(),
            format!("sasl.password={password}"),
            format!("ssl.ca.location={}", file("ca.pem")),
        ];
        let mut args: Vec<String> = vec!["-b".into(), sasl_ssl.clone(), "-m".into(), "5".into(), "-L".into()];
        for setting in settings {
            args.extend(["-X".into(), setting]);
        }
        async move { crate::broker_kcat::kcat_output(&args, "").await.status.success() }
    };
    assert!(login("from-stdin pw").await, "kcat logs in with the password keelctl set");
    assert!(!login("other").await, "and not with another");
    let said = run_keelctl(&["user", "delete", "cli-user"], "").await;
    assert!(said.contains("removed cli-user's SCRAM-SHA-256 credential"), "{said}");
    assert!(!login("from-stdin pw").await, "a removed user cannot log in");

    let admins: Vec<_> = test.cluster.brokers.iter().map(|b| b.spec.admin).collect();
    let failures = keel_tests::metric_sum(&admins, "keel_broker_sasl_authentication_failures_total").await;
    assert!(failures >= 3.0, "failed authentications counted: {failures}");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}
