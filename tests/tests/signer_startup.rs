//! `custos-signer` refuses to start, with exit code 78 and a message naming
//! the problem, when its sealer (SoftHSM2 over PKCS#11, or the software KEK)
//! or its config cannot be used. Every case runs the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use custos_devkit::{ClusterLayout, ClusterSpec};
use custos_tests::{bin_dir, primes_fixture, unseal_cli};

use custos_tests::{SOFTHSM2_MODULE, pkcs11_table, set_sealer};
const EXIT_CONFIG: i32 = 78;
/// How long a refused start may take.
const LIMIT: Duration = Duration::from_secs(10);

/// A generated 3-signer layout in its own tempdir.
struct Fixture {
    dir: tempfile::TempDir,
    layout: ClusterLayout,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ClusterSpec::new(dir.path().join("cluster"));
        spec.signers = 3;
        spec.threshold = 2;
        spec.base_port = custos_devkit::free_base_port();
        spec.primes_file = Some(primes_fixture());
        let layout = custos_devkit::generate(&spec).unwrap();
        Fixture { dir, layout }
    }

    fn config(&self) -> &Path {
        &self.layout.signers[0].config
    }

    /// Replaces the `[sealer]` table of signer-1's config.
    fn set_sealer(&self, table: &str) {
        set_sealer(self.config(), table);
    }

    /// A SoftHSM2 installation with one token `custos-signer-1` (PIN `1234`).
    fn softhsm(&self) -> SoftHsm {
        let hsm = SoftHsm::create(&self.dir.path().join("softhsm"));
        hsm.init_token("custos-signer-1", "1234");
        hsm
    }

    /// Writes a PIN file next to the config and returns its path.
    fn pin_file(&self, pin: &str) -> PathBuf {
        let path = self.layout.signers[0].dir.join("hsm-pin");
        std::fs::write(&path, format!("{pin}\n")).unwrap();
        path
    }

    /// Runs signer-1 to completion (killed after [`LIMIT`]).
    fn run(&self, env: &[(&str, &Path)]) -> Output {
        run_signer(self.config(), env)
    }
}

/// A private SoftHSM2 token directory and configuration.
struct SoftHsm {
    conf: PathBuf,
}

impl SoftHsm {
    fn create(dir: &Path) -> SoftHsm {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        SoftHsm { conf }
    }

