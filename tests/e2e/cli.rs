//! What a user installing the binary sees: `--version` in Prometheus' shape, the same facts in
//! `toolwatch_build_info` and `/api/v1/status/buildinfo`, and the completions and man page the
//! package installs.

use crate::common::{http, Server};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_toolwatch");

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "toolwatch {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// (version, branch, revision) from the first line of `--version`.
fn version_line(text: &str) -> (String, String, String) {
    let first = text.lines().next().unwrap();
    let rest = first.strip_prefix("toolwatch, version ").unwrap_or_else(|| panic!("{first}"));
    let (version, rest) = rest.split_once(" (branch: ").unwrap_or_else(|| panic!("{first}"));
    let (branch, rest) = rest.split_once(", revision: ").unwrap_or_else(|| panic!("{first}"));
    let revision = rest.strip_suffix(')').unwrap_or_else(|| panic!("{first}"));
    (version.to_string(), branch.to_string(), revision.to_string())
}

#[test]
fn version_build_info_completions_and_man_page() {
    let text = run(&["--version"]);
    assert_eq!(run(&["-V"]), text);
    let (version, branch, revision) = version_line(&text);
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert!(!branch.is_empty() && !revision.is_empty(), "{text}");
    // The commit checked out when it was built (build.rs runs again whenever HEAD moves);
    // `unknown` only outside a git checkout.
    let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok();
    match head.filter(|o| o.status.success()) {
        Some(o) => assert_eq!(revision, String::from_utf8_lossy(&o.stdout).trim(), "{text}"),
        None => assert_eq!(revision, "unknown", "{text}"),
    }
    for field in ["build user:", "build date:", "rust version:", "platform:"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(field)), "{field} missing: {text}");
    }
    assert!(text.contains("platform:         linux/"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let tw = Server::start(&dir.path().join("tw"), &[]);
    let (_, body) = http(&tw.addr, "GET", "/metrics", &[], &[]).unwrap();
    let metrics = String::from_utf8(body).unwrap();
    let line = metrics.lines().find(|l| l.starts_with("toolwatch_build_info{")).unwrap_or_else(|| panic!("{metrics}"));
    for label in [format!("version=\"{version}\""), format!("revision=\"{revision}\""), format!("branch=\"{branch}\"")] {
        assert!(line.contains(&label), "{label} not in {line}");
    }
    assert!(line.ends_with(" 1"), "{line}");
    let (code, body) = http(&tw.addr, "GET", "/api/v1/status/buildinfo", &[], &[]).unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((v["data"]["version"].as_str(), v["data"]["revision"].as_str()), (Some(&*version), Some(&*revision)));
    assert_eq!(v["data"]["branch"].as_str(), Some(&*branch));
    assert!(v["data"]["goVersion"].as_str().unwrap().starts_with("rustc "), "{v}");

    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F _toolwatch") && bash.contains("--data-dir"), "{bash}");
    assert!(run(&["completions", "zsh"]).starts_with("#compdef toolwatch"));
    assert!(run(&["completions", "fish"]).contains("complete -c toolwatch"));
    let man = run(&["man"]);
    assert!(man.contains(".TH toolwatch 1") && man.contains(&version) && man.contains("\\-\\-data\\-dir"), "{man}");
}
