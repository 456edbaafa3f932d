//! `generate`: files, certificates, identities, configs, idempotency, modes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use custos_devkit::{
    ClusterLayout, ClusterSpec, DevkitError, FaultInjection, generate, peer_id_of_key_file,
};

/// The daemon's own config type (`deny_unknown_fields`): the schema is exact.
/// The start test in `cluster.rs` feeds the generated files to the real daemon.
use custos_signer_node::config::SignerConfig;

fn spec(dir: &Path) -> ClusterSpec {
    let mut s = ClusterSpec::new(dir.join("cluster"));
    s.base_port = 31000;
    s
}

fn openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `openssl verify` of `cert` against `ca` for `purpose`.
fn verify(ca: &Path, cert: &Path, purpose: &str) {
    let out = Command::new("openssl")
        .args(["verify", "-purpose", purpose, "-CAfile"])
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} does not chain to {} for {purpose}: {}{}",
        cert.display(),
        ca.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sans(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn secrets(l: &ClusterLayout) -> Vec<PathBuf> {
    let mut v = vec![
        l.ca_key.clone(),
        l.coordinator.server_key.clone(),
        l.coordinator.client_key.clone(),
        l.coordinator.admin_token_file.clone(),
        l.coordinator.token_store.clone(),
    ];
    v.extend(l.coordinator.clients.iter().map(|c| c.token_file.clone()));
    for s in &l.signers {
        v.extend([
            s.tls_key.clone(),
            s.identity_key.clone(),
            s.passphrase_file.clone(),
        ]);
    }
    v
}

fn all_material(l: &ClusterLayout) -> HashMap<PathBuf, Vec<u8>> {
    let mut files = secrets(l);
    files.push(l.ca_cert.clone());
    files.push(l.coordinator.server_cert.clone());
    files.push(l.coordinator.client_cert.clone());
    files.extend(l.signers.iter().map(|s| s.tls_cert.clone()));
    files
        .into_iter()
        .map(|f| {
            let b = std::fs::read(&f).unwrap();
            (f, b)
        })
        .collect()
}

#[test]
fn certificates_chain_to_the_dev_ca() {
    if !openssl() {
        eprintln!("openssl not installed: skipping certificate chain checks");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let l = generate(&spec(tmp.path())).unwrap();
    let c = &l.coordinator;
    verify(&l.ca_cert, &c.server_cert, "sslserver");
    verify(&l.ca_cert, &c.client_cert, "sslclient");
    let server_sans = sans(&c.server_cert);
    assert!(
        server_sans.contains("DNS:localhost") && server_sans.contains("IP Address:127.0.0.1"),
        "{server_sans}"
    );
    for s in &l.signers {
        verify(&l.ca_cert, &s.tls_cert, "sslserver");
        let sn = sans(&s.tls_cert);
        for want in [
            format!("DNS:{}", s.node_id),
            "DNS:localhost".into(),
            "IP Address:127.0.0.1".into(),
        ] {
            assert!(
                sn.contains(&want),
                "{} lacks {want}: {sn}",
                s.tls_cert.display()
            );
        }
    }
    // A foreign CA does not verify them.
    let other = tempfile::tempdir().unwrap();
    let l2 = generate(&spec(other.path())).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&l2.ca_cert)
        .arg(&l.signers[0].tls_cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn signer_configs_parse_with_the_daemon_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let primes = tmp.path().join("primes.json");
    std::fs::write(&primes, "[]").unwrap();
    let mut sp = spec(tmp.path());
    sp.primes_file = Some(primes.clone());
    sp.fault_injection
        .insert("signer-3".into(), FaultInjection::CorruptProtocolMessages);
    let l = generate(&sp).unwrap();
    assert_eq!(l.signers.len(), 3);
    for (i, s) in l.signers.iter().enumerate() {
        let text = std::fs::read_to_string(&s.config).unwrap();
        // The daemon's own struct (deny_unknown_fields): the schema is exact.
        let cfg: SignerConfig =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", s.config.display()));
        assert_eq!(cfg.node_id, format!("signer-{}", i + 1));
        assert_eq!(cfg.data_dir, Path::new("data"));
        assert_eq!(cfg.identity_key, Path::new("p2p.key"));
        assert_eq!(
            cfg.p2p_listen,
            vec![format!("/ip4/127.0.0.1/tcp/{}", 31110 + i)]
        );
        assert_eq!(
            cfg.control_listen.to_string(),
            format!("127.0.0.1:{}", 31010 + i)
        );
        assert_eq!(
            cfg.metrics.listen.to_string(),
            format!("127.0.0.1:{}", 31210 + i)
        );
        assert_eq!(cfg.session_timeout_secs, 60);
        assert_eq!(cfg.tls.client_ca, Path::new("../ca.pem"));
        assert_eq!(
            cfg.tls.coordinator_cert,
            Path::new("../coordinator/client.pem")
        );
        // Relative paths resolve from the config's directory to the real files.
        assert!(s.dir.join(&cfg.tls.cert).is_file());
        assert!(s.dir.join(&cfg.tls.key).is_file());
        assert!(s.dir.join(&cfg.tls.client_ca).is_file());
        assert!(s.dir.join(&cfg.tls.coordinator_cert).is_file());
        assert!(s.dir.join(&cfg.identity_key).is_file());
        assert_eq!(
            cfg.dev.primes_file.as_deref(),
            Some(std::fs::canonicalize(&primes).unwrap().as_path())
        );
        assert_eq!(cfg.dev.primes_index, i);
        assert_eq!(
            format!("{:?}", cfg.dev.fault_injection),
            if i == 2 {
                "CorruptProtocolMessages"
            } else {
                "None"
            }
        );
        let custos_hsm::SealerConfig::Software(sealer) = &cfg.sealer else {
            panic!("not the software sealer: {:?}", cfg.sealer)
        };
        assert_eq!(
            sealer.passphrase_file.as_deref(),
            Some(Path::new("passphrase"))
        );
        assert!(s.dir.join("passphrase").is_file());
        // Dev clusters create their KEK at the first start; the default is false.
        assert!(sealer.create_kek, "dev signers pass create_kek = true");
        assert_eq!(
            sealer.kdf,
            Some(custos_hsm::KdfParams {
                m_cost_kib: 19456,
                t_cost: 2,
                p_cost: 1
            })
        );
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["sealer"]["backend"].as_str(), Some("software"));
        assert_eq!(v["sealer"]["passphrase_file"].as_str(), Some("passphrase"));
        assert_eq!(v["sealer"]["kdf"]["m_cost_kib"].as_integer(), Some(19456));
        assert_eq!(v["sealer"]["kdf"]["t_cost"].as_integer(), Some(2));
        assert_eq!(v["sealer"]["kdf"]["p_cost"].as_integer(), Some(1));
        // Peers: every other signer, PeerIds matching their key files.
        assert_eq!(cfg.peers.len(), 2);
        for p in &cfg.peers {
            assert_ne!(p.node_id, cfg.node_id);
            let other = l.signer(&p.node_id).unwrap();
            assert_eq!(
                p.peer_id,
                peer_id_of_key_file(&other.identity_key)
                    .unwrap()
                    .to_base58()
            );
            assert_eq!(p.peer_id, other.peer_id);
            assert_eq!(p.address, other.p2p_listen);
        }
        assert_eq!(
            peer_id_of_key_file(&s.identity_key).unwrap().to_base58(),
            s.peer_id
        );
        // Co-signer checks: the admin set of the policy bundle; no log key
        // until a coordinator binary reported it.
        let admins = cfg.cosigner.admins.as_ref().unwrap();
        assert_eq!(admins, Path::new("../policy/admins.toml"));
        assert_eq!(
            std::fs::canonicalize(s.dir.join(admins)).unwrap(),
            l.policy.as_ref().unwrap().admins
        );
        assert_eq!(cfg.cosigner.log_key, None);
    }
    assert_eq!(l.log_key, None);
    // Dev clusters keep raw-digest signing by default...
    let plain = generate(&spec(&tmp.path().join("plain"))).unwrap();
    let text = std::fs::read_to_string(&plain.signers[0].config).unwrap();
    let cfg: SignerConfig = toml::from_str(&text).unwrap();
    assert!(cfg.dev.allow_raw_digest, "{text}");
    assert!(cfg.dev.primes_file.is_none());
    // ...and without primes, faults or raw digests there is no [dev] section at all.
    let mut locked = spec(&tmp.path().join("locked"));
    locked.raw_digest = false;
    let locked = generate(&locked).unwrap();
    assert!(!locked.raw_digest);
    let text = std::fs::read_to_string(&locked.signers[0].config).unwrap();
    assert!(!text.contains("[dev]"), "{text}");
    toml::from_str::<SignerConfig>(&text).unwrap();
    let text = std::fs::read_to_string(&locked.coordinator.config).unwrap();
    let cfg: custos_coordinator::config::CoordinatorConfig = toml::from_str(&text).unwrap();
    assert!(!cfg.dev.allow_sign_digest);
    assert!(
        !text.contains("[dev]"),
        "defaults only, so not written:\n{text}"
    );
}

#[test]
fn coordinator_config_and_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let l = generate(&spec(tmp.path())).unwrap();
    let c = &l.coordinator;
    let text = std::fs::read_to_string(&c.config).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    // The daemon's own type reads it (deny_unknown_fields).
    let cfg: custos_coordinator::config::CoordinatorConfig =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!((cfg.default_threshold, cfg.presignature_pool), (2, 4));
    // Only what this cluster chose is written: defaults are left to the
    // daemon (so tests can add a table or key without repeating one).
    for default in [
        "default_threshold",
        "presignature_pool",
        "risk",
        "limits",
        "ledger",
    ] {
        assert!(v.get(default).is_none(), "{default} written:\n{text}");
    }
    assert_eq!(
        v["events"]
            .as_table()
            .map(|t| t.keys().cloned().collect::<Vec<_>>()),
        Some(vec![
            "webhook_allow_http".to_owned(),
            "webhook_allow_private".to_owned()
        ])
    );
    assert_eq!(v["data_dir"].as_str(), Some("data"));
    assert_eq!(v["grpc_listen"].as_str(), Some("127.0.0.1:31000"));
    assert_eq!(v["http_listen"].as_str(), Some("127.0.0.1:31001"));
    assert_eq!(v["metrics"]["listen"].as_str(), Some("127.0.0.1:31002"));
    assert!(v.get("dev").and_then(|d| d.get("plain_http")).is_none());
    let mut no_pool = spec(&tmp.path().join("nopool"));
    no_pool.presignature_pool = 0;
    let np = generate(&no_pool).unwrap();
    let v0: toml::Value =
        toml::from_str(&std::fs::read_to_string(&np.coordinator.config).unwrap()).unwrap();
    assert_eq!(v0["presignature_pool"].as_integer(), Some(0));
    for (k, f) in [
        ("cert", "server.pem"),
        ("key", "server.key"),
        ("client_cert", "client.pem"),
        ("client_key", "client.key"),
        ("signer_ca", "../ca.pem"),
    ] {
        assert_eq!(v["tls"][k].as_str(), Some(f));
        assert!(c.dir.join(f).is_file(), "{f}");
    }
    // The coordinator gets the hashed token store only; the clients' copies
    // of their tokens sit beside it (0600) for the CLI and `dev up`'s output.
    assert_eq!(v["auth"]["token_store"].as_str(), Some("tokens.json"));
    assert!(v["auth"].get("admin_token_file").is_none());
    assert!(v["auth"].get("clients").is_none());
    assert_eq!(c.token_store, c.dir.join("tokens.json"));
    let store = custos_credentials::TokenStore::load(&c.token_store).unwrap();
    let store_text = std::fs::read_to_string(&c.token_store).unwrap();
    let now = custos_credentials::now_unix();
    let expected = [
        ("payments-backend", "backend"),
        ("approver-cli", "approver"),
        ("auditor", "auditor"),
    ];
    assert_eq!(c.clients.len(), expected.len());
    for (client, (id, role)) in c.clients.iter().zip(expected) {
        assert_eq!(client.id, id);
        assert_eq!(client.token_file, c.dir.join(format!("{id}.token")));
        assert_eq!(client.roles, vec![role.to_string()]);
        let token = std::fs::read_to_string(&client.token_file).unwrap();
        assert!(token.starts_with("custos_"), "{id}");
        assert!(
            !store_text.contains(&token[24..]),
            "{id}: plain text in the store"
        );
        let record = store.verify(&token, now).unwrap();
        assert_eq!(
            (record.client.as_str(), record.roles.clone()),
            (id, vec![role.to_string()])
        );
        assert!(record.expires_at.is_some(), "{id}: no expiry");
    }
    assert!(
        l.client("admin").is_none(),
        "the admin is not a generated client"
    );
    let admin = std::fs::read_to_string(&c.admin_token_file).unwrap();
    let record = store.verify(&admin, now).unwrap();
    assert_eq!(
        (record.client.as_str(), record.roles.clone()),
        ("admin", vec!["admin".to_string()])
    );
    // Distinct tokens: a role's token never opens another role.
    let mut tokens: Vec<String> = l
        .coordinator
        .clients
        .iter()
        .map(|c| std::fs::read_to_string(&c.token_file).unwrap())
        .collect();
    tokens.push(admin);
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 4);
    assert_eq!(store.tokens.len(), 4);
    assert_eq!(v["dev"]["allow_sign_digest"].as_bool(), Some(true));
    assert!(l.raw_digest);
    for (k, f) in [
        ("document", "../policy/policy.toml"),
        ("signatures", "../policy/policy.toml.sigs.json"),
        ("admins", "../policy/admins.toml"),
    ] {
        assert_eq!(v["policy"][k].as_str(), Some(f));
        assert!(c.dir.join(f).is_file(), "{f}");
    }
    let signers = v["signers"].as_array().unwrap();
    assert_eq!(signers.len(), 3);
    for (i, s) in signers.iter().enumerate() {
        assert_eq!(
            s["node_id"].as_str(),
            Some(format!("signer-{}", i + 1).as_str())
        );
        assert_eq!(
            s["endpoint"].as_str(),
            Some(format!("https://127.0.0.1:{}", 31010 + i).as_str())
        );
        assert_eq!(
            s["tls_name"].as_str(),
            Some(format!("signer-{}", i + 1).as_str())
        );
    }
    // cluster.json round-trips and has absolute paths and URLs.
    let loaded = ClusterLayout::load(&l.dir).unwrap();
    assert_eq!(loaded, l);
    assert!(l.dir.is_absolute() && l.ca_cert.is_absolute());
    assert_eq!(c.url, "https://127.0.0.1:31000");
    assert_eq!(c.http_url, "https://127.0.0.1:31001");
    assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:31002");
    assert_eq!(l.signers[1].control_endpoint, "https://127.0.0.1:31011");
    assert_eq!(l.signers[1].http_url, "http://127.0.0.1:31211");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.dir.join("cluster.json")).unwrap()).unwrap();
    assert_eq!(json["coordinator"]["url"], "https://127.0.0.1:31000");
    assert_eq!(json["signers"][0]["peer_id"], l.signers[0].peer_id.as_str());
    assert!(matches!(
        ClusterLayout::load(tmp.path()),
        Err(DevkitError::NoLayout { .. })
    ));
}

