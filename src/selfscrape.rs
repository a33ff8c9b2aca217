//! toolwatch scrapes itself: every `self_monitoring.interval` the text exposition of its own
//! registry (what `/metrics` serves) is parsed and appended into its own store under
//! `job="toolwatch"`, so agents can ask toolwatch about toolwatch with the same tools.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use toolwatch_storage::{Db, LabelRef};

/// One sample line of the exposition: metric name, labels, value.
#[derive(Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses sample lines of the Prometheus/OpenMetrics text format as prometheus-client writes
/// it (comments skipped, timestamps and exemplars ignored). Written here because the input is
/// our own well-formed output, and the one crate for it (prometheus-parse) is unmaintained.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            // name="value" pairs separated by commas, ended by '}'.
            let start = chars.peek()?.0;
            let mut end = start;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    end = i;
                    break;
                }
                if c == '}' {
                    rest = &r[i + 1..];
                    return finish(name, labels, rest);
                }
            }
            let lname = r[start..end].trim_start_matches(',').trim().to_string();
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((lname, value));
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((i, '}')) => {
                    rest = &r[i + 1..];
                    return finish(name, labels, rest);
                }
                _ => return None,
            }
            if matches!(chars.peek(), Some((_, '}'))) {
                let (i, _) = chars.next()?;
                rest = &r[i + 1..];
                return finish(name, labels, rest);
            }
        }
    }
    finish(name, labels, rest)
}

