//! The `bistro` command line as a user meets it: help, bad input, config precedence,
//! signals, and the demo.

mod support;

use bistro_client::Client;
use std::process::Command;
use std::time::Duration;
use support::{spawn_bistro, spawn_waiter};

fn bistro(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bistro"))
        .args(args)
        .env_remove("BISTRO_CONFIG")
        .output()
        .expect("the bistro binary runs")
}

#[test]
fn help_is_available_everywhere() {
    for args in [
        &["--help"][..],
        &["waiter", "--help"],
        &["demo", "--help"],
        &["tour", "--help"],
        &["lab", "run", "--help"],
        &["balancer", "--help"],
        &["up", "--help"],
        &["admin", "--help"],
        &["admin", "drain", "--help"],
    ] {
        let out = bistro(args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn secrets_in_the_environment_never_show_in_help() {
    for command in ["balancer", "up", "admin"] {
        let out = Command::new(env!("CARGO_BIN_EXE_bistro"))
            .args([command, "--help"])
            .env("BISTRO_ADMIN_TOKEN", "admin-secret-value")
            .env("BISTRO_AFFINITY_KEY", "affinity-secret-value")
            .output()
            .expect("the bistro binary runs");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("BISTRO_ADMIN_TOKEN"), "{command}: {help}");
        assert!(!help.contains("secret-value"), "{command}: {help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_bistro"))
        .args(["waiter", "--help"])
        .env("BISTRO_PEER_SECRET", "peer-secret-value")
        .output()
        .expect("the bistro binary runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("BISTRO_PEER_SECRET"), "{help}");
    assert!(!help.contains("secret-value"), "{help}");
}

#[test]
fn bad_input_is_a_clear_message_and_a_nonzero_exit() {
    let cases: &[(&[&str], &str)] = &[
        (&["waiter", "--mode", "sideways"], "sideways"),
        (&["waiter", "--listen", "not-an-address"], "not-an-address"),
        (
            &["waiter", "--mode", "stateful", "--store", "sqlite://x.db"],
            "stateful mode keeps notes",
        ),
        (
            &["waiter", "--mode", "stateless", "--store", "memory"],
            "stateless mode needs a central store",
        ),
        (
            &["waiter", "--store", "mysql://db"],
            "unsupported store URL",
        ),
        (&["waiter", "--kitchen-seconds=-1"], "kitchen-seconds"),
        (
            &["waiter", "--mode", "replicated"],
            "replicated mode needs its group",
        ),
        (
            &[
                "waiter",
                "--mode",
                "replicated",
                "--peer",
                "w2=127.0.0.1:7002",
            ],
            "needs --peer-secret",
        ),
        (
            &["waiter", "--mode", "replicated", "--peer", "w2"],
            "a peer is ID=HOST:PORT",
        ),
        (
            &[
                "waiter",
                "--mode",
                "replicated",
                "--id",
                "w1",
                "--peer",
                "w1=127.0.0.1:7001",
            ],
            "names this waiter itself",
        ),
        (
            &["waiter", "--peer", "w2=127.0.0.1:7002"],
            "--peer is for --mode replicated",
        ),
        (
            &[
                "waiter",
                "--mode",
                "stateless",
                "--peer-secret",
                "a-long-enough-secret",
            ],
            "--peer-secret is for --mode replicated",
        ),
        (
            &["waiter", "--peer-secret", "short"],
            "at least 16 visible ASCII characters",
        ),
        (&["waiter", "--max-body-bytes", "0"], "max-body-bytes"),
        (
            &["--config", "/nonexistent/bistro.toml", "waiter"],
            "cannot read config file",
        ),
    ];
    for (args, needle) in cases {
        let out = bistro(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: stderr {err:?} should mention {needle:?}"
        );
    }
}

#[test]
fn config_file_env_and_flags_stack_in_that_order() {
    let dir = std::env::temp_dir().join(format!("bistro-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bistro.toml");
    std::fs::write(
        &file,
        "[waiter]\nid = \"from-file\"\nmax_body_bytes = 1234\n",
    )
    .unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[waiter]\nidd = \"typo\"\n").unwrap();
    let out = bistro(&["--config", bad.to_str().unwrap(), "waiter"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("idd"),
        "unknown keys are named"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // File only: the id comes from the file.
    let w = spawn_bistro(
        "file",
        &[
            "--config",
            file.to_str().unwrap(),
            "waiter",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let info = rt
        .block_on(Client::new(w.addr).get("/v1/waiter"))
        .unwrap()
        .value();
    assert_eq!(info["id"], "from-file");
    drop(w);
    // A flag beats the file.
    let w = spawn_bistro(
        "flag",
        &[
            "--config",
            file.to_str().unwrap(),
            "waiter",
            "--id",
            "from-flag",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let info = rt
        .block_on(Client::new(w.addr).get("/v1/waiter"))
        .unwrap()
        .value();
    assert_eq!(info["id"], "from-flag");
    drop(w);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_stops_a_waiter_cleanly() {
    let mut w = spawn_waiter("wt", &[]);
    let status = w
        .terminate(Duration::from_secs(10))
        .expect("the waiter exits within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn the_tour_runs_the_scripted_diner_and_exits_zero() {
    let out = bistro(&["tour"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "dish-contains-allergen",
        "cooking",
        "ready",
        "paid",
        "not found",
    ] {
        assert!(
            stdout.contains(needle),
            "demo output lacks {needle:?}:\n{stdout}"
        );
    }
}
