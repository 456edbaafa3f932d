//! PKCS#11 backend against a real SoftHSM2.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, at `C_Initialize`, and a process can
//! initialise a module only once; `std::env::set_var` is `unsafe` (forbidden
//! here). So each test creates its own token directory and conf
//! ([`common::SoftHsm`]) and runs the PKCS#11 part in a child process of this
//! test binary: the `#[ignore]`d `child_*` tests, started by their parent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

mod common;

use std::path::{Path, PathBuf};

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use custos_audit::{LogSigner, SignatureAlgorithm};
use custos_hsm::{
    HsmError, KdfParams, LogKeyAlgorithm, LogSignerConfig, Passphrase, Pin, Pkcs11Config,
    Pkcs11LogSigner, Pkcs11Sealer, SealContext, Sealer, SealerConfig, SoftwareSealer,
    open_log_signer, open_sealer, pkcs11_context, reseal_dir,
};

const TOKEN: &str = "custos-node";
const PIN: &str = "user-pin-1234";
const KEK: &str = "custos-kek";

fn pin() -> Pin {
    Pin::from(PIN)
}

fn sealer(create: bool) -> Pkcs11Sealer {
    Pkcs11Sealer::open_with_pin(Path::new(MODULE), TOKEN, &pin(), KEK, create).unwrap()
}

/// Env var naming a directory shared between the parent and its children.
const SHARED: &str = "CUSTOS_HSM_TEST_SHARED";

fn shared() -> PathBuf {
    PathBuf::from(std::env::var_os(SHARED).unwrap())
}

fn expect_err<T>(r: Result<T, HsmError>, what: &str) -> HsmError {
    match r {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e,
    }
}

// ------------------------------------------------------------------ sealing

#[test]
fn seal_round_trips_binding_and_tamper_detection() {
    let hsm = SoftHsm::new();
    hsm.init_token(TOKEN, PIN);
    hsm.run_child("child_seal_round_trips_binding_and_tamper_detection", &[]);
}

#[test]
#[ignore = "run in a child process by its parent test"]
fn child_seal_round_trips_binding_and_tamper_detection() {
    if child_dir().is_none() {
        return;
    }
    let s = sealer(true);
    assert_eq!(s.backend(), "pkcs11");
    assert!(s.kek_id().starts_with("pkcs11:custos-kek:"));
    assert_round_trips(&s);
    assert_context_binding(&s);
    assert_every_bit_flip_fails(&s, &share_plaintext()[..64]);
    // A second KEK on the same token is a different key.
    let other =
        Pkcs11Sealer::open_with_pin(Path::new(MODULE), TOKEN, &pin(), "kek-2", true).unwrap();
    assert_kek_binding(&s, &other);
    // Reopening finds the same KEK (no duplicate created).
    let again = sealer(false);
    assert_eq!(again.kek_id(), s.kek_id());
    let blob = s.seal(&CTX, b"x").unwrap();
    assert_eq!(&again.unseal(&CTX, &blob).unwrap()[..], b"x");
    // Concurrent use from several threads.
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..25u8 {
                    let pt = [t, i, 1, 2, 3];
                    let b = s.seal(&CTX, &pt).unwrap();
                    assert_eq!(&s.unseal(&CTX, &b).unwrap()[..], &pt);
                }
            });
        }
    });
}

#[test]
fn blob_sealed_under_one_token_fails_under_another_token_with_the_same_label() {
    let (hsm1, hsm2) = (SoftHsm::new(), SoftHsm::new());
    hsm1.init_token(TOKEN, PIN);
    hsm2.init_token(TOKEN, PIN);
    let shared = tempfile::tempdir().unwrap();
    let env = [(SHARED, shared.path().to_str().unwrap())];
    hsm1.run_child("child_token_swap_seal", &env);
    hsm2.run_child("child_token_swap_other_token", &env);
    // Back on the first token (a fresh process): the blob is intact.
    hsm1.run_child("child_token_swap_original_token", &env);
}

#[test]
#[ignore = "run in a child process by its parent test"]
fn child_token_swap_seal() {
    if child_dir().is_none() {
        return;
    }
    let blob = sealer(true).seal(&CTX, b"share of token 1").unwrap();
    std::fs::write(shared().join("blob"), blob).unwrap();
}

