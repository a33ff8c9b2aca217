//! Prometheus rule files: parsing and validation with errors that name the file, line, group,
//! rule and, for PromQL, what the parser said.

use crate::error::{AlertingError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toolwatch_query::value::{valid_label_name, valid_metric_name};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<RawGroup>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    query_offset: Option<String>,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    alert: Option<String>,
    /// A string; YAML reads `expr: 1` as one too, as Prometheus' yaml.Node does.
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A validated rule group.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub file: PathBuf,
    pub name: String,
    /// `None` means the global evaluation interval.
    pub interval: Option<Duration>,
    pub query_offset: Duration,
    pub limit: usize,
    pub labels: BTreeMap<String, String>,
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone)]
pub enum RuleKind {
    Record,
    Alert { for_: Duration, keep_firing_for: Duration, annotations: BTreeMap<String, String> },
}

#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// The recorded metric name or the alert name.
    pub name: String,
    pub expr: String,
    pub kind: RuleKind,
    pub labels: BTreeMap<String, String>,
}

impl RuleSpec {
    pub fn is_alert(&self) -> bool {
        matches!(self.kind, RuleKind::Alert { .. })
    }
}

fn duration(s: &Option<String>, what: &str, ctx: &str) -> Result<Option<Duration>> {
    match s {
        None => Ok(None),
        Some(s) => toolwatch_query::http::parse_duration(s)
            .map(Some)
            .map_err(|e| AlertingError::Invalid(format!("{ctx}: invalid {what} {s:?}: {e}"))),
    }
}

/// The 1-based line of the first occurrence of `needle` in `text` at or after line `from`.
fn line_of(text: &str, needle: &str, from: usize) -> Option<usize> {
    text.lines().enumerate().skip(from.saturating_sub(1)).find(|(_, l)| l.contains(needle)).map(|(i, _)| i + 1)
}