fn finish(name: String, labels: Vec<(String, String)>, rest: &str) -> Option<Sample> {
    let v = rest.split_whitespace().next()?;
    let value = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

/// `# TYPE` and `# HELP` lines as (metric, type, help), so toolwatch's own metrics are described
/// in `/api/v1/metadata` and `list_metrics` like remote-written ones.
pub fn parse_metadata(text: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for line in text.lines() {
        let (kind, rest) = match line.strip_prefix("# TYPE ") {
            Some(r) => ("type", r),
            None => match line.strip_prefix("# HELP ") {
                Some(r) => ("help", r),
                None => continue,
            },
        };
        let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
        let i = match out.iter().position(|m| m.0 == name) {
            Some(i) => i,
            None => {
                out.push((name.to_string(), String::new(), String::new()));
                out.len() - 1
            }
        };
        if kind == "type" {
            out[i].1 = value.to_string();
        } else {
            out[i].2 = value.replace("\\n", "\n").replace("\\\\", "\\");
        }
    }
    out
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Cumulative series start from zero when they appear. Without that zero a counter's first
/// increments would be invisible to rate() (Prometheus' created-timestamp zero injection does
/// the same).
fn is_cumulative(name: &str) -> bool {
    ["_total", "_count", "_sum", "_bucket"].iter().any(|s| name.ends_with(s))
}

/// One scrape as sorted label sets with their samples: each sample line at `t`, with `job` and
/// `instance` set, and new cumulative series (not in `seen`) starting with a zero at `zero_at`.
pub fn snapshot(
    samples: &[Sample],
    job: &str,
    instance: &str,
    t: i64,
    zero_at: i64,
    seen: &mut HashSet<String>,
) -> Vec<(Vec<(String, String)>, Vec<(i64, f64)>)> {
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let mut labels: Vec<(String, String)> = Vec::with_capacity(s.labels.len() + 3);
        labels.push(("__name__".into(), s.name.clone()));
        labels.extend(s.labels.iter().filter(|(n, v)| n != "job" && n != "instance" && !v.is_empty()).cloned());
        labels.push(("job".into(), job.to_string()));
        labels.push(("instance".into(), instance.to_string()));
        labels.sort();
        let key = format!("{}{:?}", s.name, s.labels);
        let mut points = Vec::with_capacity(2);
        if seen.insert(key) && is_cumulative(&s.name) && zero_at < t {
            points.push((zero_at, 0.0));
        }
        points.push((t, s.value));
        out.push((labels, points));
    }
    out
}

/// Appends one scrape at `t` into the store (see `snapshot`).
pub fn append_scrape(
    db: &Db,
    samples: &[Sample],
    job: &str,
    instance: &str,
    t: i64,
    zero_at: i64,
    seen: &mut HashSet<String>,
) {
    let Ok(mut app) = db.appender() else { return };
    for (labels, points) in snapshot(samples, job, instance, t, zero_at, seen) {
        let refs: Vec<LabelRef<'_>> = labels.iter().map(|(n, v)| LabelRef { name: n, value: v }).collect();
        for (ts, v) in points {
            if let Err(e) = app.append(&refs, ts, v) {
                tracing::debug!(error = %e, "self-monitoring sample not stored");
            }
        }
    }
    if let Err(e) = app.commit() {
        tracing::warn!(error = %e, "self-monitoring: storing toolwatch's own metrics failed");
    }
}

/// Scrapes `encode()` every `interval` into the store until the task is dropped; each metric's
/// type and help go to `describe`.
pub async fn run(
    encode: impl Fn() -> String + Send + 'static,
    describe: impl Fn(&str, &str, &str) + Send + 'static,
    db: Arc<OnceLock<Db>>,
    job: String,
    instance: String,
    interval: Duration,
) {
    let mut seen = HashSet::new();
    let mut last = now_ms();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first scrape comes one interval after start, as a Prometheus scrape would.
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(db) = db.get().cloned() else { continue };
        let text = encode();
        for (name, typ, help) in parse_metadata(&text) {
            describe(&name, &typ, &help);
        }
        let samples = parse_exposition(&text);
        let t = now_ms();
        let (job, instance) = (job.clone(), instance.clone());
        let zero_at = last + 1;
        seen = tokio::task::spawn_blocking(move || {
            append_scrape(&db, &samples, &job, &instance, t, zero_at, &mut seen);
            seen
        })
        .await
        .unwrap_or_default();
        last = t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_client_output() {
        let text = "# HELP x help\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"uo\\\\te\"} 3\nup 1\nh_bucket{le=\"+Inf\"} 2 1700000000\ng{e=\"\"} NaN\n# EOF\n";
        let s = parse_exposition(text);
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[0],
            Sample {
                name: "x_total".into(),
                labels: vec![("a".into(), "1".into()), ("b".into(), "q\"uo\\te".into())],
                value: 3.0
            }
        );
        assert_eq!(s[1], Sample { name: "up".into(), labels: vec![], value: 1.0 });
        assert_eq!(s[2].labels, vec![("le".to_string(), "+Inf".to_string())]);
        assert_eq!(s[2].value, 2.0);
        assert!(s[3].value.is_nan());
    }

    #[test]
    fn metadata_lines() {
        let m = parse_metadata("# HELP x_total Calls made\n# TYPE x_total counter\nx_total 1\n# TYPE up gauge\n");
        assert_eq!(
            m,
            vec![
                ("x_total".into(), "counter".into(), "Calls made".into()),
                ("up".into(), "gauge".into(), String::new())
            ]
        );
    }

    #[test]
    fn parses_the_real_registry() {
        let mut reg = prometheus_client::registry::Registry::default();
        let m = toolwatch_mcp::McpMetrics::register(&mut reg);
        m.observe(
            toolwatch_mcp::telemetry::OperationLabels {
                mcp_method_name: "tools/call".into(),
                gen_ai_tool_name: "query".into(),
                error_type: String::new(),
                mcp_protocol_version: "2025-11-25".into(),
                network_transport: "tcp".into(),
            },
            0.03,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        let s = parse_exposition(&text);
        let count = s.iter().find(|s| s.name == "mcp_server_operation_duration_seconds_count").unwrap();
        assert_eq!(count.value, 1.0);
        assert!(count.labels.contains(&("gen_ai_tool_name".into(), "query".into())));
        let calls = s.iter().find(|s| s.name == "toolwatch_mcp_tool_calls_total").unwrap();
        assert_eq!(calls.labels, vec![("tool".into(), "query".into()), ("status".into(), "ok".into())]);
        assert_eq!(s.iter().filter(|s| s.name.ends_with("_bucket")).count(), 15);
    }
}