#[test]
#[ignore = "run in a child process by its parent test"]
fn child_token_swap_other_token() {
    if child_dir().is_none() {
        return;
    }
    let blob = std::fs::read(shared().join("blob")).unwrap();
    // Same token label, same KEK label, same PIN: a different token and key.
    let s = sealer(true);
    let err = expect_err(s.unseal(&CTX, &blob), "other token");
    assert!(matches!(err, HsmError::SealedBlobInvalid(_)), "{err}");
    // Even claiming this token's KEK id in the header, GCM under this KEK fails.
    let forged = rewrite_kek_id(&blob, &s.kek_id());
    let err = expect_err(s.unseal(&CTX, &forged), "forged kek id");
    assert!(
        matches!(err, HsmError::SealedBlobInvalid(ref m) if m.contains("authentication")),
        "{err}"
    );
}

#[test]
#[ignore = "run in a child process by its parent test"]
fn child_token_swap_original_token() {
    if child_dir().is_none() {
        return;
    }
    let blob = std::fs::read(shared().join("blob")).unwrap();
    assert_eq!(
        &sealer(false).unseal(&CTX, &blob).unwrap()[..],
        b"share of token 1"
    );
}

// ------------------------------------------------------------------ KEK protection

#[test]
fn kek_is_non_extractable() {
    let hsm = SoftHsm::new();
    hsm.init_token(TOKEN, PIN);
    hsm.run_child("child_kek_is_non_extractable", &[]);
}

#[test]
#[ignore = "run in a child process by its parent test"]
fn child_kek_is_non_extractable() {
    if child_dir().is_none() {
        return;
    }
    let _sealer = sealer(true); // creates the KEK and keeps the token logged in
    let ctx = pkcs11_context(Path::new(MODULE)).unwrap();
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == TOKEN)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    let kek = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(KEK.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(kek.len(), 1);
    let kek = kek[0];

    // Reading CKA_VALUE is refused: the token reports it sensitive.
    let info = session
        .get_attribute_info(kek, &[AttributeType::Value])
        .unwrap();
    assert!(matches!(info[..], [AttributeInfo::Sensitive]), "{info:?}");
    let got = session
        .get_attributes(kek, &[AttributeType::Value])
        .unwrap();
    assert!(got.is_empty(), "the token returned the KEK value");

    // The token states it was always sensitive and never extractable.
    let attrs = session
        .get_attributes(
            kek,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::KeyType,
            ],
        )
        .unwrap();
    for expected in [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::AlwaysSensitive(true),
        Attribute::NeverExtractable(true),
        Attribute::KeyType(KeyType::AES),
    ] {
        assert!(attrs.contains(&expected), "{expected:?} not in {attrs:?}");
    }

    // Wrapping it out under a key we control is refused (padded AES key wrap).
    let wrapping = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::ValueLen(32u64.into()),
                Attribute::Token(false),
                Attribute::Wrap(true),
                Attribute::Extractable(true),
                Attribute::Sensitive(false),
            ],
        )
        .unwrap();
    let err = session
        .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, kek)
        .unwrap_err();
    assert!(
        matches!(
            err,
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::KeyUnextractable, _)
        ),
        "{err}"
    );
    // And its protection cannot be switched off.
    assert!(
        session
            .update_attributes(kek, &[Attribute::Extractable(true)])
            .is_err()
    );
    assert!(
        session
            .update_attributes(kek, &[Attribute::Sensitive(false)])
            .is_err()
    );
    let attrs = session
        .get_attributes(kek, &[AttributeType::Extractable])
        .unwrap();
    assert_eq!(attrs, vec![Attribute::Extractable(false)]);

    // An extractable key under the KEK's label is refused at open (fail closed).
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::ValueLen(32u64.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Label(b"weak-kek".to_vec()),
            ],
        )
        .unwrap();
    let err = expect_err(
        Pkcs11Sealer::open_with_pin(Path::new(MODULE), TOKEN, &pin(), "weak-kek", false),
        "extractable KEK",
    );
    assert!(matches!(err, HsmError::KeyUnsuitable { .. }), "{err}");
}