/// Parses and validates one rule file's text. Every problem found is reported, each prefixed
/// with `file:line` and the group and rule it belongs to.
pub fn parse_rule_file(path: &Path, text: &str) -> Result<Vec<GroupSpec>> {
    let file = path.display().to_string();
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
        let at = e.location().map(|l| format!("{file}:{}:{}", l.line(), l.column())).unwrap_or_else(|| file.clone());
        let opts = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
        AlertingError::Invalid(format!("{at}: {}", e.render_with_options(opts)))
    })?;
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut seen_groups = Vec::new();
    for g in raw.groups {
        let gline = line_of(text, &format!("name: {}", g.name), 1).or_else(|| line_of(text, &g.name, 1)).unwrap_or(1);
        let gctx = format!("{file}:{gline}: group {:?}", g.name);
        if g.name.is_empty() {
            errors.push(format!("{gctx}: group name must not be empty"));
        }
        if seen_groups.contains(&g.name) {
            errors.push(format!("{gctx}: repeated group name"));
        }
        seen_groups.push(g.name.clone());
        let interval = duration(&g.interval, "interval", &gctx).unwrap_or_else(|e| {
            errors.push(e.to_string());
            None
        });
        if interval.is_some_and(|d| d.is_zero()) {
            errors.push(format!("{gctx}: interval must be positive"));
        }
        let query_offset = duration(&g.query_offset, "query_offset", &gctx).unwrap_or_else(|e| {
            errors.push(e.to_string());
            None
        });
        let mut rules = Vec::new();
        let mut line = gline;
        for (i, r) in g.rules.into_iter().enumerate() {
            let name = r.alert.clone().or(r.record.clone()).unwrap_or_default();
            let rline = line_of(text, &name, line).unwrap_or(line);
            line = rline;
            let rctx = format!("{file}:{rline}: group {:?}, rule {} ({name:?})", g.name, i + 1);
            let expr = r.expr.clone();
            match (&r.record, &r.alert) {
                (Some(_), Some(_)) => errors.push(format!("{rctx}: only one of 'record' and 'alert' must be set")),
                (None, None) => errors.push(format!("{rctx}: one of 'record' or 'alert' must be set")),
                _ => {}
            }
            if expr.trim().is_empty() {
                errors.push(format!("{rctx}: field 'expr' must be set in rule"));
            } else if let Err(e) = toolwatch_query::parse(&expr) {
                errors.push(format!("{rctx}: could not parse expression: {e}"));
            }
            for k in r.labels.keys() {
                if !valid_label_name(k) {
                    errors.push(format!("{rctx}: invalid label name: {k}"));
                }
            }
            let kind = if let Some(alert) = &r.alert {
                if !valid_label_name(alert) && !valid_metric_name(alert) {
                    errors.push(format!("{rctx}: invalid alert name: {alert}"));
                }
                for k in r.annotations.keys() {
                    if !valid_label_name(k) {
                        errors.push(format!("{rctx}: invalid annotation name: {k}"));
                    }
                }
                let for_ = duration(&r.for_, "for", &rctx).unwrap_or_else(|e| {
                    errors.push(e.to_string());
                    None
                });
                let kf = duration(&r.keep_firing_for, "keep_firing_for", &rctx).unwrap_or_else(|e| {
                    errors.push(e.to_string());
                    None
                });
                RuleKind::Alert {
                    for_: for_.unwrap_or_default(),
                    keep_firing_for: kf.unwrap_or_default(),
                    annotations: r.annotations.clone(),
                }
            } else {
                if let Some(rec) = &r.record {
                    if !valid_metric_name(rec) {
                        errors.push(format!("{rctx}: invalid recording rule name: {rec}"));
                    }
                }
                if r.for_.is_some() {
                    errors.push(format!("{rctx}: invalid field 'for' in recording rule"));
                }
                if r.keep_firing_for.is_some() {
                    errors.push(format!("{rctx}: invalid field 'keep_firing_for' in recording rule"));
                }
                if !r.annotations.is_empty() {
                    errors.push(format!("{rctx}: invalid field 'annotations' in recording rule"));
                }
                RuleKind::Record
            };
            rules.push(RuleSpec { name, expr, kind, labels: r.labels });
        }
        groups.push(GroupSpec {
            file: path.to_path_buf(),
            name: g.name,
            interval,
            query_offset: query_offset.unwrap_or_default(),
            limit: g.limit,
            labels: g.labels,
            rules,
        });
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(AlertingError::Invalid(errors.join("\n")))
    }
}

/// Loads every file matching the globs (relative to `base`), in sorted order.
pub fn load_rule_files(globs: &[String], base: &Path) -> Result<Vec<GroupSpec>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for g in globs {
        let pattern = if Path::new(g).is_absolute() { g.clone() } else { base.join(g).display().to_string() };
        let mut matched = expand_glob(&pattern)?;
        files.append(&mut matched);
    }
    files.sort();
    files.dedup();
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => match parse_rule_file(&f, &text) {
                Ok(mut g) => groups.append(&mut g),
                Err(e) => errors.push(e.to_string()),
            },
            Err(e) => errors.push(format!("{}: {e}", f.display())),
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(AlertingError::Invalid(errors.join("\n")))
    }
}

/// Expands `*` and `?` in the last path component (what rule_files globs use in practice).
fn expand_glob(pattern: &str) -> Result<Vec<PathBuf>> {
    let p = Path::new(pattern);
    let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if !name.contains(['*', '?', '[']) {
        return Ok(if p.exists() { vec![p.to_path_buf()] } else { Vec::new() });
    }
    let dir = p.parent().unwrap_or(Path::new("."));
    let re = regex::Regex::new(&format!("^{}$", regex::escape(&name).replace(r"\*", ".*").replace(r"\?", ".")))
        .map_err(|e| AlertingError::Invalid(format!("bad glob {pattern:?}: {e}")))?;
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if re.is_match(&e.file_name().to_string_lossy()) {
                out.push(e.path());
            }
        }
    }
    Ok(out)
}
