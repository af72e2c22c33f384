//! contrib/rdv.service and the agent's user unit contrib/rdv-agent.service pass `systemd-analyze
//! verify` with their ExecStart pointing at the binary just built, keep their sandboxing, and
//! their command lines parse. Where systemd-analyze is not
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
        "PrivateMounts=yes",
        "After=network-online.target time-sync.target",
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

fn agent_unit_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/rdv-agent.service"))
        .expect("contrib/rdv-agent.service")
}

#[test]
fn the_agent_unit_keeps_its_sandbox_and_its_command_runs() {
    let unit = agent_unit_text();
    for line in [
        "ExecStart=%h/.local/bin/rdv agent --socket %t/rdv/agent.sock --state-dir %S/rdv/agent --tor-dir %S/rdv/arti",
        "RuntimeDirectory=rdv",
        "RuntimeDirectoryMode=0700",
        "StateDirectory=rdv",
        "StateDirectoryMode=0700",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "ReadWritePaths=%S/rdv %t/rdv",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "contrib/rdv-agent.service lacks {line:?}"
        );
    }
    // The command line parses and its directories work: --check with them under a temporary
    // home (and --direct, so that it needs no Tor).
    let home = tempfile::tempdir().unwrap();
    let runtime = home.path().join("run");
    let state = home.path().join("state");
    let out = Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(["agent", "--direct", "--check", "--socket"])
        .arg(runtime.join("rdv/agent.sock"))
        .arg("--state-dir")
        .arg(state.join("rdv/agent"))
        .arg("--tor-dir")
        .arg(state.join("rdv/arti"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_agent_unit() {
    let probe = Command::new("systemd-analyze").arg("--version").output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        eprintln!("NOT RUN: systemd-analyze is not installed here (apt-get install systemd); the unit file was not verified");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A user manager needs a runtime directory, even to verify.
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let verify = |unit: String| {
        let path = dir.path().join("rdv-agent.service");
        std::fs::write(&path, unit).unwrap();
        Command::new("systemd-analyze")
            .args(["--user", "verify"])
            .arg(&path)
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap()
    };
    let out = verify(agent_unit_text().replace("%h/.local/bin/rdv", env!("CARGO_BIN_EXE_rdv")));
    assert!(
        out.status.success(),
        "systemd-analyze --user verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify(agent_unit_text().replace("%h/.local/bin/rdv", "/nonexistent/rdv"));
    assert!(
        !out.status.success(),
        "systemd-analyze verify accepts anything"
    );
}