// ------------------------------------------------------------------ start-up errors

#[test]
fn startup_errors_are_distinct_and_clear() {
    let hsm = SoftHsm::new();
    hsm.init_token(TOKEN, PIN);
    hsm.init_token("pin-test", PIN);
    hsm.init_token("twin", PIN);
    hsm.init_token("twin", PIN);
    hsm.run_child("child_startup_errors_are_distinct_and_clear", &[]);
}

#[test]
#[ignore = "run in a child process by its parent test"]
fn child_startup_errors_are_distinct_and_clear() {
    let Some(dir) = child_dir() else {
        return;
    };
    let pin_file = dir.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let wrong_pin_file = dir.join("wrong-pin");
    std::fs::write(&wrong_pin_file, "not-the-pin-9876\n").unwrap();
    let not_a_module = dir.join("libnot-pkcs11.so");
    std::fs::write(&not_a_module, "this is not a shared object").unwrap();
    let cfg = |module: &Path, token: &str, pin: &Path, kek: &str, create: bool| {
        SealerConfig::Pkcs11(Pkcs11Config {
            module: module.to_path_buf(),
            token_label: token.into(),
            pin_file: Some(pin.to_path_buf()),
            pin_env: None,
            kek_label: kek.into(),
            create_kek: create,
        })
    };
    let open = |c: SealerConfig| expect_err(open_sealer(&c, &dir), "start-up");
    let module = Path::new(MODULE);

    let missing_module = open(cfg(
        Path::new("/nonexistent/libsofthsm2.so"),
        TOKEN,
        &pin_file,
        KEK,
        true,
    ));
    assert!(
        matches!(missing_module, HsmError::ModuleMissing { .. }),
        "{missing_module}"
    );
    let bad_module = open(cfg(&not_a_module, TOKEN, &pin_file, KEK, true));
    assert!(
        matches!(bad_module, HsmError::ModuleLoad { .. }),
        "{bad_module}"
    );
    let missing_token = open(cfg(module, "no-such-token", &pin_file, KEK, true));
    assert!(
        matches!(missing_token, HsmError::TokenMissing { .. }),
        "{missing_token}"
    );
    let wrong_pin = open(cfg(module, "pin-test", &wrong_pin_file, KEK, true));
    assert!(
        matches!(wrong_pin, HsmError::WrongPin { .. }),
        "{wrong_pin}"
    );
    // Two tokens with one label: refuse to guess which one holds the KEK.
    let twins = open(cfg(module, "twin", &pin_file, KEK, true));
    assert!(
        matches!(twins, HsmError::TokenAmbiguous { count: 2, .. }),
        "{twins}"
    );
    let kek_absent = open(cfg(module, TOKEN, &pin_file, KEK, false));
    assert!(
        matches!(kek_absent, HsmError::KekMissing { .. }),
        "{kek_absent}"
    );
    let no_pin = open(SealerConfig::Pkcs11(Pkcs11Config {
        module: module.to_path_buf(),
        token_label: TOKEN.into(),
        pin_file: None,
        pin_env: Some("CUSTOS_HSM_TEST_UNSET_PIN_VAR".into()),
        kek_label: KEK.into(),
        create_kek: true,
    }));
    assert!(
        matches!(no_pin, HsmError::SecretUnavailable { .. }),
        "{no_pin}"
    );

    let messages: Vec<String> = [
        &missing_module,
        &bad_module,
        &missing_token,
        &wrong_pin,
        &kek_absent,
        &no_pin,
    ]
    .iter()
    .map(|e| e.to_string())
    .collect();
    println!("start-up errors:\n  {}", messages.join("\n  "));
    for (i, m) in messages.iter().enumerate() {
        assert!(
            !m.contains(PIN) && !m.contains("not-the-pin"),
            "secret in error: {m}"
        );
        for other in &messages[i + 1..] {
            assert_ne!(m, other);
        }
    }
    assert!(
        missing_module
            .to_string()
            .contains("/nonexistent/libsofthsm2.so")
    );
    assert!(missing_token.to_string().contains("no-such-token"));
    assert!(wrong_pin.to_string().contains("wrong PIN"));
    assert!(kek_absent.to_string().contains(KEK));

    // The KEK was not created by the refused start, and creation when allowed works.
    assert!(matches!(
        Pkcs11Sealer::open_with_pin(module, TOKEN, &pin(), KEK, false),
        Err(HsmError::KekMissing { .. })
    ));
    let ok = open_sealer(&cfg(module, TOKEN, &pin_file, KEK, true), &dir).unwrap();
    // While the token is logged in, a second opener's wrong PIN is still refused.
    let err = expect_err(
        Pkcs11Sealer::open_with_pin(module, TOKEN, &Pin::from("not-the-pin-9876"), KEK, false),
        "wrong PIN while logged in",
    );
    assert!(matches!(err, HsmError::WrongPin { .. }), "{err}");
    drop(ok);
}

