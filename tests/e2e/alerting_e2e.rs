//! An alert fires in toolwatch and reaches the real Alertmanager (Debian's 0.25) on loopback;
//! when the condition clears, Alertmanager sees the alert end. Also the rules/alerts API, the
//! `ALERTS` series, a webhook receiver in Alertmanager's payload format, and reloads (a bad
//! one keeps the old rules). Needs /usr/bin/prometheus-alertmanager (scripts/test-deps.sh).


use crate::common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn get_json(addr: &str, path: &str) -> Value {
    let (code, body) = http(addr, "GET", path, &[], &[]).unwrap();
    assert_eq!(code, 200, "{addr}{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A webhook receiver that keeps every body it gets.
fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s);
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice(&body) {
                got2.lock().unwrap().push(v);
            }
            let _ = r.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (addr, got)
}

#[test]
fn alert_reaches_alertmanager_and_resolves() {
    if !have_binary(ALERTMANAGER) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let am_addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.path().join("am.yml"),
        "route:\n  receiver: 'null'\n  group_wait: 0s\nreceivers:\n  - name: 'null'\n",
    )
    .unwrap();
    let _am = KillOnDrop(
        Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", dir.path().join("am.yml").display()))
            .arg(format!("--storage.path={}", dir.path().join("am").display()))
            .arg(format!("--web.listen-address={am_addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("am.log")).unwrap())
            .spawn()
            .expect("starting alertmanager"),
    );
    wait_for("alertmanager", Duration::from_secs(30), || {
        matches!(http(&am_addr, "GET", "/-/ready", &[], &[]), Ok((200, _)))
    });
    let (hook_addr, hooks) = webhook();

    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        r#"groups:
  - name: mcp
    interval: 1s
    rules:
      - alert: ToolErrorRatioHigh
        expr: tool_error_ratio > 0.05
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.tool }} fails {{ $value | humanizePercentage }} of calls"
"#,
    )
    .unwrap();
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  evaluation_interval: 1s\n  external_labels:\n    cluster: test\n\
             rule_files: ['rules.yml']\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am_addr}']\n  webhooks:\n    - url: http://{hook_addr}/hook\n"
        ),
    )
    .unwrap();
    let tw = Server::start(&dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    let series = |v: f64| vec![(vec![("__name__", "tool_error_ratio"), ("tool", "search")], vec![(now_ms(), v)])];
    assert_eq!(remote_write(&tw.addr, &series(0.2)).unwrap().0, 204);

    // Fires in toolwatch, and Alertmanager has it with our labels, annotations and external labels.
    wait_for("the alert in alertmanager", Duration::from_secs(30), || {
        let v = get_json(&am_addr, "/api/v2/alerts");
        v.as_array().unwrap().iter().any(|a| a["labels"]["alertname"] == "ToolErrorRatioHigh")
    });
    let am = get_json(&am_addr, "/api/v2/alerts");
    let a = &am[0];
    assert_eq!(a["labels"]["tool"], "search");
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["labels"]["cluster"], "test", "external labels are added");
    assert_eq!(a["annotations"]["summary"], "search fails 20% of calls");
    assert!(a["generatorURL"].as_str().unwrap().contains("/graph?g0.expr="));
    let v = get_json(&tw.addr, "/api/v1/alerts");
    assert_eq!(v["data"]["alerts"][0]["state"], "firing", "{v}");
    let v = get_json(&tw.addr, "/api/v1/rules?type=alert");
    let rule = &v["data"]["groups"][0]["rules"][0];
    assert_eq!(rule["health"], "ok", "{v}");
    assert_eq!(rule["state"], "firing");
    assert_eq!(v["data"]["groups"][0]["interval"], 1.0);
    let v = get_json(&tw.addr, "/api/v1/rules?type=record");
    assert!(v["data"]["groups"][0]["rules"].as_array().unwrap().is_empty());
    // ALERTS is written from the evaluation after the first (the one that restores `for` state).
    wait_for("the ALERTS series", Duration::from_secs(10), || {
        let v = get_json(&tw.addr, "/api/v1/query?query=ALERTS");
        v["data"]["result"][0]["metric"]["alertstate"] == "firing"
    });
    wait_for("the webhook", Duration::from_secs(10), || {
        hooks.lock().unwrap().iter().any(|h| h["status"] == "firing" && h["alerts"][0]["labels"]["tool"] == "search")
    });

    // The condition clears: toolwatch resolves the alert and Alertmanager sees it end.
    assert_eq!(remote_write(&tw.addr, &series(0.0)).unwrap().0, 204);
    wait_for("the alert to end in alertmanager", Duration::from_secs(30), || {
        let v = get_json(&am_addr, "/api/v2/alerts");
        !v.as_array().unwrap().iter().any(|a| a["labels"]["alertname"] == "ToolErrorRatioHigh")
    });
    let v = get_json(&tw.addr, "/api/v1/alerts");
    assert!(v["data"]["alerts"].as_array().unwrap().is_empty(), "{v}");
    wait_for("the resolved webhook", Duration::from_secs(10), || {
        hooks.lock().unwrap().iter().any(|h| h["status"] == "resolved")
    });

    // A broken rule file does not replace the running rules; a good one does.
    std::fs::write(&rules, "groups:\n  - name: mcp\n    rules:\n      - alert: X\n        expr: sum(\n").unwrap();
    let (code, body) = http(&tw.addr, "POST", "/-/reload", &[], &[]).unwrap();
    assert_eq!(code, 500);
    assert!(String::from_utf8_lossy(&body).contains("rules.yml:4"), "{}", String::from_utf8_lossy(&body));
    let v = get_json(&tw.addr, "/api/v1/rules");
    assert_eq!(v["data"]["groups"][0]["rules"][0]["name"], "ToolErrorRatioHigh");
    std::fs::write(&rules, "groups:\n  - name: mcp\n    interval: 1s\n    rules:\n      - record: tool:ratio:max\n        expr: max(tool_error_ratio)\n").unwrap();
    let (code, _) = http(&tw.addr, "POST", "/-/reload", &[], &[]).unwrap();
    assert_eq!(code, 200);
    wait_for("the recording rule's output", Duration::from_secs(10), || {
        let v = get_json(&tw.addr, "/api/v1/query?query=tool:ratio:max");
        !v["data"]["result"].as_array().unwrap().is_empty()
    });
    // SIGHUP reloads too.
    std::fs::write(
        &rules,
        "groups:\n  - name: after-hup\n    interval: 1s\n    rules:\n      - record: hup:ok\n        expr: vector(1)\n",
    )
    .unwrap();
    tw.signal(libc::SIGHUP);
    wait_for("the SIGHUP reload", Duration::from_secs(10), || {
        get_json(&tw.addr, "/api/v1/rules")["data"]["groups"][0]["name"] == "after-hup"
    });
    // What was sent and evaluated is counted.
    let sent = tw.metric_with("toolwatch_notifications_sent_total", &am_addr).unwrap_or(0.0);
    assert!(sent >= 2.0, "firing and resolved sends to alertmanager counted, got {sent}");
    wait_for("the new group's first evaluation to be counted", Duration::from_secs(10), || {
        tw.metric_with("toolwatch_rule_evaluations_total", "after-hup").unwrap_or(0.0) >= 1.0
    });
}

