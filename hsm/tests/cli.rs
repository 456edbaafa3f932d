//! The `custos-hsm` tool as a process: fail-closed start-up checks with
//! distinct errors and exit codes (docs/SECURITY.md case 22), and re-sealing a
//! node's shares between backends (docs/SECURITY.md case 18 for the result).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::{Command, Output};

use custos_hsm::testing::{SOFTHSM2_MODULE, SoftHsm2};
use custos_hsm::{KdfParams, Passphrase, SealContext, Sealer, SoftwareSealer};

const PIN: &str = "user-pin-1234";

fn tool(hsm: Option<&SoftHsm2>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custos-hsm"));
    cmd.args(args);
    if let Some(h) = hsm {
        cmd.envs(h.env());
    }
    cmd.output().unwrap()
}

fn code_and_stderr(out: &Output) -> (i32, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn pkcs11_toml(
    dir: &Path,
    name: &str,
    module: &str,
    token: &str,
    pin: &str,
    create: bool,
) -> String {
    let pin_file = write(&dir.join(format!("{name}.pin")), &format!("{pin}\n"));
    write(
        &dir.join(format!("{name}.toml")),
        &format!(
            "backend = \"pkcs11\"\nmodule = \"{module}\"\ntoken_label = \"{token}\"\npin_file = \"{pin_file}\"\nkek_label = \"custos-kek\"\ncreate_kek = {create}\n"
        ),
    )
}

fn software_toml(dir: &Path, name: &str, pass: &str, create: bool) -> String {
    let pass_file = write(&dir.join(format!("{name}.pass")), &format!("{pass}\n"));
    write(
        &dir.join(format!("{name}.toml")),
        &format!(
            "backend = \"software\"\npassphrase_file = \"{pass_file}\"\ncreate_kek = {create}\nkdf = {{ m_cost_kib = 19456, t_cost = 2, p_cost = 1 }}\n"
        ),
    )
}

#[test]
fn node_start_check_fails_closed_with_distinct_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hsm = SoftHsm2::create(&d.join("softhsm")).unwrap();
    hsm.init_token("node-1", PIN, "so-pin-1234").unwrap();
    let data = d.join("data");
    let data = data.to_str().unwrap();

    let cases = [
        (
            "missing module",
            pkcs11_toml(d, "a", "/nonexistent/libsofthsm2.so", "node-1", PIN, true),
            "PKCS#11 module not found",
        ),
        (
            "missing token",
            pkcs11_toml(d, "b", SOFTHSM2_MODULE, "node-9", PIN, true),
            "no PKCS#11 token labelled \"node-9\"",
        ),
        (
            "wrong PIN",
            pkcs11_toml(d, "c", SOFTHSM2_MODULE, "node-1", "wrong-pin-0000", true),
            "wrong PIN for PKCS#11 token \"node-1\"",
        ),
        (
            "KEK absent",
            pkcs11_toml(d, "d", SOFTHSM2_MODULE, "node-1", PIN, false),
            "KEK labelled \"custos-kek\" on token \"node-1\" is absent",
        ),
    ];
    for (what, cfg, message) in &cases {
        let out = tool(Some(&hsm), &["check", "--config", cfg, "--data-dir", data]);
        let (code, stderr) = code_and_stderr(&out);
        assert_eq!(code, 1, "{what}: {stderr}");
        assert!(stderr.contains(message), "{what}: {stderr}");
        assert!(
            !stderr.contains(PIN) && !stderr.contains("wrong-pin-0000"),
            "{what}: PIN leaked: {stderr}"
        );
    }

    // First start with creation allowed, then restarts without: both succeed.
    let create = pkcs11_toml(d, "e", SOFTHSM2_MODULE, "node-1", PIN, true);
    let out = tool(
        Some(&hsm),
        &["check", "--config", &create, "--data-dir", data],
    );
    assert!(out.status.success(), "{}", code_and_stderr(&out).1);
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    let restart = &cases[3].1; // create_kek = false
    let out = tool(
        Some(&hsm),
        &["check", "--config", restart, "--data-dir", data],
    );
    assert!(out.status.success(), "{}", code_and_stderr(&out).1);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        first,
        "the same KEK after restart"
    );

    // Software backend: absent KEK without creation, wrong passphrase.
    let sw_data = d.join("sw-data");
    let sw_data = sw_data.to_str().unwrap();
    let no_create = software_toml(d, "f", "right", false);
    let (code, stderr) = code_and_stderr(&tool(
        None,
        &["check", "--config", &no_create, "--data-dir", sw_data],
    ));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("software KEK file") && stderr.contains("is absent"),
        "{stderr}"
    );
    let ok = software_toml(d, "g", "right", true);
    assert!(
        tool(None, &["check", "--config", &ok, "--data-dir", sw_data])
            .status
            .success()
    );
    let wrong = software_toml(d, "h", "wrong", false);
    let (code, stderr) = code_and_stderr(&tool(
        None,
        &["check", "--config", &wrong, "--data-dir", sw_data],
    ));
    assert_eq!(code, 1);
    assert!(stderr.contains("wrong passphrase"), "{stderr}");

    // Configuration and usage errors have their own exit codes.
    let bad = write(&d.join("bad.toml"), "backend = \"tpm\"\n");
    assert_eq!(
        code_and_stderr(&tool(
            None,
            &["check", "--config", &bad, "--data-dir", sw_data]
        ))
        .0,
        78
    );
    assert_eq!(
        code_and_stderr(&tool(
            None,
            &[
                "check",
                "--config",
                "/nonexistent.toml",
                "--data-dir",
                sw_data
            ]
        ))
        .0,
        78
    );
    assert_eq!(code_and_stderr(&tool(None, &["check"])).0, 64);
    assert_eq!(code_and_stderr(&tool(None, &["frobnicate"])).0, 64);
}