// ------------------------------------------------------------------ node restart

#[test]
fn signer_node_restart_with_softhsm_unseals_shares_and_signs() {
    let hsm = SoftHsm::new();
    hsm.init_token(TOKEN, PIN);
    let data = tempfile::tempdir().unwrap();
    let env = [(SHARED, data.path().to_str().unwrap())];
    // First start: the KEK is created, shares are generated and written sealed.
    hsm.run_child("child_node_first_start", &env);
    // Restart (a new process, new C_Initialize and login): unseal and sign.
    hsm.run_child("child_node_restart", &env);
    // Verify the signature outside any HSM code.
    use k256::ecdsa::signature::Verifier;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(
        &std::fs::read(data.path().join("share-1.pub")).unwrap(),
    )
    .unwrap();
    let sig = k256::ecdsa::Signature::from_slice(&std::fs::read(data.path().join("sig")).unwrap())
        .unwrap();
    vk.verify(b"withdrawal 42", &sig).unwrap();
}

fn node_config(data: &Path, create: bool) -> SealerConfig {
    let pin_file = data.join("hsm-pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let text = format!(
        "backend = \"pkcs11\"\nmodule = \"{MODULE}\"\ntoken_label = \"{TOKEN}\"\npin_file = \"{}\"\nkek_label = \"{KEK}\"\ncreate_kek = {create}\n",
        pin_file.display()
    );
    toml::from_str(&text).unwrap()
}

#[test]
#[ignore = "run in a child process by its parent test"]
fn child_node_first_start() {
    if child_dir().is_none() {
        return;
    }
    let data = shared();
    let sealer = open_sealer(&node_config(&data, true), &data).unwrap();
    std::fs::create_dir(data.join("shares")).unwrap();
    for i in 1..=3 {
        let sk = k256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let secret = sk.to_bytes();
        let key_id = format!("key-{i}");
        let ctx = SealContext {
            node_id: "node-1",
            key_id: &key_id,
            share_id: "share",
        };
        let blob = sealer.seal(&ctx, &secret).unwrap();
        assert!(
            !blob.windows(32).any(|w| w == &secret[..]),
            "share in clear on disk"
        );
        std::fs::write(data.join("shares").join(format!("{key_id}.sealed")), blob).unwrap();
        let vk = sk.verifying_key().to_encoded_point(true);
        std::fs::write(data.join(format!("share-{i}.pub")), vk.as_bytes()).unwrap();
    }
}

#[test]
#[ignore = "run in a child process by its parent test"]
fn child_node_restart() {
    if child_dir().is_none() {
        return;
    }
    let data = shared();
    // Restart with create_kek = false: the KEK must be found, not re-created.
    let sealer = open_sealer(&node_config(&data, false), &data).unwrap();
    let ctx = SealContext {
        node_id: "node-1",
        key_id: "key-1",
        share_id: "share",
    };
    let blob = std::fs::read(data.join("shares/key-1.sealed")).unwrap();
    let secret = sealer.unseal(&ctx, &blob).unwrap();
    let sk = k256::ecdsa::SigningKey::from_slice(&secret).unwrap();
    let sig: k256::ecdsa::Signature = k256::ecdsa::signature::Signer::sign(&sk, b"withdrawal 42");
    std::fs::write(data.join("sig"), sig.to_bytes()).unwrap();
    // The other shares unseal too, and a share cannot be passed off as another key's.
    let other = std::fs::read(data.join("shares/key-2.sealed")).unwrap();
    assert!(sealer.unseal(&ctx, &other).is_err());
    let ctx2 = SealContext {
        key_id: "key-2",
        ..ctx
    };
    assert_eq!(sealer.unseal(&ctx2, &other).unwrap().len(), 32);
}