#[test]
fn rules_check_reports_like_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yml");
    std::fs::write(&good, "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: sum(up)\n").unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(up)\n").unwrap();
    let run = |f: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_toolwatch")).args(["rules", "check"]).arg(f).output().unwrap()
    };
    let out = run(&good);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 1 rules found"));
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml:4: group \"g\", rule 1 (\"A\"): could not parse expression"), "{err}");
    // promtool gives the same verdicts on the same files.
    if std::path::Path::new("/usr/bin/promtool").exists() {
        for (f, ok) in [(&good, true), (&bad, false)] {
            let p = Command::new("/usr/bin/promtool").args(["check", "rules"]).arg(f).output().unwrap();
            assert_eq!(p.status.success(), ok, "promtool on {}", f.display());
        }
    }
}

/// The shipped MCP rules load in toolwatch, and their unit tests pass in Debian's promtool.
#[test]
fn shipped_rules_check_and_pass_their_unit_tests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules");
    let out = Command::new(env!("CARGO_BIN_EXE_toolwatch"))
        .args(["rules", "check"])
        .arg(dir.join("mcp.rules.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 9 rules found"));
    if !have_binary("/usr/bin/promtool") {
        return;
    }
    let p = Command::new("/usr/bin/promtool")
        .args(["test", "rules", "mcp.rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(p.status.success(), "{}{}", String::from_utf8_lossy(&p.stdout), String::from_utf8_lossy(&p.stderr));
}

/// `toolwatch rules test` gives the same verdicts as Debian's promtool on the same files,
/// including one whose tests are meant to fail (and how many of them fail).
#[test]
fn rules_test_verdicts_match_promtool() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases = [
        (root.join("examples/rules/mcp.rules.test.yml"), true),
        (root.join("tests/data/rules/passing.test.yml"), true),
        (root.join("tests/data/rules/failing.test.yml"), false),
    ];
    let have_promtool = have_binary("/usr/bin/promtool");
    for (file, pass) in &cases {
        let ours = Command::new(env!("CARGO_BIN_EXE_toolwatch")).args(["rules", "test"]).arg(file).output().unwrap();
        let out = String::from_utf8_lossy(&ours.stdout).to_string();
        assert_eq!(ours.status.success(), *pass, "toolwatch on {}:\n{out}", file.display());
        if !pass {
            assert_eq!(out.matches("alertname: MCPToolErrorRatioHigh").count(), 2, "{out}");
            assert_eq!(out.matches("expr: ").count(), 1, "{out}");
        }
        if have_promtool {
            let theirs = Command::new("/usr/bin/promtool").args(["test", "rules"]).arg(file).output().unwrap();
            assert_eq!(theirs.status.success(), *pass, "promtool on {}", file.display());
        }
    }
}

