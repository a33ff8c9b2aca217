//! Runs Prometheus' PromQL test scripts (`../shared/conformance/promql`, or the directory in
//! `TOOLWATCH_PROMQL_TESTDATA`) through the engine: every eval must pass, instant evals also as
//! range queries. `TOOLWATCH_PROMQL_MATCH=substr` runs only files whose name contains it.

use std::path::PathBuf;
use std::sync::Arc;
use toolwatch_query::promqltest::run_script;
use toolwatch_storage::{Db, DbOptions};

fn testdata() -> Option<PathBuf> {
    let dir = match std::env::var_os("TOOLWATCH_PROMQL_TESTDATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/promql"),
    };
    dir.is_dir().then_some(dir)
}

#[test]
fn promql_test_scripts_pass() {
    let Some(dir) = testdata() else {
        eprintln!("skipping: no PromQL test data (set TOOLWATCH_PROMQL_TESTDATA)");
        return;
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
