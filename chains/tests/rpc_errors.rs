#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! RPC failures are classified: unreachable vs timeout vs node error vs
//! malformed answer. Misbehaving "nodes" here are loopback sockets that
//! answer one request each; no chain logic is mocked.

mod common;

use std::time::Duration;

use common::anvil::Anvil;
use custos_chains::ChainError;
use custos_chains::evm::rpc::{EvmRpc, RpcConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn client(url: &str, timeout_ms: u64) -> EvmRpc {
    let mut config = RpcConfig::new(url);
    config.timeout = Duration::from_millis(timeout_ms);
    EvmRpc::new(config).unwrap()
}

/// Serves one HTTP response (or none, if `reply` is `None`) per connection,
/// for at most `connections` connections.
async fn one_shot_server(reply: Option<String>, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/secret-api-key", listener.local_addr().unwrap());
    tokio::spawn(async move {
        for _ in 0..connections {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
                match reply {
                    Some(r) => {
                        let _ = sock.write_all(r.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(3)).await,
                }
            });
        }
    });
    url
}

fn http(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = client(&format!("http://127.0.0.1:{port}/key123"), 2000)
        .chain_id()
        .await
        .unwrap_err();
    assert!(matches!(err, ChainError::RpcUnreachable(_)), "{err:?}");
    assert!(!err.to_string().contains("key123"), "URL leaked: {err}");
}

#[tokio::test]
async fn silent_node_times_out() {
    let url = one_shot_server(None, 1).await;
    let err = client(&url, 300).block_number().await.unwrap_err();
    assert!(
        matches!(
            err,
            ChainError::RpcTimeout {
                method: "eth_blockNumber",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_and_protocol_violations_are_malformed() {
    for body in [
        "not json",
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":"0xzz"}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":12}"#,
        r#"{"jsonrpc":"2.0","id":99,"result":"0x1"}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":"0x10000000000000000"}"#,
    ] {
        let url = one_shot_server(Some(http("200 OK", body)), 1).await;
        let err = client(&url, 2000).chain_id().await.unwrap_err();
        assert!(
            matches!(err, ChainError::RpcMalformed { .. }),
            "{body}: {err:?}"
        );
    }
}

#[tokio::test]
async fn node_errors_and_http_errors_are_typed() {
    let body = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"method not found"}}"#;
    let url = one_shot_server(Some(http("200 OK", body)), 1).await;
    let err = client(&url, 2000).chain_id().await.unwrap_err();
    assert!(
        matches!(
            &err,
            ChainError::RpcError {
                code: -32601,
                method: "eth_chainId",
                ..
            }
        ),
        "{err:?}"
    );

    let url = one_shot_server(Some(http("503 Service Unavailable", "busy")), 1).await;
    let err = client(&url, 2000).chain_id().await.unwrap_err();
    assert!(matches!(err, ChainError::RpcUnreachable(_)), "{err:?}");
    assert!(!err.to_string().contains("secret-api-key"));
}

#[tokio::test]
async fn missing_priority_fee_method_falls_back() {
    let body = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"the method eth_maxPriorityFeePerGas does not exist"}}"#;
    let url = one_shot_server(Some(http("200 OK", body)), 1).await;
    let mut config = RpcConfig::new(&url);
    config.fallback_priority_fee = 1234;
    assert_eq!(
        EvmRpc::new(config).unwrap().priority_fee().await.unwrap(),
        1234
    );
}

#[tokio::test]
async fn config_is_validated_and_url_redacted() {
    assert!(EvmRpc::new(RpcConfig::new("ftp://x")).is_err());
    assert!(EvmRpc::new(RpcConfig::new("not a url")).is_err());
    let mut zero = RpcConfig::new("http://127.0.0.1:1");
    zero.timeout = Duration::ZERO;
    assert!(EvmRpc::new(zero).is_err());
    let rpc = EvmRpc::new(RpcConfig::new("https://node.example/v3/abcdef0123456789")).unwrap();
    let debug = format!("{rpc:?}");
    assert!(!debug.contains("abcdef0123456789"), "{debug}");
    assert!(debug.contains("node.example"), "{debug}");
}

#[tokio::test]
async fn anvil_rejects_garbage_transactions_as_tx_rejected() {
    let anvil = Anvil::start().await;
    let rpc = anvil.rpc();
    let err = rpc.send_raw_transaction(&[0x02, 0xc0]).await.unwrap_err();
    assert!(matches!(err, ChainError::TxRejected { .. }), "{err:?}");
    let err = rpc.request("no_such_method", json!([])).await.unwrap_err();
    assert!(matches!(err, ChainError::RpcError { .. }), "{err:?}");
    assert!(
        rpc.transaction_receipt(Default::default())
            .await
            .unwrap()
            .is_none()
    );
}