// ------------------------------------------------------------------ re-seal

#[test]
fn reseal_between_software_and_pkcs11() {
    let hsm = SoftHsm::new();
    hsm.init_token(TOKEN, PIN);
    hsm.run_child("child_reseal_between_software_and_pkcs11", &[]);
}

#[test]
#[ignore = "run in a child process by its parent test"]
fn child_reseal_between_software_and_pkcs11() {
    let Some(dir) = child_dir() else {
        return;
    };
    let software = |sub: &str| {
        SoftwareSealer::open_with_params(
            &dir.join(sub),
            &Passphrase::from("pass"),
            true,
            KdfParams::insecure_fast_for_tests(),
        )
        .unwrap()
    };
    let (sw, hsm) = (software("sw-old"), sealer(true));
    let shares = dir.join("shares");
    std::fs::create_dir(&shares).unwrap();
    let keys = ["k1", "k2", "k3", "k4"];
    for k in keys {
        let ctx = SealContext {
            node_id: "node-1",
            key_id: k,
            share_id: "share",
        };
        std::fs::write(shares.join(k), sw.seal(&ctx, k.as_bytes()).unwrap()).unwrap();
    }
    let r = reseal_dir(&sw, &hsm, &shares, "node-1").unwrap();
    assert_eq!((r.resealed, r.already_current), (4, 0));
    let sw2 = software("sw-new");
    let r = reseal_dir(&hsm, &sw2, &shares, "node-1").unwrap();
    assert_eq!(r.resealed, 4);
    for k in keys {
        let ctx = SealContext {
            node_id: "node-1",
            key_id: k,
            share_id: "share",
        };
        let b = std::fs::read(shares.join(k)).unwrap();
        assert_eq!(&sw2.unseal(&ctx, &b).unwrap()[..], k.as_bytes());
        assert!(hsm.unseal(&ctx, &b).is_err() && sw.unseal(&ctx, &b).is_err());
    }
}

// ------------------------------------------------------------------ log signer

#[test]
fn log_signer_ed25519_and_p256_fallback() {
    let hsm = SoftHsm::new();
    hsm.init_token(TOKEN, PIN);
    hsm.run_child("child_log_signer_ed25519_and_p256_fallback", &[]);
}

#[test]
#[ignore = "run in a child process by its parent test"]
fn child_log_signer_ed25519_and_p256_fallback() {
    let Some(dir) = child_dir() else {
        return;
    };
    let module = Path::new(MODULE);
    let msg = b"custos checkpoint\n42\nabcdef\n";

    let absent = expect_err(
        Pkcs11LogSigner::open(
            module,
            TOKEN,
            &pin(),
            "log-key",
            LogKeyAlgorithm::Auto,
            false,
        ),
        "absent key",
    );
    assert!(matches!(absent, HsmError::KekMissing { .. }), "{absent}");

    // SoftHSM2 has CKM_EDDSA: Auto picks Ed25519.
    let ed = Pkcs11LogSigner::open(
        module,
        TOKEN,
        &pin(),
        "log-key",
        LogKeyAlgorithm::Auto,
        true,
    )
    .unwrap();
    assert_eq!(ed.algorithm(), SignatureAlgorithm::Ed25519);
    let pk: [u8; 32] = ed.public_key().try_into().unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(&ed.sign(msg).unwrap()).unwrap();
    vk.verify_strict(msg, &sig).unwrap();
    assert!(vk.verify_strict(b"another message", &sig).is_err());

    // Reopened through the config, without creation: the same key.
    let pin_file = dir.join("pin");
    std::fs::write(&pin_file, PIN).unwrap();
    let cfg: LogSignerConfig = toml::from_str(&format!(
        "backend = \"pkcs11\"\nmodule = \"{MODULE}\"\ntoken_label = \"{TOKEN}\"\npin_file = \"{}\"\nkey_label = \"log-key\"\n",
        pin_file.display()
    ))
    .unwrap();
    let again = open_log_signer(&cfg).unwrap();
    assert_eq!(again.public_key(), pk.to_vec());
    let sig2 = ed25519_dalek::Signature::from_slice(&again.sign(msg).unwrap()).unwrap();
    vk.verify_strict(msg, &sig2).unwrap();

    // Asking for P-256 on the Ed25519 key is refused.
    let err = expect_err(
        Pkcs11LogSigner::open(
            module,
            TOKEN,
            &pin(),
            "log-key",
            LogKeyAlgorithm::EcdsaP256,
            false,
        ),
        "algorithm mismatch",
    );
    assert!(matches!(err, HsmError::KeyUnsuitable { .. }), "{err}");

    // The P-256 fallback, hashing client-side.
    let p = Pkcs11LogSigner::open(
        module,
        TOKEN,
        &pin(),
        "log-key-p256",
        LogKeyAlgorithm::EcdsaP256,
        true,
    )
    .unwrap();
    assert_eq!(p.algorithm(), SignatureAlgorithm::EcdsaP256Sha256);
    let pk = p.public_key();
    assert_eq!(pk.len(), 33);
    use p256::ecdsa::signature::Verifier;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&pk).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&p.sign(msg).unwrap()).unwrap();
    vk.verify(msg, &sig).unwrap();
    assert!(vk.verify(b"another message", &sig).is_err());
}

