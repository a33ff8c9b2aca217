//! The real client: Debian's Prometheus scrapes itself on loopback and remote-writes to
//! toolwatch. toolwatch must end up with the `prometheus_*` series, and for a chosen counter the
//! very values Prometheus stored itself at the same timestamps.
//! Needs /usr/bin/prometheus (installed by scripts/test-deps.sh, part of the README test command).


use crate::common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use toolwatch_storage::{Db, DbOptions, Matcher};

const PROMETHEUS: &str = "/usr/bin/prometheus";

#[test]
fn prometheus_remote_write_matches_its_own_storage() {
    if !have_binary(PROMETHEUS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut tw = Server::start(&dir.path().join("tw"), &[]);
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['{prom_addr}']\n\
             remote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n    metadata_config:\n      send_interval: 1s\n",
            tw.addr
        ),
    )
    .unwrap();
    let prom = spawn_prometheus(&cfg, dir.path(), &prom_addr);

    // Wait for a few scrapes to arrive at toolwatch.
    let start = Instant::now();
    loop {
        let accepted = accepted_samples(&tw.addr);
        if accepted > 3000.0 && start.elapsed() > Duration::from_secs(6) {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            drop(prom);
            panic!(
                "toolwatch got {accepted} samples; prometheus log:\n{}",
                std::fs::read_to_string(dir.path().join("prom.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Prometheus' own samples of one counter over the last minute.
    let metric = "prometheus_tsdb_head_samples_appended_total";
    let q = format!("/api/v1/query?query={metric}%7Btype%3D%22float%22%7D%5B1m%5D");
    let (code, body) = http(&prom_addr, "GET", &q, &[], &[]).unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let result = &v["data"]["result"];
    assert_eq!(result.as_array().map(|a| a.len()), Some(1), "{v}");
    let mut labels: Vec<(String, String)> = result[0]["metric"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    labels.sort();
    let theirs: BTreeMap<i64, f64> = result[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ((p[0].as_f64().unwrap() * 1000.0).round() as i64, p[1].as_str().unwrap().parse::<f64>().unwrap()))
        .collect();

    unsafe { libc::kill(prom.0.id() as i32, libc::SIGTERM) };
    let mut prom = prom;
    let _ = prom.0.wait();
    tw.signal(libc::SIGTERM);
    assert_eq!(tw.wait_exit(Duration::from_secs(10)), Some(0));

    let db = Db::open(&tw.data_dir, DbOptions::default()).unwrap();
    let q = db.querier(0, i64::MAX);
    let names = q.label_values("__name__", &[]);
    assert!(names.iter().filter(|n| n.starts_with("prometheus_")).count() > 50, "prometheus_* series: {names:?}");
    let matchers: Vec<Matcher> = labels.iter().map(|(k, v)| Matcher::eq(k, v)).collect();
    let ours = q.select(&matchers).unwrap();
    assert_eq!(ours.len(), 1, "series {labels:?}");
    assert_eq!(ours[0].labels.len(), labels.len(), "same label set");
    let ours: BTreeMap<i64, f64> = ours[0].samples().into_iter().collect();
    let newest_ours = *ours.keys().next_back().unwrap();
    let mut compared = 0;
    for (t, v) in &theirs {
        if *t <= newest_ours {
            assert_eq!(ours.get(t), Some(v), "{metric} at {t}");
            compared += 1;
        }
    }
    assert!(compared >= 3, "compared {compared} samples (theirs {theirs:?}, ours up to {newest_ours})");
}

fn accepted_samples(addr: &str) -> f64 {
    let Ok((_, body)) = http(addr, "GET", "/metrics", &[], &[]) else { return 0.0 };
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(r#"toolwatch_remote_write_samples_total{result="accepted"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
