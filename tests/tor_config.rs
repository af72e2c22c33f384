//! A broken arti configuration stops `rdv serve` (and the clients) before anything starts: a
//! clear error naming the file and the key, a non-zero exit, no TCP listener left running on its
//! own. No Tor network needed: the configuration is checked before Tor is started.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn serve_with(config: &Path, data: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--tor-config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit by itself, at once; a server that keeps running is the failure.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "rdv serve kept running with a broken Tor configuration:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_broken_tor_configuration_is_a_clear_error_and_the_server_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "syntax.toml",
            "[tor_network\nfallback_caches = []\n",
            vec!["syntax.toml"],
        ),
        (
            "section.toml",
            "[tor_netwrk]\nfallback_caches = []\n",
            vec!["section.toml", "tor_netwrk"],
        ),
        (
            "key.toml",
            "[storage]\ncache_dirr = \"/tmp/x\"\n",
            vec!["key.toml", "storage.cache_dirr"],
        ),
        (
            "type.toml",
            "[override_net_params]\nhsdir_interval = \"eight\"\n",
            vec!["type.toml"],
        ),
        // What rdv sets itself would be overridden without a word: refused, named.
        (
            "own.toml",
            "[storage]\nstate_dir = \"/tmp/x\"\n[vanguards]\nmode = \"full\"\n",
            vec![
                "own.toml",
                "storage.state_dir",
                "vanguards.mode",
                "--vanguards",
            ],
        ),
    ];
    for (name, text, wanted) in cases {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        let out = serve_with(&f, &dir.path().join(format!("data-{name}")));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: exits non-zero");
        assert!(
            !stdout.contains("listening on"),
            "{name}: no TCP listener was started:\n{stdout}"
        );
        assert!(stderr.contains("error: "), "{name}: {stderr}");
        for w in wanted {
            assert!(
                stderr.contains(w),
                "{name}: the error names {w:?}:\n{stderr}"
            );
        }
        assert!(
            !stderr.contains("for a private network pass --tor-config"),
            "{name}: no hint to pass what was passed:\n{stderr}"
        );
    }
    // A missing file, and the same checks on the client side.
    let missing = dir.path().join("missing.toml");
    let out = serve_with(&missing, &dir.path().join("data-missing"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    let bad = dir.path().join("section.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_rdv"))
        .args([
            "info",
            "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion:7625",
        ])
        .arg("--tor-config")
        .arg(&bad)
        .arg("--tor-dir")
        .arg(dir.path().join("client"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("tor_netwrk"), "{stderr}");
}