// ------------------------------------------------------------------ no SoftHSM needed

#[test]
fn missing_module_fails_before_reading_the_pin() {
    let cfg = SealerConfig::Pkcs11(Pkcs11Config {
        module: "/nonexistent/module.so".into(),
        token_label: TOKEN.into(),
        pin_file: None,
        pin_env: Some("CUSTOS_HSM_TEST_UNSET_PIN_VAR".into()),
        kek_label: KEK.into(),
        create_kek: false,
    });
    let err = expect_err(open_sealer(&cfg, Path::new("/tmp")), "missing module");
    assert!(matches!(err, HsmError::ModuleMissing { .. }), "{err}");
}

// ------------------------------------------------------------------ session loss

#[test]
fn lost_session_is_re_established() {
    let hsm = SoftHsm::new();
    hsm.init_token(TOKEN, PIN);
    hsm.run_child("child_lost_session_is_re_established", &[]);
}

#[test]
#[ignore = "run in a child process by its parent test"]
fn child_lost_session_is_re_established() {
    if child_dir().is_none() {
        return;
    }
    let s = sealer(true);
    let signer = Pkcs11LogSigner::open(
        Path::new(MODULE),
        TOKEN,
        &pin(),
        "log",
        LogKeyAlgorithm::Auto,
        true,
    )
    .unwrap();
    let blob = s.seal(&CTX, b"before").unwrap();
    let ctx = pkcs11_context(Path::new(MODULE)).unwrap();
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|slot| ctx.get_token_info(*slot).unwrap().label() == TOKEN)
        .unwrap();
    for round in 0..2 {
        // C_Logout logs out every session of this process on the token, as a
        // restarted network HSM would: the private KEK becomes unusable.
        let other = ctx.open_ro_session(slot).unwrap();
        other.logout().unwrap();
        drop(other);
        let probe = ctx.open_ro_session(slot).unwrap();
        assert!(
            probe
                .find_objects(&[Attribute::Label(KEK.as_bytes().to_vec())])
                .unwrap()
                .is_empty(),
            "round {round}: still logged in"
        );
        drop(probe);
        assert_eq!(
            &s.unseal(&CTX, &blob).unwrap()[..],
            b"before",
            "round {round}"
        );
        let b2 = s.seal(&CTX, b"after").unwrap();
        assert_eq!(&s.unseal(&CTX, &b2).unwrap()[..], b"after");
        let sig = signer.sign(b"m").unwrap();
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&signer.public_key().try_into().unwrap())
            .unwrap();
        vk.verify_strict(b"m", &ed25519_dalek::Signature::from_slice(&sig).unwrap())
            .unwrap();
    }
}