#[test]
fn reseal_a_nodes_shares_from_software_to_softhsm_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hsm = SoftHsm2::create(&d.join("softhsm")).unwrap();
    hsm.init_token("node-1", PIN, "so-pin-1234").unwrap();
    let (old_dir, new_dir, shares) = (d.join("kek-old"), d.join("kek-new"), d.join("shares"));
    std::fs::create_dir(&shares).unwrap();
    let open = |dir: &Path, pass: &str| {
        SoftwareSealer::open_with_params(
            dir,
            &Passphrase::from(pass),
            true,
            KdfParams::insecure_fast_for_tests(),
        )
        .unwrap()
    };
    let old = open(&old_dir, "old pass");
    let keys = ["key-1", "key-2", "key-3"];
    for k in keys {
        let ctx = SealContext {
            node_id: "node-1",
            key_id: k,
            share_id: "share",
        };
        std::fs::write(
            shares.join(format!("{k}.sealed")),
            old.seal(&ctx, k.as_bytes()).unwrap(),
        )
        .unwrap();
    }
    let sw_old = software_toml(d, "sw-old", "old pass", false);
    let sw_new = software_toml(d, "sw-new", "new pass", true);
    let hsm_cfg = pkcs11_toml(d, "hsm", SOFTHSM2_MODULE, "node-1", PIN, true);
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    let out = tool(
        Some(&hsm),
        &[
            "reseal",
            "--from",
            &sw_old,
            "--from-data-dir",
            &s(&old_dir),
            "--to",
            &hsm_cfg,
            "--to-data-dir",
            &s(d),
            "--shares",
            &s(&shares),
            "--node-id",
            "node-1",
        ],
    );
    assert!(out.status.success(), "{}", code_and_stderr(&out).1);
    assert!(String::from_utf8_lossy(&out.stdout).contains("resealed 3 blob(s)"));
    let out = tool(None, &["inspect", &s(&shares.join("key-2.sealed"))]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("backend=pkcs11") && text.contains("node=node-1 key=key-2"),
        "{text}"
    );
    for k in keys {
        let ctx = SealContext {
            node_id: "node-1",
            key_id: k,
            share_id: "share",
        };
        assert!(
            old.unseal(
                &ctx,
                &std::fs::read(shares.join(format!("{k}.sealed"))).unwrap()
            )
            .is_err()
        );
    }

    // And on to a new software KEK.
    let out = tool(
        Some(&hsm),
        &[
            "reseal",
            "--from",
            &hsm_cfg,
            "--from-data-dir",
            &s(d),
            "--to",
            &sw_new,
            "--to-data-dir",
            &s(&new_dir),
            "--shares",
            &s(&shares),
            "--node-id",
            "node-1",
        ],
    );
    assert!(out.status.success(), "{}", code_and_stderr(&out).1);
    let new = open(&new_dir, "new pass");
    for k in keys {
        let ctx = SealContext {
            node_id: "node-1",
            key_id: k,
            share_id: "share",
        };
        let blob = std::fs::read(shares.join(format!("{k}.sealed"))).unwrap();
        assert_eq!(&new.unseal(&ctx, &blob).unwrap()[..], k.as_bytes());
    }
}