#[test]
fn generate_is_idempotent_and_keeps_secrets_private() {
    let tmp = tempfile::tempdir().unwrap();
    let sp = spec(tmp.path());
    let first = generate(&sp).unwrap();
    for f in secrets(&first) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    assert_eq!(mode(&first.dir) & 0o077, 0, "cluster dir must be private");
    let before = all_material(&first);
    std::fs::write(first.signers[0].data_dir.join("share.sealed"), b"x").unwrap();

    // Same spec: nothing changes.
    let second = generate(&sp).unwrap();
    assert_eq!(second, first);
    assert_eq!(all_material(&second), before);
    assert!(
        second.signers[0].data_dir.join("share.sealed").is_file(),
        "data kept"
    );

    // Other ports and more signers: old keys kept, configs follow the spec.
    let mut bigger = sp.clone();
    bigger.signers = 4;
    bigger.threshold = 3;
    bigger.base_port = 32000;
    let third = generate(&bigger).unwrap();
    assert_eq!(third.signers.len(), 4);
    for (f, bytes) in &before {
        assert_eq!(&std::fs::read(f).unwrap(), bytes, "{} changed", f.display());
    }
    assert_eq!(third.signers[0].peer_id, first.signers[0].peer_id);
    assert_eq!(third.signers[0].control_endpoint, "https://127.0.0.1:32010");

    // A loosened mode is tightened again.
    std::fs::set_permissions(
        &first.signers[1].passphrase_file,
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    generate(&sp).unwrap();
    assert_eq!(mode(&first.signers[1].passphrase_file), 0o600);

    // Losing the CA reissues every certificate (still chaining), keeps identities.
    std::fs::remove_file(&first.ca_key).unwrap();
    let fourth = generate(&sp).unwrap();
    assert_ne!(
        std::fs::read(&fourth.ca_cert).unwrap(),
        before[&first.ca_cert]
    );
    assert_eq!(fourth.signers[2].peer_id, first.signers[2].peer_id);
    if openssl() {
        verify(&fourth.ca_cert, &fourth.signers[2].tls_cert, "sslserver");
        verify(
            &fourth.ca_cert,
            &fourth.coordinator.client_cert,
            "sslclient",
        );
    }
}

#[test]
fn leaves_issued_later_chain_to_the_existing_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let l = generate(&spec(tmp.path())).unwrap();
    std::fs::remove_file(&l.signers[0].tls_cert).unwrap();
    let ca_before = std::fs::read(&l.ca_cert).unwrap();
    generate(&spec(tmp.path())).unwrap();
    assert_eq!(std::fs::read(&l.ca_cert).unwrap(), ca_before);
    if openssl() {
        verify(&l.ca_cert, &l.signers[0].tls_cert, "sslserver");
    }
}