/// A group whose evaluation takes longer than its interval skips the ticks it missed (counted in
/// `toolwatch_rule_group_iterations_missed_total`) instead of queueing late evaluations.
#[test]
fn slow_group_counts_missed_iterations() {
    let dir = tempfile::tempdir().unwrap();
    // ~7.2M subquery steps of a step-dependent expression: tens of milliseconds per evaluation,
    // against a 10ms interval.
    std::fs::write(
        dir.path().join("slow.yml"),
        "groups:\n  - name: slow\n    interval: 10ms\n    rules:\n      - record: slow:count\n        expr: count_over_time(vector(time())[2h:1ms])\n",
    )
    .unwrap();
    let cfg = dir.path().join("toolwatch.yml");
    std::fs::write(&cfg, "rule_files: ['slow.yml']\n").unwrap();
    let tw = Server::start(&dir.path().join("tw"), &["--config", cfg.to_str().unwrap()]);
    wait_for("missed iterations to be counted", Duration::from_secs(20), || {
        tw.metric_with("toolwatch_rule_group_iterations_missed_total", "slow").unwrap_or(0.0) >= 3.0
    });
    let v = get_json(&tw.addr, "/api/v1/rules");
    let g = &v["data"]["groups"][0];
    assert!(g["evaluationTime"].as_f64().unwrap() > 0.01, "{g}");
    assert_eq!(g["rules"][0]["health"], "ok");
}

/// Groups are evaluated at Prometheus' own per-group offset within the interval, so a rule file
/// moved from Prometheus to toolwatch keeps its timing: both evaluate the same group at the same
/// phase of the interval.
#[test]
fn group_timing_matches_prometheus() {
    let prometheus = "/usr/bin/prometheus";
    if !have_binary(prometheus) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("timing.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: timing\n    interval: 2s\n    rules:\n      - record: one\n        expr: vector(1)\n",
    )
    .unwrap();
    let cfg_text = format!("rule_files: ['{}']\n", rules.display());
    std::fs::write(dir.path().join("tw.yml"), &cfg_text).unwrap();
    std::fs::write(dir.path().join("prom.yml"), &cfg_text).unwrap();
    let tw = Server::start(&dir.path().join("tw"), &["--config", dir.path().join("tw.yml").to_str().unwrap()]);
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let _prom = spawn_prometheus(&dir.path().join("prom.yml"), dir.path(), &prom_addr);
    // The phase (ms within the 2s interval) of the evaluation timestamp each server gave its
    // last result. Not the rules API's `lastEvaluation`: that is when the evaluation actually
    // began, late by however long the timer and scheduler took (several ms on a busy machine,
    // in Prometheus as in toolwatch); the timestamp is what the schedule decides.
    let phase = |addr: &str| -> Option<i64> {
        let (code, body) = http(addr, "GET", "/api/v1/query?query=timestamp(one)", &[], &[]).ok()?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_slice(&body).ok()?;
        let secs: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
        let ms = (secs * 1000.0).round() as i64;
        (ms > 1_000_000_000_000).then_some(ms.rem_euclid(2000))
    };
    let mut got = (None, None);
    wait_for("both servers to evaluate the group", Duration::from_secs(30), || {
        got = (phase(&tw.addr), phase(&prom_addr));
        got.0.is_some() && got.1.is_some()
    });
    let (ours, theirs) = (got.0.unwrap(), got.1.unwrap());
    eprintln!("phase within the interval: toolwatch +{ours}ms, prometheus +{theirs}ms");
    assert_eq!(ours, theirs, "toolwatch evaluates at +{ours}ms, Prometheus at +{theirs}ms of each 2s");
}
