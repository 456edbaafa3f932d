//! The coordinator refuses bad configuration with a message naming the field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use custos_devkit::ClusterSpec;

fn layout() -> (tempfile::TempDir, custos_devkit::ClusterLayout) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path().join("c"));
    spec.base_port = custos_devkit::free_base_port();
    let layout = custos_devkit::generate(&spec).unwrap();
    (dir, layout)
}

fn run(config: &std::path::Path) -> (i32, String) {
    let mut child = Command::new(custos_tests::bin_dir().join("custos-coordinator"))
        .arg("--config")
        .arg(config)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    panic!("coordinator did not exit on bad config: {err}");
}

#[test]
fn bad_coordinator_config_exits_78_naming_the_problem() {
    let (_d, layout) = layout();
    let cfg = std::fs::read_to_string(&layout.coordinator.config).unwrap();

    let missing = cfg
        .lines()
        .filter(|l| !l.starts_with("grpc_listen"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&layout.coordinator.config, &missing).unwrap();
    let (code, err) = run(&layout.coordinator.config);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("missing field `grpc_listen`"), "{err}");

    std::fs::write(&layout.coordinator.config, format!("{cfg}\nsurprise = 1\n")).unwrap();
    let (code, err) = run(&layout.coordinator.config);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("unknown field `surprise`"), "{err}");

    // A known chain declared with the wrong family is refused, naming both.
    std::fs::write(
        &layout.coordinator.config,
        format!(
            "{cfg}\n[[chains]]\nname = \"litecoin-regtest\"\nkind = \"evm\"\nchain_id = 1\n\
             rpc_url = \"http://127.0.0.1:9/\"\n"
        ),
    )
    .unwrap();
    let (code, err) = run(&layout.coordinator.config);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("chains[0].kind") && err.contains("its kind is \"utxo\", not \"evm\""),
        "{err}"
    );

    // A config from before hashed tokens: refused, naming the field and the migration.
    assert!(cfg.contains("token_store = \"tokens.json\""), "{cfg}");
    std::fs::write(
        &layout.coordinator.config,
        cfg.replace(
            "token_store = \"tokens.json\"",
            "admin_token_file = \"admin.token\"",
        ),
    )
    .unwrap();
    let (code, err) = run(&layout.coordinator.config);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains(
            "config field `auth.admin_token_file`: plain-text API tokens are no longer accepted"
        ),
        "{err}"
    );
    assert!(err.contains("custos token create"), "{err}");

    // A plain-text token where the store keeps a hash: refused, naming the entry.
    std::fs::write(&layout.coordinator.config, &cfg).unwrap();
    let store = std::fs::read_to_string(&layout.coordinator.token_store).unwrap();
    let admin = std::fs::read_to_string(&layout.coordinator.admin_token_file).unwrap();
    let v: serde_json::Value = serde_json::from_str(&store).unwrap();
    let hash = v["tokens"][0]["sha256"].as_str().unwrap();
    std::fs::write(
        &layout.coordinator.token_store,
        store.replace(hash, admin.trim()),
    )
    .unwrap();
    let (code, err) = run(&layout.coordinator.config);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("config field `auth.token_store`"), "{err}");
    assert!(
        err.contains("tokens[0].sha256: not a SHA-256 hash"),
        "{err}"
    );
    assert!(!err.contains(admin.trim()), "the token leaks: {err}");

    // No store at all.
    std::fs::remove_file(&layout.coordinator.token_store).unwrap();
    let (code, err) = run(&layout.coordinator.config);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("auth.token_store"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_endpoint_of_a_chain_must_be_on_its_chain_id() {
    // The primary is unreachable (only a warning), the fallback answers for
    // another chain: a config error naming the field, the endpoint redacted.
    let other_chain = custos_tests::anvil::Anvil::start_with(&["--chain-id", "999"]).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_d, layout) = layout();
    let cfg = std::fs::read_to_string(&layout.coordinator.config).unwrap();
    std::fs::write(
        &layout.coordinator.config,
        format!(
            "{cfg}\n[[chains]]\nname = \"anvil\"\nkind = \"evm\"\nchain_id = 31337\n\
             rpc_url = \"http://127.0.0.1:{dead}/primary-api-key\"\n\
             fallback_rpc_urls = [\"{}/?key=fallback-api-key\"]\nrpc_timeout_ms = 500\n",
            other_chain.url
        ),
    )
    .unwrap();
    let config = layout.coordinator.config.clone();
    let (code, err) = tokio::task::spawn_blocking(move || run(&config))
        .await
        .unwrap();
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("chains[0].chain_id"), "{err}");
    assert!(err.contains("is on chain 999"), "{err}");
    assert!(
        !err.contains("api-key"),
        "endpoint paths are redacted: {err}"
    );
}

