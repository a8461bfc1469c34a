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

    let admins: Vec<_> = test.cluster.brokers.iter().map(|b| b.spec.admin).collect();
    let failures = keel_tests::metric_sum(&admins, "keel_broker_sasl_authentication_failures_total").await;
    assert!(failures >= 3.0, "failed authentications counted: {failures}");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}
