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
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("coordinator did not exit on bad config");
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

    std::fs::write(&layout.coordinator.config, &cfg).unwrap();
    std::fs::remove_file(&layout.coordinator.admin_token_file).unwrap();
    let (code, err) = run(&layout.coordinator.config);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("auth.admin_token_file"), "{err}");
}
