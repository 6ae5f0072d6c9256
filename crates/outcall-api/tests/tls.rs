//! HTTPS: the API served through [`TlsListener`] to a client that trusts the certificate, and
//! the errors an operator sees for bad certificate files. Certificates are made with the
//! `openssl` command.

use outcall_api::tls::{server_config, TlsListener};

use outcall_testkit::private_ca as self_signed;

#[tokio::test]
async fn api_answers_over_https_to_a_client_that_trusts_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    let config = server_config(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener::new(tcp, config).unwrap();
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let res = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");

    // A client that does not trust the certificate is refused the handshake…
    let strict = reqwest::Client::new();
    assert!(strict
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err());
    // …and plain HTTP to the HTTPS port gets no answer; the listener keeps serving.
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .is_err());
    let again = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

#[test]
fn bad_certificate_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing =
        server_config(&dir.path().join("nope.pem"), &dir.path().join("key.pem")).unwrap_err();
    assert!(missing.contains("nope.pem"), "{missing}");
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let empty =
        server_config(&dir.path().join("empty.pem"), &dir.path().join("empty.pem")).unwrap_err();
    assert!(empty.contains("no certificate"), "{empty}");
    // A key that does not belong to the certificate.
    self_signed(dir.path());
    std::fs::rename(dir.path().join("cert.pem"), dir.path().join("cert1.pem")).unwrap();
    std::fs::remove_file(dir.path().join("key.pem")).unwrap();
    self_signed(dir.path());
    let mismatch =
        server_config(&dir.path().join("cert1.pem"), &dir.path().join("key.pem")).unwrap_err();
    assert!(mismatch.contains("do not match"), "{mismatch}");
}