    fn init_token(&self, label: &str, pin: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", pin, "--so-pin", "so-secret"])
            .output()
            .expect("softhsm2-util runs");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn env(&self) -> [(&'static str, &Path); 1] {
        [("SOFTHSM2_CONF", self.conf.as_path())]
    }
}

/// Runs `custos-signer --config <config>`; kills it if it still runs after [`LIMIT`].
fn run_signer(config: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(bin_dir().join("custos-signer"));
    cmd.arg("--config")
        .arg(config)
        .current_dir(config.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CUSTOS_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > LIMIT {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "custos-signer still running after {LIMIT:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Asserts exit code 78 and that stderr contains every one of `needles`; returns stderr.
fn assert_refused(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(EXIT_CONFIG),
        "exit status {}; stderr:\n{stderr}",
        out.status
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
    // The error line itself (logs may precede it).
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error: ` line in stderr:\n{stderr}"));
    line.to_owned()
}

/// The messages of the sealer cases must not be confused with each other.
const SEALER_MESSAGES: [&str; 5] = [
    "PKCS#11 module not found",
    "no PKCS#11 token labelled",
    "wrong PIN for PKCS#11 token",
    "is absent and creating it is not allowed",
    "wrong passphrase for the software KEK",
];

fn assert_only(line: &str, expected: &str) {
    for m in SEALER_MESSAGES {
        assert_eq!(
            line.contains(m),
            m == expected,
            "{expected:?} expected, {m:?} {}: {line}",
            if line.contains(m) {
                "present"
            } else {
                "absent"
            }
        );
    }
}

#[test]
fn pkcs11_module_missing() {
    let f = Fixture::new();
    let hsm = f.softhsm();
    let pin = f.pin_file("1234");
    let mut table = pkcs11_table("custos-signer-1", &pin, "custos-kek", true);
    table = table.replace(SOFTHSM2_MODULE, "/nonexistent/libpkcs11-missing.so");
    f.set_sealer(&table);
    let line = assert_refused(
        &f.run(&hsm.env()),
        &[
            "sealer (config field `sealer`)",
            "PKCS#11 module not found at /nonexistent/libpkcs11-missing.so",
        ],
    );
    assert_only(&line, SEALER_MESSAGES[0]);
}

#[test]
fn pkcs11_token_label_not_present() {
    let f = Fixture::new();
    let hsm = f.softhsm();
    let pin = f.pin_file("1234");
    f.set_sealer(&pkcs11_table(
        "custos-no-such-token",
        &pin,
        "custos-kek",
        true,
    ));
    let line = assert_refused(
        &f.run(&hsm.env()),
        &["no PKCS#11 token labelled \"custos-no-such-token\" is present"],
    );
    assert_only(&line, SEALER_MESSAGES[1]);
}

#[test]
fn pkcs11_wrong_pin() {
    let f = Fixture::new();
    let hsm = f.softhsm();
    let pin = f.pin_file("4321");
    f.set_sealer(&pkcs11_table("custos-signer-1", &pin, "custos-kek", true));
    let line = assert_refused(
        &f.run(&hsm.env()),
        &["wrong PIN for PKCS#11 token \"custos-signer-1\""],
    );
    assert_only(&line, SEALER_MESSAGES[2]);
    assert!(!line.contains("4321"), "the PIN leaks: {line}");
}

#[test]
fn pkcs11_kek_absent_and_creation_not_allowed() {
    let f = Fixture::new();
    let hsm = f.softhsm();
    let pin = f.pin_file("1234");
    f.set_sealer(&pkcs11_table("custos-signer-1", &pin, "custos-kek", false));
    let line = assert_refused(
        &f.run(&hsm.env()),
        &[
            "KEK labelled \"custos-kek\" on token \"custos-signer-1\" is absent and creating it is not allowed",
        ],
    );
    assert_only(&line, SEALER_MESSAGES[3]);
}

/// Starts signer-1 with its generated config (`create_kek = true`) until its
/// software KEK file exists, then kills it; returns the KEK file's path.
fn first_start(f: &Fixture) -> PathBuf {
    let s = &f.layout.signers[0];
    let mut child = Command::new(bin_dir().join("custos-signer"))
        .arg("--config")
        .arg(&s.config)
        .current_dir(&s.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kek = s.data_dir.join("software-kek.json");
    let started = Instant::now();
    while !kek.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("first start exited: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no KEK file");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    kek
}

#[test]
fn software_wrong_passphrase() {
    let f = Fixture::new();
    first_start(&f);
    let s = &f.layout.signers[0];
    std::fs::write(&s.passphrase_file, "not the passphrase\n").unwrap();
    let line = assert_refused(
        &f.run(&[]),
        &[
            "sealer (config field `sealer`)",
            "wrong passphrase for the software KEK",
        ],
    );
    assert_only(&line, SEALER_MESSAGES[4]);
    assert!(!line.contains("not the passphrase"), "the passphrase leaks");
}

/// `create_kek` defaults to false: with the line gone (a production
/// config), a deleted KEK file is an error naming it and is not recreated.
#[test]
fn software_kek_deleted_is_not_recreated() {
    let f = Fixture::new();
    let kek = first_start(&f);
    let text = std::fs::read_to_string(f.config()).unwrap();
    assert!(text.contains("create_kek = true"), "{text}");
    let production: String = text
        .lines()
        .filter(|l| !l.starts_with("create_kek"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(f.config(), production).unwrap();
    std::fs::remove_file(&kek).unwrap();
    let line = assert_refused(
        &f.run(&[]),
        &[
            "sealer (config field `sealer`)",
            &format!("software KEK file {}", kek.display()),
        ],
    );
    assert_only(&line, SEALER_MESSAGES[3]);
    assert!(!kek.exists(), "the KEK file was recreated");
}

/// Argon2id parameters below OWASP's minimum are refused at start, naming the field.
#[test]
fn software_kdf_below_minimum_is_refused() {
    let f = Fixture::new();
    let text = std::fs::read_to_string(f.config()).unwrap();
    assert!(text.contains("m_cost_kib = 19456"), "{text}");
    std::fs::write(
        f.config(),
        text.replace("m_cost_kib = 19456", "m_cost_kib = 64"),
    )
    .unwrap();
    let line = assert_refused(
        &f.run(&[]),
        &["`kdf.m_cost_kib` = 64 is below the minimum 19456"],
    );
    for m in SEALER_MESSAGES {
        assert!(!line.contains(m), "{line}");
    }
    assert!(
        !f.layout.signers[0]
            .data_dir
            .join("software-kek.json")
            .exists()
    );
}

#[test]
fn missing_config_field_is_named() {
    let f = Fixture::new();
    let text = std::fs::read_to_string(f.config()).unwrap();
    // The first `node_id` is the top-level one (peers come later).
    let start = text.find("node_id = ").unwrap();
    let end = start + text[start..].find('\n').unwrap() + 1;
    std::fs::write(f.config(), format!("{}{}", &text[..start], &text[end..])).unwrap();
    let line = assert_refused(&f.run(&[]), &["node_id"]);
    assert!(line.contains("missing field `node_id`"), "{line}");
    for m in SEALER_MESSAGES {
        assert!(!line.contains(m), "{line}");
    }
}

#[test]
fn unreadable_identity_key_is_named() {
    let f = Fixture::new();
    let key = &f.layout.signers[0].identity_key;
    // Tests may run as root, which reads any file: make it a directory instead.
    std::fs::remove_file(key).unwrap();
    std::fs::create_dir(key).unwrap();
    let line = assert_refused(&f.run(&[]), &["config field `identity_key`"]);
    assert!(line.contains(&key.display().to_string()), "{line}");
    for m in SEALER_MESSAGES {
        assert!(!line.contains(m), "{line}");
    }
}

/// Rewrites the signer's `[dev]` table: drops the lines starting with any of
/// `drop` and adds `add` under the table header.
fn edit_dev_table(config: &Path, drop: &[&str], add: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if drop.iter().any(|d| line.starts_with(d)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[dev]" {
            out.push_str(add);
            out.push('\n');
        }
    }
    assert!(out.contains(add), "no [dev] table in:\n{text}");
    std::fs::write(config, out).unwrap();
}

#[test]
fn aux_fixture_only_for_its_own_dev_group() {
    // Without the public test primes this is no dev cluster: refused.
    let f = Fixture::new();
    let fixture = custos_tests::aux_fixture(3);
    edit_dev_table(
        f.config(),
        &["primes_file"],
        &format!("aux_fixture = {:?}", fixture.display().to_string()),
    );
    let line = assert_refused(&f.run(&[]), &["dev.aux_fixture"]);
    assert!(line.contains("dev.primes_file"), "{line}");

    // A fixture for another group size.
    let f = Fixture::new();
    edit_dev_table(
        f.config(),
        &[],
        &format!(
            "aux_fixture = {:?}",
            custos_tests::aux_fixture(5).display().to_string()
        ),
    );
    let line = assert_refused(&f.run(&[]), &["dev.aux_fixture"]);
    assert!(line.contains("this signer group is"), "{line}");

    // Primes other than the ones the fixture's party was made from.
    let f = Fixture::new();
    edit_dev_table(
        f.config(),
        &["primes_index"],
        &format!(
            "primes_index = 1\naux_fixture = {:?}",
            fixture.display().to_string()
        ),
    );
    let line = assert_refused(&f.run(&[]), &["dev.aux_fixture"]);
    assert!(line.contains("not made from this node's primes"), "{line}");
}

/// Waits until `cond` holds (or fails after 30 s, with `what`).
fn wait_until(what: &str, child: &mut std::process::Child, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).unwrap();
            }
            panic!("custos-signer exited ({status}) while waiting for {what}:\n{err}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_signer(config: &Path) -> std::process::Child {
    Command::new(bin_dir().join("custos-signer"))
        .arg("--config")
        .arg(config)
        .current_dir(config.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The unseal ceremony (issue 22): a signer with `unseal = "ceremony"` keeps
/// no passphrase; it starts sealed (`/healthz` 503 "sealed", nothing else
/// listening) until operators give it 2 of 3 Shamir shares (or the whole
/// passphrase) with `custos unseal`; wrong shares and passphrases are
/// refused without losing the wait; its identity and TLS keys are sealed
/// in place at the first start and open again at the next; SIGTERM ends a
/// sealed wait.
#[test]
fn unseal_ceremony_with_shares_and_sealed_key_files() {
    let f = Fixture::new();
    let s = &f.layout.signers[0];
    std::fs::remove_file(&s.passphrase_file).unwrap();
    f.set_sealer(
        "backend = \"software\"\nunseal = \"ceremony\"\ncreate_kek = true\nkdf = { m_cost_kib = 19456, t_cost = 2, p_cost = 1 }\n",
    );
    let socket = s.data_dir.join("unseal.sock");
    let sock = socket.to_str().unwrap();

    // Split the passphrase: 3 shares, any 2 unseal.
    let (ok, all, stdout) = unseal_cli(&["split", "-k", "2", "-n", "3"], "Correct horse battery\n");
    assert!(ok, "{all}");
    let shares: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert_eq!(shares.len(), 3, "{all}");
    assert!(!all.contains("Correct horse"));
    let (_, _, other) = unseal_cli(&["split", "-k", "2", "-n", "2", "--json"], "another\n");
    let other: serde_json::Value = serde_json::from_str(&other).unwrap();

    let mut child = spawn_signer(f.config());
    wait_until("unseal socket", &mut child, || socket.exists());
    let (code, body) = custos_tests::http_get_blocking(s.http_listen, "/healthz");
    assert_eq!(
        (code, body.trim()),
        (503, "not ready: sealed (waiting for `custos unseal`)")
    );
    assert!(
        std::net::TcpStream::connect(s.control_listen).is_err(),
        "the control API must not listen while sealed"
    );

    let (ok, out, _stdout) = unseal_cli(&["submit", "--socket", sock], &format!("{}\n", shares[0]));
    assert!(ok, "{out}");
    assert!(out.contains("share accepted: 1 of 2"), "{}", out);
    let (_, body) = custos_tests::http_get_blocking(s.http_listen, "/healthz");
    assert!(body.contains("sealed (1 of 2 shares received)"), "{body}");
    // A share of another split is refused and names the way out.
    let wrong = other["shares"][0].as_str().unwrap();
    let (ok, out, _stdout) = unseal_cli(&["submit", "--socket", sock], &format!("{wrong}\n"));
    assert!(!ok, "{out}");
    assert!(out.contains("custos unseal reset"), "{}", out);
    // A mistyped share is caught by the CLI before it is sent.
    let typo = shares[1].replacen("custos-share1-2-2-", "custos-share1-2-3-", 1);
    let (_ok, out, _stdout) = unseal_cli(&["submit", "--socket", sock], &format!("{typo}\n"));
    assert!(out.contains("mistyped"), "{}", out);
    let (_ok, _out, stdout) = unseal_cli(&["status", "--socket", sock, "--json"], "");
    let st: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (st["state"].as_str(), st["shares"].as_u64()),
        (Some("sealed"), Some(1))
    );

    let (_ok, out, _stdout) =
        unseal_cli(&["submit", "--socket", sock], &format!("{}\n", shares[2]));
    assert!(out.contains("unsealed"), "{}", out);
    wait_until("readiness", &mut child, || {
        std::net::TcpStream::connect(s.http_listen).is_ok()
            && custos_tests::http_get_blocking(s.http_listen, "/healthz").0 == 200
    });
    assert!(!socket.exists(), "the socket goes once unsealed");
    for key in [&s.identity_key, &s.tls_key] {
        let bytes = std::fs::read(key).unwrap();
        assert!(
            bytes.starts_with(b"CSTSEAL"),
            "{} is not sealed",
            key.display()
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Next start: a wrong passphrase is refused, the right one (whole)
    // opens the KEK and the sealed key files.
    let mut child = spawn_signer(f.config());
    wait_until("unseal socket", &mut child, || socket.exists());
    let (ok, out, _stdout) = unseal_cli(&["submit", "--socket", sock], "Correct horse\n");
    assert!(!ok, "{out}");
    assert!(out.contains("does not open the key"), "{}", out);
    let (ok, out, _stdout) = unseal_cli(&["submit", "--socket", sock], "Correct horse battery\n");
    assert!(ok, "{out}");
    wait_until("readiness", &mut child, || {
        std::net::TcpStream::connect(s.http_listen).is_ok()
            && custos_tests::http_get_blocking(s.http_listen, "/healthz").0 == 200
    });
    child.kill().unwrap();
    child.wait().unwrap();

    // SIGTERM while sealed: the node stops, the socket goes.
    let mut child = spawn_signer(f.config());
    wait_until("unseal socket", &mut child, || socket.exists());
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped while sealed"));
    assert!(!socket.exists());
}

/// A config that sets both a passphrase source and the ceremony is refused.
#[test]
fn unseal_ceremony_and_a_passphrase_file_exclude_each_other() {
    let f = Fixture::new();
    f.set_sealer(
        "backend = \"software\"\nunseal = \"ceremony\"\npassphrase_file = \"passphrase\"\n",
    );
    let line = assert_refused(&f.run(&[]), &["sealer"]);
    assert!(line.contains("remove passphrase_file"), "{line}");
}