#[test]
fn bad_specs_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    type Mutate = Box<dyn Fn(&mut ClusterSpec)>;
    let cases: Vec<Mutate> = vec![
        Box::new(|s| s.signers = 1),
        Box::new(|s| s.threshold = 0),
        Box::new(|s| s.threshold = 4),
        Box::new(|s| s.base_port = 65400),
        Box::new(|s| {
            s.fault_injection
                .insert("signer-9".into(), FaultInjection::CorruptProtocolMessages);
        }),
        Box::new(|s| s.primes_file = Some("/nonexistent/primes.json".into())),
    ];
    for (i, f) in cases.iter().enumerate() {
        let mut s = spec(tmp.path());
        f(&mut s);
        let err = generate(&s).unwrap_err();
        assert!(
            matches!(err, DevkitError::InvalidSpec(_)),
            "case {i}: {err}"
        );
    }
}

#[test]
fn free_base_port_gives_distinct_free_blocks() {
    let a = custos_devkit::free_base_port();
    let b = custos_devkit::free_base_port();
    assert_ne!(a, b);
    for base in [a, b] {
        assert!((20000..=64500).contains(&base));
        // Out of the ephemeral range (where client sockets could steal a port).
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let r: Vec<u16> = range
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(base + 219 < r[0] || base > r[1], "{base} in {r:?}");
        assert!(custos_devkit::ports_free(&custos_devkit::cluster_ports(
            base, 3
        )));
    }
}
