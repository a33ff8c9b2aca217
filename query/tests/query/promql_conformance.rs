//! Runs Prometheus' PromQL test scripts (`../shared/conformance/promql`, or the directory in
//! `TOOLWATCH_PROMQL_TESTDATA`) through the engine: every eval must pass, instant evals also as
//! range queries. `TOOLWATCH_PROMQL_MATCH=substr` runs only files whose name contains it.
//! A missing corpus is a failure, not a silent pass, unless `TOOLWATCH_SKIP_CONFORMANCE=1` asks
//! to skip (as `TOOLWATCH_SKIP_PROMETHEUS` does for the tests that need Prometheus).

use std::path::PathBuf;
use std::sync::Arc;
use toolwatch_query::promqltest::run_script;
use toolwatch_storage::{Db, DbOptions};

/// The corpus directory: `TOOLWATCH_PROMQL_TESTDATA`, else `../shared/conformance/promql` beside
/// the repository (this crate is `<repo>/query`, so `<repo>/../shared`), as CI checks it out.
fn testdata_dir() -> PathBuf {
    match std::env::var_os("TOOLWATCH_PROMQL_TESTDATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/promql"),
    }
}

/// Whether `TOOLWATCH_SKIP_CONFORMANCE` asks to skip the corpus (`1`, `true` or `yes`).
fn skip_requested() -> bool {
    std::env::var("TOOLWATCH_SKIP_CONFORMANCE")
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// The corpus, or why there is none: a failure that names how to point at it or skip it.
fn testdata() -> Result<PathBuf, String> {
    let dir = testdata_dir();
    if dir.is_dir() {
        return Ok(dir);
    }
    Err(format!(
        "no PromQL test corpus at {}: set TOOLWATCH_PROMQL_TESTDATA to the directory of Prometheus' \
         promqltest .test files (../shared/conformance/promql beside the repository by default), \
         or set TOOLWATCH_SKIP_CONFORMANCE=1 to skip this test",
        dir.display()
    ))
}

#[test]
fn promql_test_scripts_pass() {
    let dir = match testdata() {
        Ok(d) => d,
        Err(why) if skip_requested() => {
            eprintln!("skipping (TOOLWATCH_SKIP_CONFORMANCE set): {why}");
            return;
        }
        Err(why) => panic!("{why}"),
    };
    let filter = std::env::var("TOOLWATCH_PROMQL_MATCH").unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(&filter))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .test files in {}", dir.display());
    let mut dirs = Vec::new();
    let (mut passed, mut failed) = (0, Vec::new());
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let outcomes = run_script(&text, || {
            let d = tempfile::tempdir().unwrap();
            let db = Db::open(d.path(), DbOptions::default()).unwrap();
            dirs.push(d);
            Arc::new(db)
        })
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for o in outcomes {
            match o.failure {
                None => passed += 1,
                Some(why) => failed.push(format!(
                    "{}:{}: {}\n    {why}",
                    f.file_name().unwrap().to_string_lossy(),
                    o.line,
                    o.query
                )),
            }
        }
    }
    eprintln!("promqltest: {passed} passed, {} failed", failed.len());
    for f in &failed {
        eprintln!("{f}");
    }
    assert!(failed.is_empty(), "{} of {} evals failed", failed.len(), passed + failed.len());
}
