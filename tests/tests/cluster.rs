//! The cluster end to end: real signer and coordinator processes on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use custos_proto::custody::{CreateKeyRequest, Curve, Key, Scheme, SignDigestResponse};
use custos_tests::{eth_address_lower, log_entries, start, verify_both};

use custos_devkit::FaultInjection;
use custos_tests::{digest, metric, sign_req};

/// Creates a 2-of-n FROST key without a chain.
async fn frost_key(
    client: &mut custos_devkit::client::Client,
    key_id: &str,
    scheme: Scheme,
) -> Key {
    let key = client
        .create_key(CreateKeyRequest {
            key_id: key_id.into(),
            threshold: 2,
            scheme: scheme as i32,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{key_id}: {e}"))
        .into_inner();
    assert_eq!(key.scheme, scheme as i32);
    key
}

/// Signs `message` with a FROST key through SignDigest.
async fn frost_sign(
    client: &mut custos_devkit::client::Client,
    key_id: &str,
    message: &[u8],
    interactive: bool,
) -> SignDigestResponse {
    let mut req = sign_req(key_id, &[0; 32], interactive);
    req.digest = message.to_vec();
    let r = client
        .sign_digest(req)
        .await
        .unwrap_or_else(|e| panic!("{key_id}: {e}"))
        .into_inner();
    assert_eq!(r.signature.len(), 64);
    r
}

/// Share refresh and repair of a FROST key (issue 18), on the cluster of
/// [`two_of_three_keygen_sign_and_survive_signer_loss`] (Ed25519 key `ed`,
/// ECDSA key `wallet-1`): refresh keeps the public key and signs again;
/// a signer whose share of the key is wiped is repaired by the other two
/// and signs again; both changes are logged and shown by GetKey; bad
/// requests get clear errors. Leaves every signer running.
async fn refresh_and_repair_a_frost_key(tc: &mut custos_tests::TestCluster, ed: &Key) {
    use custos_proto::custody::{GetKeyRequest, RefreshKeyRequest, RepairKeyShareRequest};
    let mut client = tc.client.clone();
    let verified = |message: &[u8], r: &SignDigestResponse| {
        assert!(
            custos_tests::schnorr::ed25519_openssl(&ed.public_key, message, &r.signature),
            "openssl pkeyutl verifies the Ed25519 signature"
        );
        assert!(
            custos_tests::schnorr::ed25519_python(&ed.public_key, message, &r.signature),
            "python cryptography verifies the Ed25519 signature"
        );
    };
    let r = frost_sign(&mut client, "frost-ed", b"before the refresh", false).await;
    verified(b"before the refresh", &r);

    // Refresh: every signer takes part, the public key stays.
    let out = client
        .refresh_key(RefreshKeyRequest {
            key_id: "frost-ed".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("refresh: {e}"))
        .into_inner();
    assert_eq!(out.operation, "refresh");
    assert_eq!(out.generation, 1);
    assert_eq!(out.signers, ["signer-1", "signer-2", "signer-3"]);
    let key = out.key.unwrap();
    assert_eq!(key.public_key, ed.public_key, "the public key stays");
    assert_eq!(key.share_generation, 1);
    assert_eq!(key.last_share_change, "refresh");
    assert!(!key.last_share_change_at.is_empty());
    for i in 0..3 {
        let message = format!("after the refresh {i}").into_bytes();
        let r = frost_sign(&mut client, "frost-ed", &message, i == 2).await;
        verified(&message, &r);
    }

    // Clear errors: an ECDSA key, an unknown key, an unknown signer.
    let e = client
        .refresh_key(RefreshKeyRequest {
            key_id: "wallet-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("ecdsa-secp256k1"), "{e}");
    let e = client
        .refresh_key(RefreshKeyRequest {
            key_id: "no-such-key".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    let e = client
        .repair_key_share(RepairKeyShareRequest {
            key_id: "frost-ed".into(),
            signer: "signer-9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("signer-9"), "{e}");
    // A signer that still holds its share refuses to be "repaired".
    let e = client
        .repair_key_share(RepairKeyShareRequest {
            key_id: "frost-ed".into(),
            signer: "signer-3".into(),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("nothing to repair"), "{e}");

    // signer-3 loses its share: killed, its files of the key wiped.
    tc.cluster.kill_signer("signer-3").unwrap();
    let data = tc
        .cluster
        .layout()
        .signers
        .iter()
        .find(|s| s.node_id == "signer-3")
        .unwrap()
        .data_dir
        .clone();
    let mut wiped = 0;
    for entry in std::fs::read_dir(data.join("keys")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("frost-ed.") {
            std::fs::remove_file(&path).unwrap();
            wiped += 1;
        }
    }
    assert!(wiped >= 2, "share and metadata wiped");
    let _ = std::fs::remove_dir_all(data.join("presigs/frost-ed"));
    // With signer-3 down, a repair is refused naming it.
    let e = client
        .repair_key_share(RepairKeyShareRequest {
            key_id: "frost-ed".into(),
            signer: "signer-3".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    assert!(e.message().contains("signer-3"), "{e}");
    tc.cluster.restart_signer("signer-3").await.unwrap();
    let mut repaired = None;
    for _ in 0..20 {
        match client
            .repair_key_share(RepairKeyShareRequest {
                key_id: "frost-ed".into(),
                signer: "signer-3".into(),
            })
            .await
        {
            Ok(r) => {
                repaired = Some(r.into_inner());
                break;
            }
            // The coordinator may not have seen signer-3 come back yet, or
            // a helper may still be ending the refused attempt's session.
            Err(e)
                if matches!(
                    e.code(),
                    tonic::Code::Unavailable | tonic::Code::FailedPrecondition
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(e) => panic!("repair: {e}"),
        }
    }
    let out = repaired.expect("signer-3 repaired");
    assert_eq!(out.operation, "repair");
    assert_eq!(out.repaired, "signer-3");
    assert_eq!(
        out.generation, 1,
        "a repair restores the generation in force"
    );
    assert_eq!(out.signers, ["signer-1", "signer-2", "signer-3"]);
    let key = client
        .get_key(GetKeyRequest {
            key_id: "frost-ed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.public_key, ed.public_key);
    assert_eq!(key.last_share_change, "repair of signer-3");
    // The repaired signer signs: retry until a signer set includes it.
    let mut with_repaired = 0;
    for i in 0..12 {
        let message = format!("after the repair {i}").into_bytes();
        let r = frost_sign(&mut client, "frost-ed", &message, i % 2 == 1).await;
        verified(&message, &r);
        if r.signers.iter().any(|s| s == "signer-3") {
            with_repaired += 1;
            if with_repaired == 2 {
                break;
            }
        }
    }
    assert!(with_repaired > 0, "no signature with the repaired signer");

    // Both changes are in the transparency log, once a checkpoint covers
    // the repair's entry (checkpoints follow appends by up to an interval).
    let started = std::time::Instant::now();
    loop {
        let size = client
            .get_checkpoint(custos_proto::custody::GetCheckpointRequest {})
            .await
            .unwrap()
            .into_inner()
            .size;
        if size > out.log_index {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no checkpoint covers the repair's entry {} (size {size})",
            out.log_index
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let changes: Vec<_> = log_entries(&mut client)
        .await
        .into_iter()
        .filter_map(|e| match e.body {
            custos_audit::EntryBody::KeySharesChanged {
                key_id,
                change,
                generation,
                repaired,
                public_key,
                ..
            } => Some((key_id, change, generation, repaired, public_key)),
            _ => None,
        })
        .collect();
    use custos_audit::entry::ShareChange;
    assert_eq!(
        changes,
        [
            (
                "frost-ed".to_owned(),
                ShareChange::Refresh,
                1,
                String::new(),
                ed.public_key.clone()
            ),
            (
                "frost-ed".to_owned(),
                ShareChange::Repair,
                1,
                "signer-3".to_owned(),
                ed.public_key.clone()
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_keygen_sign_and_survive_signer_loss() {
    let mut tc = start(3, 2, &[]).await;
    let mut client = tc.client.clone();
    let key = client
        .create_key(CreateKeyRequest {
            key_id: "wallet-1".into(),
            curve: Curve::Secp256k1 as i32,
            threshold: 2,
            chain: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.public_key.len(), 33);
    assert_eq!(key.participants.len(), 3);
    assert_eq!(
        key.ethereum_address.to_lowercase(),
        eth_address_lower(&key.public_key)
    );
    assert_ne!(
        key.ethereum_address,
        key.ethereum_address.to_lowercase(),
        "EIP-55 mixed case"
    );

    // 20 random digests, from the pool and interactively, verified by two libraries.
    let mut modes = std::collections::HashSet::new();
    for i in 0..20 {
        let d = digest();
        let r = client
            .sign_digest(sign_req("wallet-1", &d, i % 5 == 4))
            .await
            .unwrap()
            .into_inner();
        verify_both(&key.public_key, &d, &r.r, &r.s);
        modes.insert(r.mode);
    }
    assert!(modes.contains("interactive"), "{modes:?}");

    // The same request id never signs a different digest.
    let d = digest();
    let mut req = sign_req("wallet-1", &d, false);
    let first = client.sign_digest(req.clone()).await.unwrap().into_inner();
    let again = client.sign_digest(req.clone()).await.unwrap().into_inner();
    assert_eq!(
        (first.r, first.s),
        (again.r, again.s),
        "a retry returns the stored signature"
    );
    req.digest = digest().to_vec();
    let err = client.sign_digest(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err}");

    // Concurrent requests race for the pool: all succeed, and no
    // presignature serves two of them (docs/SECURITY.md case 9).
    // Wait for a full pool so the burst races for presignatures rather than
    // piling interactive sessions onto a loaded 2-core machine.
    let started = Instant::now();
    while client
        .get_key(custos_proto::custody::GetKeyRequest {
            key_id: "wallet-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .presignatures_ready
        < 4
    {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "pool did not refill"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let calls = (0..4).map(|_| {
        let mut c = client.clone();
        let d = digest();
        async move { (d, c.sign_digest(sign_req("wallet-1", &d, false)).await) }
    });
    let mut used = std::collections::HashSet::new();
    for (d, r) in futures::future::join_all(calls).await {
        let r = r
            .unwrap_or_else(|e| panic!("concurrent signing failed: {e}"))
            .into_inner();
        verify_both(&key.public_key, &d, &r.r, &r.s);
        if r.mode == "presignature" {
            assert!(
                used.insert(r.presignature_id.clone()),
                "presignature {} used twice",
                r.presignature_id
            );
        }
    }

    // FROST keys on the same signers (issue 18): an Ed25519 key and a
    // BIP340/taproot key, created by DKG over the same libp2p sessions,
    // signing from the nonce-commitment pool and from a fresh commitment
    // round; every signature checked by verifiers that share no code with
    // the FROST crates.
    let ed = frost_key(&mut client, "frost-ed", Scheme::FrostEd25519).await;
    assert_eq!(ed.public_key.len(), 32);
    assert_eq!(ed.curve, Curve::Ed25519 as i32);
    let tr = frost_key(&mut client, "frost-tr", Scheme::FrostSecp256k1Tr).await;
    assert_eq!(tr.public_key.len(), 32, "BIP340 x-only key");
    assert!(tr.address.is_empty() && tr.chain.is_empty(), "{tr:?}");
    let mut frost_modes = std::collections::HashSet::new();
    for i in 0..6 {
        let interactive = i % 3 == 2;
        let message = format!("custos frost message {i}").into_bytes();
        let r = frost_sign(&mut client, "frost-ed", &message, interactive).await;
        assert_eq!(r.scheme, Scheme::FrostEd25519 as i32);
        assert!(r.r.is_empty() && r.s.is_empty(), "r and s are ECDSA's");
        assert!(
            custos_tests::schnorr::ed25519_python(&ed.public_key, &message, &r.signature),
            "python cryptography verifies the Ed25519 signature"
        );
        assert!(
            custos_tests::schnorr::ed25519_openssl(&ed.public_key, &message, &r.signature),
            "openssl pkeyutl verifies the Ed25519 signature"
        );
        frost_modes.insert(r.mode);
        let d = digest();
        let r = frost_sign(&mut client, "frost-tr", &d, interactive).await;
        assert!(
            custos_tests::schnorr::bip340_libsecp256k1(&tr.public_key, &d, &r.signature),
            "libsecp256k1 verifies the BIP340 signature"
        );
    }
    assert!(frost_modes.contains("interactive"), "{frost_modes:?}");
    // The verifiers are not vacuous: another message does not verify.
    let r = frost_sign(&mut client, "frost-ed", b"one message", false).await;
    assert!(!custos_tests::schnorr::ed25519_python(
        &ed.public_key,
        b"another",
        &r.signature
    ));
    assert!(!custos_tests::schnorr::ed25519_openssl(
        &ed.public_key,
        b"another",
        &r.signature
    ));
    // A retry of a request returns the stored signature.
    let mut req = sign_req("frost-ed", &[7; 32], false);
    req.digest = vec![7; 40];
    let first = client.sign_digest(req.clone()).await.unwrap().into_inner();
    let again = client.sign_digest(req.clone()).await.unwrap().into_inner();
    assert_eq!(first.signature, again.signature);
    req.digest = vec![8; 40];
    let err = client.sign_digest(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err}");

    refresh_and_repair_a_frost_key(&mut tc, &ed).await;

    // Kill one signer: the remaining two still sign.
    tc.cluster.kill_signer("signer-3").unwrap();
    for _ in 0..3 {
        let d = digest();
        let r = client
            .sign_digest(sign_req("wallet-1", &d, false))
            .await
            .unwrap()
            .into_inner();
        verify_both(&key.public_key, &d, &r.r, &r.s);
        assert!(!r.signers.contains(&"signer-3".to_owned()));
    }
    // So does the FROST key, from commitments among the two live signers.
    let r = frost_sign(&mut client, "frost-ed", b"after a signer loss", false).await;
    assert!(!r.signers.contains(&"signer-3".to_owned()));
    assert!(custos_tests::schnorr::ed25519_openssl(
        &ed.public_key,
        b"after a signer loss",
        &r.signature
    ));

    // Kill a second: a clear, bounded failure naming the unreachable nodes.
    tc.cluster.kill_signer("signer-2").unwrap();
    let started = Instant::now();
    let err = client
        .sign_digest(sign_req("wallet-1", &digest(), false))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(
        err.message().contains("signer-2") && err.message().contains("signer-3"),
        "{}",
        err.message()
    );

    // Restart one: shares reload from the sealed store and signing works again.
    tc.cluster.restart_signer("signer-2").await.unwrap();
    let d = digest();
    let mut ok = None;
    for _ in 0..20 {
        match client.sign_digest(sign_req("wallet-1", &d, false)).await {
            Ok(r) => {
                ok = Some(r.into_inner());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let r = ok.expect("signing works again after a restart");
    verify_both(&key.public_key, &d, &r.r, &r.s);
    tc.cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_sending_malformed_messages_is_named() {
    // signer-3 corrupts every protocol frame it sends: the group's first
    // session (aux info) must abort, and the honest signers must name it.
    let tc = custos_tests::launch(
        3,
        2,
        &[("signer-3", FaultInjection::CorruptProtocolMessages)],
        None,
    )
    .await;
    let mut client = tc.client.clone();
    let started = Instant::now();
    let status = loop {
        let s = client
            .get_cluster_status(custos_proto::custody::GetClusterStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if s.aux_info.starts_with("failed") {
            break s.aux_info;
        }
        assert_ne!(
            s.aux_info, "ready",
            "a corrupting signer must not let aux info complete"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no abort after 5 minutes: {}",
            s.aux_info
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(status.contains("signer signer-3 misbehaved"), "{status}");
    assert!(status.contains("malformed protocol message"), "{status}");
    // Nothing can be created on a group without aux info.
    let err = client
        .create_key(CreateKeyRequest {
            key_id: "k-bad".into(),
            curve: Curve::Secp256k1 as i32,
            threshold: 2,
            chain: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    // A FROST DKG needs no aux info, so it runs on this group: the
    // corrupting signer's frames abort it, and it is named (the custos-culprit
    // metadata as data, not only in the message).
    let err = client
        .create_key(CreateKeyRequest {
            key_id: "k-frost-bad".into(),
            threshold: 2,
            scheme: Scheme::FrostEd25519 as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err}");
    assert_eq!(
        err.metadata()
            .get(custos_proto::CULPRIT_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("signer-3"),
        "{err}"
    );
    assert!(
        err.message().contains("malformed protocol message"),
        "{err}"
    );
    tc.cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_of_five_keygen_and_signing() {
    let tc = start(5, 3, &[]).await;
    let mut client = tc.client.clone();
    let key = client
        .create_key(CreateKeyRequest {
            key_id: "wallet-35".into(),
            curve: Curve::Secp256k1 as i32,
            threshold: 3,
            chain: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((key.threshold, key.participants.len()), (3, 5));
    for interactive in [true, false] {
        let d = digest();
        let r = client
            .sign_digest(sign_req("wallet-35", &d, interactive))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.signers.len(), 3);
        verify_both(&key.public_key, &d, &r.r, &r.s);
    }

    // Two disjoint signer sets of a minority key (docs/SECURITY.md case 39).
    // The coordinator refuses to make a 2-of-5 wallet key, so a rogue one
    // runs the keygen on the signers itself, then asks {signer-1, signer-2}
    // and {signer-3, signer-4} each to sign one withdrawal with it. Every
    // signer refuses before it reads the request: no two disjoint sets can
    // each pay one withdrawal.
    let e = client
        .create_key(CreateKeyRequest {
            key_id: "wallet-25".into(),
            curve: Curve::Secp256k1 as i32,
            threshold: 2,
            chain: "ethereum".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("more than half"), "{e}");
    let rogue = custos_tests::coordinator_signer_clients(tc.cluster.layout()).await;
    let group_id = rogue[0]
        .1
        .clone()
        .status(custos_proto::signer::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .aux_groups[0]
        .clone();
    let keygen = custos_proto::signer::KeygenRequest {
        key_id: "wallet-25".into(),
        group_id,
        participants: key.participants.clone(),
        threshold: 2,
        nonce: vec![25; 32],
        coordinator_epoch: 0,
        ..Default::default()
    };
    let keys = futures::future::join_all(rogue.iter().map(|(_, c)| {
        let (mut c, req) = (c.clone(), keygen.clone());
        async move { c.keygen(req).await.unwrap().into_inner().public_key }
    }))
    .await;
    assert!(keys.iter().all(|k| *k == keys[0] && !k.is_empty()));
    let rogue = custos_tests::coordinator_signer_clients(tc.cluster.layout()).await;
    for set in [["signer-1", "signer-2"], ["signer-3", "signer-4"]] {
        for (node, c) in rogue.iter().filter(|(n, _)| set.contains(&n.as_str())) {
            let e = c
                .clone()
                .sign_withdrawal(custos_proto::signer::SignWithdrawalRequest {
                    authorization: Some(custos_proto::signer::WithdrawalAuthorization {
                        withdrawal_json: br#"{"id":"w-twice","wallet":"wallet-25"}"#.to_vec(),
                        ..Default::default()
                    }),
                    key_id: "wallet-25".into(),
                    presignature_id: "ps-any".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{node}: {e}");
            assert!(
                e.message().contains("two disjoint signer sets") && e.message().contains("2-of-5"),
                "{node}: {e}"
            );
        }
    }
    // Each refusal is in the log and the verifier reports it.
    let want: Vec<(&str, &str)> = ["signer-1", "signer-2", "signer-3", "signer-4"]
        .iter()
        .map(|n| (*n, "sign_withdrawal of withdrawal w-twice"))
        .collect();
    custos_tests::audit::refusals_reported(&tc.cluster.layout().dir.clone(), &[], &want).await;
    tc.cluster.stop().await.unwrap();
}

async fn key_pk(client: &mut custos_devkit::client::Client) -> Vec<u8> {
    client
        .get_key(custos_proto::custody::GetKeyRequest {
            key_id: "k-lock".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .public_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_unexplained_signing_failures_lock_the_key_until_an_admin_unlocks_it() {
    use custos_audit::EntryBody;
    use custos_proto::custody::{GetKeyRequest, UnlockKeyRequest};

    // Two of three signers issue partials that do not combine into a valid
    // signature, so every 2-of-3 presignature signing fails unexplained.
    let tc = custos_tests::start_from_fixture(
        3,
        2,
        &[
            ("signer-2", FaultInjection::CorruptPartialSignatures),
            ("signer-3", FaultInjection::CorruptPartialSignatures),
        ],
    )
    .await;
    let mut client = tc.client.clone();
    client
        .create_key(CreateKeyRequest {
            key_id: "k-lock".into(),
            curve: Curve::Secp256k1 as i32,
            threshold: 2,
            chain: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    let d = digest();
    // Presignature signing: the partials do not combine (counted). Wait for
    // the pool, so requests do not go interactive (which signs fine here).
    let started = Instant::now();
    while client
        .get_key(GetKeyRequest {
            key_id: "k-lock".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .presignatures_ready
        < 3
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no presignatures"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut locked = None;
    for attempt in 0..12 {
        match client.sign_digest(sign_req("k-lock", &d, false)).await {
            Ok(r) => verify_both(
                &key_pk(&mut client).await,
                &d,
                &r.get_ref().r,
                &r.get_ref().s,
            ),
            Err(err) if err.message().contains("is locked for signing") => {
                locked = Some((attempt, err));
                break;
            }
            Err(err) => assert!(
                err.message().contains("does not verify") || err.code() == tonic::Code::Unavailable,
                "{err}"
            ),
        }
    }
    let (attempt, err) = locked.expect("the key locks");
    assert!(attempt >= 2, "three failures lock it, not fewer");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("custos key unlock k-lock"), "{err}");
    let key = client
        .get_key(GetKeyRequest {
            key_id: "k-lock".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(key.signing_locked);
    assert!(key.unexplained_failures >= 3, "{key:?}");
    assert!(key.last_failure.contains("does not verify"), "{key:?}");

    // Only an admin unlocks, and only with a reason.
    let layout = tc.cluster.layout().clone();
    let mut auditor = custos_devkit::client::connect_as(&layout, "auditor")
        .await
        .unwrap();
    let denied = auditor
        .unlock_key(UnlockKeyRequest {
            key_id: "k-lock".into(),
            reason: "me".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
    let no_reason = client
        .unlock_key(UnlockKeyRequest {
            key_id: "k-lock".into(),
            reason: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), tonic::Code::InvalidArgument);
    let unlocked = client
        .unlock_key(UnlockKeyRequest {
            key_id: "k-lock".into(),
            reason: "signer-2 and signer-3 replaced after the incident".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!unlocked.signing_locked);
    assert_eq!(unlocked.unexplained_failures, 0);
    // Unlocked, it signs again.
    if let Err(again) = client.sign_digest(sign_req("k-lock", &d, false)).await {
        assert!(!again.message().contains("is locked"), "{again}");
    }

    // Both the lock and the unlock are in the audit log.
    let started = Instant::now();
    loop {
        let entries = log_entries(&mut client).await;
        let lock = entries.iter().any(|e| {
            matches!(&e.body, EntryBody::KeyLockChanged { key_id, locked: true, actor, reason }
                if key_id == "k-lock" && actor == "coordinator" && reason.contains("3 unexplained"))
        });
        let unlock = entries.iter().any(|e| {
            matches!(&e.body, EntryBody::KeyLockChanged { key_id, locked: false, reason, .. }
                if key_id == "k-lock" && reason.contains("replaced after the incident"))
        });
        if lock && unlock {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "lock {lock} unlock {unlock} in the log"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // FROST tells a bad signature share apart (issue 18): the same faulty
    // signers' partials over another message name their signer, where
    // ECDSA could only say that one of the set was at fault.
    frost_key(&mut client, "k-frost", Scheme::FrostEd25519).await;
    let mut req = sign_req("k-frost", &[0; 32], true);
    req.digest = b"a message".to_vec();
    let err = client.sign_digest(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err}");
    let culprit = err
        .metadata()
        .get(custos_proto::CULPRIT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert!(
        matches!(culprit.as_deref(), Some("signer-2" | "signer-3")),
        "{culprit:?}: {err}"
    );
    assert!(err.message().contains("signed another message"), "{err}");
    tc.cluster.stop().await.unwrap();
}

/// Sets a top-level key of a daemon's TOML config (before its first table).
fn prepend_config(config: &std::path::Path, line: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, format!("{line}\n{text}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_aux_ceremony_stops_its_work_and_the_retry_succeeds() {
    use custos_devkit::{ClusterSpec, StartOptions};
    use custos_proto::custody::GetClusterStatusRequest;
    use custos_tests::cpu_time;

    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path().join("cluster"));
    spec.base_port = custos_devkit::free_base_port();
    spec.primes_file = Some(custos_tests::primes_fixture());
    let layout = custos_devkit::generate(&spec).unwrap();
    // Far too short for the ceremony: it times out mid-computation.
    let configs: Vec<_> = layout.signers.iter().map(|s| s.config.clone()).collect();
    let originals: Vec<String> = configs
        .iter()
        .map(|c| std::fs::read_to_string(c).unwrap())
        .collect();
    for c in &configs {
        prepend_config(c, "aux_info_timeout_secs = 2");
    }
    let opts = StartOptions::default().timeout(Duration::from_secs(60));
    let mut tc = custos_tests::launch_layout(dir, layout.clone(), opts).await;

    let started = Instant::now();
    let failure = loop {
        let s = tc
            .client
            .clone()
            .get_cluster_status(GetClusterStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .aux_info;
        if s.starts_with("failed") {
            break s;
        }
        assert_ne!(
            s, "ready",
            "the ceremony finished within 2 s: the test proves nothing"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "aux info: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failure.contains("timed out after 2s"), "{failure}");
    // No retry while we watch the signers.
    tc.cluster.kill_coordinator().unwrap();

    // Every signer's protocol computation stops...
    let deadline = Instant::now() + Duration::from_secs(10);
    for s in &layout.signers {
        while metric(s.http_listen, "custos_signer_protocol_threads") > 0.0 {
            assert!(
                Instant::now() < deadline,
                "{}: protocol work still running 10 s after the timeout",
                s.node_id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // ...and nothing else burns CPU behind it.
    let pids: Vec<u32> = layout
        .signers
        .iter()
        .map(|s| tc.cluster.pid(&s.node_id).unwrap())
        .collect();
    let before: Duration = pids.iter().map(|p| cpu_time(*p)).sum();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Duration = pids.iter().map(|p| cpu_time(*p)).sum();
    assert!(
        after - before < Duration::from_millis(400),
        "signers used {:?} of CPU in 2 s after the cancelled ceremony",
        after - before
    );

    // With the default timeout the coordinator's retry completes the ceremony
    // (the primes survived the failed run), and the group signs.
    for (c, text) in configs.iter().zip(&originals) {
        std::fs::write(c, text).unwrap();
    }
    for s in &layout.signers {
        tc.cluster.restart_signer(&s.node_id).await.unwrap();
    }
    tc.cluster.restart_coordinator().await.unwrap();
    tc.wait_aux_ready(Duration::from_secs(600)).await;
    let mut client = tc.client.clone();
    let key = client
        .create_key(CreateKeyRequest {
            key_id: "after-retry".into(),
            curve: Curve::Secp256k1 as i32,
            threshold: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let d = digest();
    let sig = client
        .sign_digest(sign_req("after-retry", &d, true))
        .await
        .unwrap()
        .into_inner();
    verify_both(&key.public_key, &d, &sig.r, &sig.s);
}

/// Concurrent signings on a 3-of-5 cluster while its presignature pool
/// refills, starting right after the cluster came up. This is where sessions
/// stalled for the whole 60 s session timeout: a frame whose send failed
/// (peer not yet connected, ack lost under load) was dropped, or a party
/// that finished first took its last frames with it. A stalled session hits
/// the 60 s session timeout and fails (a presignature refill is counted in
/// `custos_presign_failures_total`, a signing is an error), so the test asks
/// for every signature and no failure; its client-side bound is only a
/// backstop above that timeout, because on 2 shared cores the presignature
/// work alone (all GMP arithmetic) takes 15-45 s a round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signing_during_pool_refills_never_stalls() {
    let tc = custos_tests::start_from_fixture(5, 3, &[]).await;
    let mut client = tc.client.clone();
    let key = client
        .create_key(CreateKeyRequest {
            key_id: "wallet-busy".into(),
            curve: Curve::Secp256k1 as i32,
            threshold: 3,
            chain: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for round in 0..2 {
        let calls = (0..8).map(|i| {
            let mut c = client.clone();
            let d = digest();
            async move {
                let asked = Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(150),
                    c.sign_digest(sign_req("wallet-busy", &d, i % 2 == 0)),
                )
                .await;
                (i, d, r, asked.elapsed())
            }
        });
        for (i, d, r, took) in futures::future::join_all(calls).await {
            slowest = slowest.max(took);
            let r = r
                .unwrap_or_else(|_| panic!("round {round}, signing {i}: stalled for 150 s"))
                .unwrap_or_else(|e| panic!("round {round}, signing {i}: {e}"))
                .into_inner();
            verify_both(&key.public_key, &d, &r.r, &r.s);
        }
    }
    eprintln!(
        "16 signatures, 8 at a time, in {:?} (slowest {slowest:?})",
        started.elapsed()
    );
    let http = tc.cluster.layout().coordinator.metrics_listen;
    for counter in [
        "custos_sign_failures_total",
        "custos_presign_failures_total",
    ] {
        assert_eq!(
            metric(http, counter),
            0.0,
            "{counter}: a session failed (stalled until its timeout?)"
        );
    }
    tc.cluster.stop().await.unwrap();
}
