//! The coordinator's listeners on a real cluster (issue 22; docs/SECURITY.md
//! cases 32, 49 and 50):
//!
//! - one API client flooding gRPC and HTTP gets `RESOURCE_EXHAUSTED` / 429
//!   with a retry-after, while another client, and the same client on
//!   another route, are unaffected;
//! - an oversized gRPC message or HTTP body is refused with a clear error;
//! - the HTTP API speaks TLS only (with the gRPC listener's certificate), and
//!   `/healthz` and `/metrics` are on the metrics listener, not the API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use custos_devkit::HttpTarget;
use custos_proto::custody::{GetKeyRequest, ListKeysRequest};
use custos_tests::{FlowSettings, WHITELISTED, flow_policy, metric, start_flow_on, withdrawal_req};

/// Low limits for the test: per client and route 5/s, bursts of 10;
/// webhook listing 1/s, bursts of 3; requests up to 64 KiB.
const LIMITS: &str = r#"[limits]
rate_per_sec = 5
burst = 10
max_request_bytes = 65536

[limits.routes."GET /v1/webhooks"]
per_sec = 1
burst = 3
"#;

fn token(layout: &custos_devkit::ClusterLayout, client: &str) -> String {
    let f = layout.client(client).unwrap().token_file.clone();
    std::fs::read_to_string(f).unwrap().trim().to_string()
}

async fn get(api: &HttpTarget, path: &str, token: &str) -> custos_devkit::HttpResponse {
    let auth = format!("Bearer {token}");
    api.request("GET", path, &[("Authorization", auth.as_str())], &[])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_limits_tls_and_listeners() {
    let fc = start_flow_on(
        &flow_policy(),
        false,
        &["w-hot"],
        FlowSettings {
            coordinator_toml: LIMITS,
            ..FlowSettings::default()
        },
    )
    .await;
    let layout = fc.tc.cluster.layout().clone();

    // ---- one client floods gRPC: refused with a retry-after; others are not.
    let started = Instant::now();
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let backend = fc.backend.clone();
            tokio::spawn(async move { backend.clone().list_keys(ListKeysRequest {}).await })
        })
        .collect();
    let mut ok = 0;
    let mut refused = Vec::new();
    for f in flood {
        match f.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => refused.push(e),
        }
    }
    let took = started.elapsed();
    // The burst, plus what the rate refilled meanwhile.
    let allowed = 10 + (took.as_secs_f64() * 5.0).ceil() as usize;
    assert!(ok >= 10 && ok <= allowed, "{ok} of 40 answered in {took:?}");
    assert!(!refused.is_empty());
    for e in &refused {
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
        assert!(e.message().contains("rate limit exceeded"), "{e}");
        let after: u64 = e
            .metadata()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&after), "retry-after {after}");
    }
    println!(
        "flood: {ok} answered, {} refused in {took:?}",
        refused.len()
    );
    // Another client on the same method, and the flooder on another method,
    // are unaffected.
    for _ in 0..5 {
        fc.auditor
            .clone()
            .list_keys(ListKeysRequest {})
            .await
            .unwrap();
    }
    fc.backend
        .clone()
        .get_key(GetKeyRequest {
            key_id: "w-hot".into(),
        })
        .await
        .unwrap();
    // After the announced wait, the flooder is served again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    fc.backend
        .clone()
        .list_keys(ListKeysRequest {})
        .await
        .unwrap();

    // ---- the same over HTTP: 429 with Retry-After, others unaffected.
    let api = HttpTarget::coordinator_api(&layout).unwrap();
    let backend = token(&layout, "payments-backend");
    let auditor = token(&layout, "auditor");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&api, "/v1/webhooks", &backend).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status).collect();
    assert_eq!(&codes[..3], [200, 200, 200], "{codes:?}");
    let limited = statuses.iter().find(|r| r.status == 429).unwrap();
    assert!(limited.header("retry-after").is_some(), "{limited:?}");
    assert!(
        limited.body.contains("rate limit exceeded"),
        "{}",
        limited.body
    );
    let other = get(&api, "/v1/ledger/invariants", &auditor).await;
    assert_eq!(other.status, 200, "{}", other.body);
    let same_client_other_route = get(&api, "/v1/webhooks/dead-letters", &backend).await;
    assert_eq!(same_client_other_route.status, 200);

    let metrics = layout.coordinator.metrics_listen;
    assert!(
        metric(
            metrics,
            r#"custos_requests_refused_total{listener="grpc",reason="rate_limited"}"#
        ) >= refused.len() as f64
    );
    assert!(
        metric(
            metrics,
            r#"custos_requests_refused_total{listener="http",reason="rate_limited"}"#
        ) >= 1.0
    );

    // ---- oversized requests are refused before they are decoded.
    let mut big = withdrawal_req("big", "w-hot", WHITELISTED, 1);
    big.memo = "x".repeat(100_000);
    let e = fc.backend.clone().create_withdrawal(big).await.unwrap_err();
    assert!(
        e.message().contains("message length too large") && e.message().contains("65536"),
        "{:?}: {}",
        e.code(),
        e.message()
    );
    println!("oversized gRPC request: {:?}: {}", e.code(), e.message());
    let body = serde_json::to_vec(&serde_json::json!({
        "url": "https://example.com/hook",
        "secret": "s".repeat(100_000),
    }))
    .unwrap();
    let auth = format!("Bearer {backend}");
    let r = api
        .request(
            "POST",
            "/v1/webhooks",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 413, "{}", r.body);
    println!("oversized HTTP body: {} {}", r.status, r.body.trim());

    // ---- TLS only on the API; health and metrics only on the metrics listener.
    let plain = HttpTarget::plain(layout.coordinator.http_listen.to_string())
        .with_timeout(Duration::from_secs(5));
    let auth = format!("Bearer {auditor}");
    match plain
        .request(
            "GET",
            "/v1/ledger/invariants",
            &[("Authorization", auth.as_str())],
            &[],
        )
        .await
    {
        Ok(r) => panic!("plain HTTP answered by the API listener: {r:?}"),
        Err(e) => println!("plain HTTP to the API listener: {e}"),
    }
    for path in ["/healthz", "/metrics"] {
        assert_eq!(get(&api, path, &auditor).await.status, 404, "{path}");
    }
    let (code, body) = custos_devkit::http_get(metrics, "/healthz").await.unwrap();
    assert_eq!(code, 200, "{body}");

    fc.tc.cluster.stop().await.unwrap();
}
