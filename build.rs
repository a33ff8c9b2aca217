//! Build facts for `toolwatch --version`, `/api/v1/status/buildinfo` and the
//! `toolwatch_build_info` gauge, in Prometheus' shape: branch and revision from git, who built
//! it, when, with which compiler, for which platform.
//!
//! Outside a git checkout (a source tarball) the git facts are `unknown`. `SOURCE_DATE_EPOCH`,
//! when set, fixes the build date (reproducible packages).

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    let git = |args: &[&str]| run("git", args).unwrap_or_else(|| "unknown".into());
    let revision = git(&["rev-parse", "HEAD"]);
    let branch = git(&["rev-parse", "--abbrev-ref", "HEAD"]);
    let user = format!(
        "{}@{}",
        std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| run("id", &["-un"]).unwrap_or_default()),
        run("hostname", &[]).unwrap_or_default()
    );
    let date = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => run("date", &["-u", "-d", &format!("@{epoch}"), "+%Y%m%d-%H:%M:%S"]),
        Err(_) => run("date", &["-u", "+%Y%m%d-%H:%M:%S"]),
    }
    .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rust_version = run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    // Go's GOOS/GOARCH names, as Prometheus prints its platform.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default().as_str() {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        "x86" => "386".to_string(),
        a => a.to_string(),
    };
    for (k, v) in [
        ("TOOLWATCH_REVISION", revision),
        ("TOOLWATCH_BRANCH", branch),
        ("TOOLWATCH_BUILD_USER", user),
        ("TOOLWATCH_BUILD_DATE", date),
        ("TOOLWATCH_RUST_VERSION", rust_version),
        ("TOOLWATCH_PLATFORM", format!("{os}/{arch}")),
    ] {
        println!("cargo:rustc-env={k}={v}");
    }
    // Run again only when the checked-out commit or branch changes (not on every edit, which
    // would rebuild the binary for a new date each time a test file is touched).
    if let Some(dir) = run("git", &["rev-parse", "--git-dir"]) {
        // A path that does not exist would make cargo run this every time.
        let refs = run("git", &["symbolic-ref", "-q", "HEAD"]).map(|r| format!("{dir}/{r}"));
        for p in [Some(format!("{dir}/HEAD")), refs, Some(format!("{dir}/packed-refs"))].into_iter().flatten() {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
}
