//! The `capstan` binary as a user meets it: version, help on every subcommand, log formats, and
//! an honest failure for what is not built yet.

use std::process::{Command, Output};

fn capstan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .env_remove("CAPSTAN_LOG")
        .env_remove("CAPSTAN_LOG_FORMAT")
        .output()
        .expect("run capstan")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_names_the_package_version() {
    let out = capstan(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("capstan {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_subcommand_explains_its_flags_and_defaults() {
    let expectations: &[(&str, &[&str])] = &[
        (
            "node",
            &[
                "--pod-manifest-path",
                "/etc/kubernetes/manifests",
                "--container-runtime-endpoint",
                "--config",
                "--read-only-address",
                "127.0.0.1:10255",
                "--object-manifest-path",
                "--kubeconfig",
                "--hostname-override",
                "--node-labels",
                "--register-with-taints",
                "[default: unix:///run/capstan/capstan.sock]",
                "[default: /var/lib/capstan]",
            ],
        ),
        (
            "runtime",
            &[
                "--listen",
                "[default: unix:///run/capstan/capstan.sock]",
                "--state-dir",
                "--runtime-config",
            ],
        ),
        (
            "server",
            &[
                "--bind-address",
                "[default: 0.0.0.0]",
                "--secure-port",
                "[default: 6443]",
                "--pod-manifest-path",
                "--node-name",
                "--cluster-cidr",
            ],
        ),
        (
            "control-plane",
            &[
                "--data-dir",
                "[default: /var/lib/capstan/control-plane]",
                "--etcd-servers",
                "--token-auth-file",
                "--service-cluster-ip-range",
            ],
        ),
        ("cni", &["bridge", "host-local", "loopback", "vxlan"]),
        ("images", &["import", "ls"]),
    ];
    for (subcommand, needles) in expectations {
        let out = capstan(&[subcommand, "--help"]);
        assert!(out.status.success(), "{subcommand} --help failed");
        let help = stdout(&out);
        for needle in *needles {
            assert!(
                help.contains(needle),
                "`capstan {subcommand} --help` lacks {needle:?}:\n{help}"
            );
        }
        assert!(
            help.contains("--log-format"),
            "global flags missing from {subcommand}"
        );
    }
}

#[test]
fn server_refuses_the_flags_of_a_node_that_joins_elsewhere() {
    for (flag, value) in [
        ("--kubeconfig", "/nonexistent"),
        ("--bootstrap-kubeconfig", "/nonexistent"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = capstan(&["server", flag, value, "--data-dir", data.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "{flag}: not for capstan server, whose node joins its own control plane"
            )),
            "{}",
            stderr(&out)
        );
        assert!(!data.exists(), "a refused server made its data directory");
    }
}

#[test]
fn a_control_plane_with_a_bad_token_file_names_it_and_makes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "only-a-token\n").unwrap();
    for file in [dir.path().join("missing.csv"), tokens] {
        let out = capstan(&[
            "control-plane",
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            "0",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--token-auth-file",
            file.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&file.display().to_string()),
            "the error names the file: {}",
            stderr(&out)
        );
        assert!(
            !data_dir.exists(),
            "a failed start made {}",
            data_dir.display()
        );
    }
}

#[test]
fn bad_flags_are_rejected_with_the_flag_named() {
    let out = capstan(&["--log-format", "xml", "node"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--log-format"), "{}", stderr(&out));

    let out = capstan(&["--log-level", "capstan=loud", "node"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--log-level"), "{}", stderr(&out));

    let out = capstan(&["cni", "nosuchplugin"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nosuchplugin"), "{}", stderr(&out));
}

#[test]
fn json_logs_are_one_object_per_line() {
    // A start refused at once still logs its first line (nothing is started).
    let out = capstan(&[
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "server",
        "--kubeconfig",
        "/nonexistent",
    ]);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!lines.is_empty(), "no JSON log line in: {err}");
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(
            value["level"].is_string() && value["timestamp"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn an_invalid_kubelet_configuration_stops_the_node_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubelet.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimageGCHighThresholdPercent: 85\nimageGCLowThresholdPercent: 90\n",
    )
    .unwrap();
    let out = capstan(&["node", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("kubelet.yaml") && err.contains("imageGCLowThresholdPercent"),
        "{err}"
    );
    let out = capstan(&["node", "--register-with-taints", "key=value"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--register-with-taints") && stderr(&out).contains("Effect"),
        "{}",
        stderr(&out)
    );
    // A kubeconfig that cannot be read stops the node before the runtime opens its state.
    let state = dir.path().join("state");
    let missing = dir.path().join("missing.kubeconfig");
    let out = capstan(&[
        "node",
        "--kubeconfig",
        missing.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("missing.kubeconfig"),
        "{}",
        stderr(&out)
    );
    assert!(!state.exists(), "the runtime opened its state");
    let out = capstan(&["node", "--read-only-address", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--read-only-address"),
        "{}",
        stderr(&out)
    );
}