/// The coordinator's log key with `unseal = "ceremony"` (issue 22): no
/// passphrase file anywhere; the coordinator waits sealed (`/healthz` 503
/// "sealed") until an operator gives the passphrase with `custos unseal`; a
/// wrong one is refused and the wait goes on.
#[test]
fn coordinator_log_key_unsealed_by_an_operator() {
    let (_d, layout) = layout();
    let c = &layout.coordinator;
    let cfg = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(
        &c.config,
        format!(
            "{cfg}\n[audit.signer]\nbackend = \"software\"\nkey_file = \"{}\"\nunseal = \"ceremony\"\ncreate_key = true\nkdf = {{ m_cost_kib = 19456, t_cost = 2, p_cost = 1 }}\n",
            c.data_dir.join("log-key.sealed").display()
        ),
    )
    .unwrap();
    let socket = c.data_dir.join("unseal.sock");
    let socket_arg = socket.to_str().unwrap().to_owned();
    let submit = |socket: &str, secret: &str| {
        let (ok, text, _) =
            custos_tests::unseal_cli(&["submit", "--socket", socket], &format!("{secret}\n"));
        (ok, text)
    };
    let spawn = || {
        let mut child = Command::new(custos_tests::bin_dir().join("custos-coordinator"))
            .arg("--config")
            .arg(&c.config)
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !socket.exists() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the coordinator exited"
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no unseal socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    };
    let until_unsealed = |child: &mut std::process::Child| {
        let started = std::time::Instant::now();
        while socket.exists() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the coordinator exited"
            );
            assert!(started.elapsed() < Duration::from_secs(30), "still sealed");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // First start: the log key and its KEK are made under the passphrase
    // the operator gives.
    let mut child = spawn();
    let (code, body) = custos_tests::http_get_blocking(c.metrics_listen, "/healthz");
    assert_eq!(
        (code, body.trim()),
        (503, "not ready: sealed (waiting for `custos unseal`)")
    );
    assert!(std::net::TcpStream::connect(c.grpc_listen).is_err());
    let (ok, text) = submit(&socket_arg, "log key passphrase");
    assert!(ok && text.contains("coordinator: unsealed"), "{text}");
    until_unsealed(&mut child);
    assert!(c.data_dir.join("log-key.sealed").exists());
    // Its TLS keys are sealed in place with the log key's sealer.
    let started = std::time::Instant::now();
    for key in [&c.server_key, &c.client_key] {
        while !std::fs::read(key).unwrap().starts_with(b"CSTSEAL") {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the coordinator exited"
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} not sealed",
                key.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(
        !c.data_dir.join("log-key.pass").exists(),
        "no passphrase is stored"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Next start: only that passphrase opens it.
    let mut child = spawn();
    let (ok, text) = submit(&socket_arg, "another passphrase");
    assert!(!ok && text.contains("does not open the key"), "{text}");
    assert_eq!(
        custos_tests::http_get_blocking(c.metrics_listen, "/healthz").0,
        503
    );
    let (ok, text) = submit(&socket_arg, "log key passphrase");
    assert!(ok, "{text}");
    until_unsealed(&mut child);
    child.kill().unwrap();
    child.wait().unwrap();
}
