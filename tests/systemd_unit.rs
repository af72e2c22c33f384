//! contrib/rdv.service passes `systemd-analyze verify` with its ExecStart pointing at the binary
//! just built, keeps its sandboxing, and its command line parses. Where systemd-analyze is not
//! installed the test says so and stops: .ci/run installs it, so CI always runs the check.

use std::path::Path;
use std::process::Command;

fn unit_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/rdv.service"))
        .expect("contrib/rdv.service")
}

#[test]
fn the_unit_keeps_its_sandbox_and_runs_the_config_file() {
    let unit = unit_text();
    for line in [
        "ExecStart=/usr/local/bin/rdv serve --config /etc/rdv/rdv.toml",
        "User=rdv",
        "StateDirectory=rdv",
        "StateDirectoryMode=0700",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "contrib/rdv.service lacks {line:?}"
        );
    }
    // The command the unit runs is one rdv accepts (with the example configuration).
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("rdv.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(["serve", "--config"])
        .arg(&example)
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let probe = Command::new("systemd-analyze").arg("--version").output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        eprintln!("NOT RUN: systemd-analyze is not installed here (apt-get install systemd); the unit file was not verified");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rdv.service");
    let unit = unit_text().replace("/usr/local/bin/rdv", env!("CARGO_BIN_EXE_rdv"));
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: a unit whose binary does not exist is refused.
    let broken = unit_text().replace("/usr/local/bin/rdv", "/nonexistent/rdv");
    std::fs::write(&path, broken).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "systemd-analyze verify accepts anything"
    );
}
