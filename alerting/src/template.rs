//! Alert label and annotation templates in Go `text/template` syntax, with Prometheus' data
//! (`$labels`, `$value`, `$externalLabels`, `$externalURL`, `.Labels`, `.Value`) and functions
//! (`humanize*`, `printf`, `title`, `toUpper`, `query`, `first`, `label`, `value`, ...).
//!
//! The functions live in `template_funcs.rs`.
//!
//! Written here because no maintained Rust crate implements Go's template language; rule files
//! written for Prometheus must render the same. Covered: text and `{{ }}` actions with `{{-`/`-}}`
//! trimming, pipelines, variables (`$x := ...`), `if`/`else if`/`else`, `range` (with `$i, $v :=`),
//! `with`, parenthesised pipelines, comparison and logic functions.

use crate::template_funcs::call;
use std::collections::BTreeMap;

/// A template value.
#[derive(Clone, Debug, PartialEq)]
pub enum TVal {
    Nil,
    Bool(bool),
    Num(f64),
    Str(String),
    Map(BTreeMap<String, String>),
    /// A query result sample.
    Sample {
        labels: BTreeMap<String, String>,
        value: f64,
    },
    List(Vec<TVal>),
}

impl TVal {
    pub(crate) fn truthy(&self) -> bool {
        match self {
            TVal::Nil => false,
            TVal::Bool(b) => *b,
            TVal::Num(n) => *n != 0.0,
            TVal::Str(s) => !s.is_empty(),
            TVal::Map(m) => !m.is_empty(),
            TVal::List(l) => !l.is_empty(),
            TVal::Sample { .. } => true,
        }
    }

    pub(crate) fn render(&self) -> String {
        match self {
            TVal::Nil => "<no value>".into(),
            TVal::Bool(b) => b.to_string(),
            TVal::Num(n) => go_float(*n),
            TVal::Str(s) => s.clone(),
            TVal::Map(m) => {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("map[{}]", parts.join(" "))
            }
            TVal::Sample { labels, value } => format!("{{{labels:?} {}}}", go_float(*value)),
            TVal::List(l) => format!("[{}]", l.iter().map(|v| v.render()).collect::<Vec<_>>().join(" ")),
        }
    }

    pub(crate) fn as_f64(&self) -> Result<f64, String> {
        match self {
            TVal::Num(n) => Ok(*n),
            TVal::Str(s) => s.trim().parse::<f64>().map_err(|_| format!("can't convert {s:?} to float")),
            TVal::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
            TVal::Sample { value, .. } => Ok(*value),
            other => Err(format!("can't convert {} to float", other.render())),
        }
    }
}

/// Go's `%v` of a float64: shortest representation, exponent for large/small magnitudes.
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        let s = format!("{v:e}");
        // Rust: 1.5e-7, Go: 1.5e-07.
        if let Some((m, e)) = s.split_once('e') {
            let (sign, digits) = if let Some(d) = e.strip_prefix('-') { ("-", d) } else { ("+", e) };
            return format!("{m}e{sign}{digits:0>2}");
        }
        return s;
    }
    format!("{v}")
}

/// Evaluates `query` for the template function of the same name.
pub trait QueryFn {
    fn query(&self, q: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>, String>;
}

/// The data a rule template sees.
pub struct TemplateData<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
    pub value: f64,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range { vars: Vec<String>, pipe: Pipeline, body: Vec<Node>, else_: Vec<Node> },
    With(Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Pipeline {
    decl: Option<String>,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Arg {
    Lit(TVal),
    Var(String, Vec<String>),
    Dot(Vec<String>),
    Ident(String),
    Sub(Box<Pipeline>),
}

/// Renders `tmpl` with rule data. Errors read like Go's (`template: <name>:...`).
pub fn render(name: &str, tmpl: &str, data: &TemplateData, q: &dyn QueryFn) -> Result<String, String> {
    let nodes = parse(tmpl).map_err(|e| format!("template: {name}:1: {e}"))?;
    let mut vars: Vec<(String, TVal)> = vec![
        ("$labels".into(), TVal::Map(data.labels.clone())),
        ("$externalLabels".into(), TVal::Map(data.external_labels.clone())),
        ("$externalURL".into(), TVal::Str(data.external_url.to_string())),
        ("$value".into(), TVal::Num(data.value)),
    ];
    let dot = TVal::Map(BTreeMap::new());
    let root = Root { data, q };
    let mut out = String::new();
    exec(&nodes, &dot, &mut vars, &root, &mut out).map_err(|e| format!("template: {name}:1: {e}"))?;
    Ok(out)
}

pub(crate) struct Root<'a> {
    pub(crate) data: &'a TemplateData<'a>,
    pub(crate) q: &'a dyn QueryFn,
}

// ---- lexing and parsing ----

fn parse(src: &str) -> Result<Vec<Node>, String> {
    let mut items: Vec<(bool, String)> = Vec::new(); // (is_action, text)
    let mut rest = src;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        let mut after = &rest[open + 2..];
        if after.starts_with('-') && after[1..].starts_with([' ', '\t', '\n', '\r']) {
            text = text.trim_end();
            after = &after[1..];
        }
        items.push((false, text.to_string()));
        let close = find_close(after).ok_or("unclosed action")?;
        let mut inner = &after[..close];
        let mut next = &after[close + 2..];
        if inner.ends_with('-') && inner[..inner.len() - 1].ends_with([' ', '\t', '\n', '\r']) {
            inner = &inner[..inner.len() - 1];
            next = next.trim_start();
        }
        items.push((true, inner.trim().to_string()));
        rest = next;
    }
    items.push((false, rest.to_string()));
    let mut pos = 0;
    let (nodes, end) = parse_list(&items, &mut pos)?;
    if let Some(e) = end {
        return Err(format!("unexpected {{{{{e}}}}}"));
    }
    Ok(nodes)
}

/// Finds the `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        match quote {
            Some(q) => {
                if b[i] == b'\\' && q == b'"' {
                    i += 1;
                } else if b[i] == q {
                    quote = None;
                }
            }
            None => {
                if b[i] == b'"' || b[i] == b'`' {
                    quote = Some(b[i]);
                } else if b[i] == b'}' && b.get(i + 1) == Some(&b'}') {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// Parses nodes until `end`, `else ...` or the input's end; returns the terminating keyword.
fn parse_list(items: &[(bool, String)], pos: &mut usize) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while *pos < items.len() {
        let (is_action, text) = &items[*pos];
        *pos += 1;
        if !is_action {
            if !text.is_empty() {
                nodes.push(Node::Text(text.clone()));
            }
            continue;
        }
        if text.starts_with("/*") {
            continue;
        }
        let word = text.split_whitespace().next().unwrap_or("");
        match word {
            "end" => return Ok((nodes, Some("end".into()))),
            "else" => return Ok((nodes, Some(text.clone()))),
            "if" => {
                let mut branches = Vec::new();
                let mut cond = parse_pipeline(text[2..].trim())?;
                loop {
                    let (body, end) = parse_list(items, pos)?;
                    branches.push((cond, body));
                    match end.as_deref() {
                        Some("end") => {
                            nodes.push(Node::If(branches, Vec::new()));
                            break;
                        }
                        Some(e) if e.starts_with("else") => {
                            let rest = e[4..].trim();
                            if let Some(c) = rest.strip_prefix("if ") {
                                cond = parse_pipeline(c.trim())?;
                                continue;
                            }
                            let (else_body, end2) = parse_list(items, pos)?;
                            if end2.as_deref() != Some("end") {
                                return Err("missing {{end}} after {{else}}".into());
                            }
                            nodes.push(Node::If(branches, else_body));
                            break;
                        }
                        _ => return Err("unexpected EOF in if".into()),
                    }
                }
            }
            "range" | "with" => {
                let rest = text[word.len()..].trim();
                let (vars, pipe_src) = match rest.split_once(":=") {
                    Some((v, p)) if v.trim().starts_with('$') => {
                        (v.split(',').map(|x| x.trim().to_string()).collect::<Vec<_>>(), p.trim())
                    }
                    _ => (Vec::new(), rest),
                };
                let pipe = parse_pipeline(pipe_src)?;
                let (body, end) = parse_list(items, pos)?;
                let else_ = match end.as_deref() {
                    Some("end") => Vec::new(),
                    Some(e) if e.trim() == "else" => {
                        let (b, end2) = parse_list(items, pos)?;
                        if end2.as_deref() != Some("end") {
                            return Err(format!("missing {{{{end}}}} in {word}"));
                        }
                        b
                    }
                    _ => return Err(format!("unexpected EOF in {word}")),
                };
                nodes.push(if word == "range" {
                    Node::Range { vars, pipe, body, else_ }
                } else {
                    Node::With(pipe, body, else_)
                });
            }
            _ => nodes.push(Node::Action(parse_pipeline(text)?)),
        }
    }
    Ok((nodes, None))
}

fn tokenize(s: &str) -> Result<Vec<String>, String> {
    let mut toks = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '`' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                if c == '"' && chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated quoted string".into());
            }
            i += 1;
            toks.push(chars[start..i].iter().collect());
        } else if c == '(' || c == ')' || c == '|' {
            toks.push(c.to_string());
            i += 1;
        } else if c == ':' && chars.get(i + 1) == Some(&'=') {
            toks.push(":=".into());
            i += 2;
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !"()|".contains(chars[i]) {
                if chars[i] == ':' && chars.get(i + 1) == Some(&'=') {
                    break;
                }
                i += 1;
            }
            toks.push(chars[start..i].iter().collect());
        }
    }
    Ok(toks)
}

fn parse_pipeline(s: &str) -> Result<Pipeline, String> {
    let toks = tokenize(s)?;
    let mut pos = 0;
    let p = parse_pipe_tokens(&toks, &mut pos)?;
    if pos != toks.len() {
        return Err(format!("unexpected {:?} in command", toks[pos]));
    }
    Ok(p)
}

fn parse_pipe_tokens(toks: &[String], pos: &mut usize) -> Result<Pipeline, String> {
    let mut decl = None;
    if toks.len() > *pos + 1 && toks[*pos].starts_with('$') && toks[*pos + 1] == ":=" {
        decl = Some(toks[*pos].clone());
        *pos += 2;
    }
    let mut cmds = vec![Vec::new()];
    while *pos < toks.len() {
        let t = &toks[*pos];
        if t == ")" {
            break;
        }
        *pos += 1;
        if t == "|" {
            cmds.push(Vec::new());
            continue;
        }
        let arg = if t == "(" {
            let sub = parse_pipe_tokens(toks, pos)?;
            if toks.get(*pos).map(String::as_str) != Some(")") {
                return Err("unclosed left paren".into());
            }
            *pos += 1;
            Arg::Sub(Box::new(sub))
        } else {
            parse_arg(t)?
        };
        cmds.last_mut().expect("one command").push(arg);
    }
    if cmds.iter().any(|c| c.is_empty()) {
        return Err("missing value for command".into());
    }
    Ok(Pipeline { decl, cmds })
}

fn parse_arg(t: &str) -> Result<Arg, String> {
    if let Some(s) = t.strip_prefix('"') {
        let unq: String = serde_json::from_str(&format!("\"{}", s)).map_err(|e| format!("bad string {t}: {e}"))?;
        return Ok(Arg::Lit(TVal::Str(unq)));
    }
    if t.starts_with('`') {
        return Ok(Arg::Lit(TVal::Str(t[1..t.len() - 1].to_string())));
    }
    if t == "true" || t == "false" {
        return Ok(Arg::Lit(TVal::Bool(t == "true")));
    }
    if t == "nil" {
        return Ok(Arg::Lit(TVal::Nil));
    }
    if t.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
        return t.parse::<f64>().map(|v| Arg::Lit(TVal::Num(v))).map_err(|_| format!("bad number syntax: {t:?}"));
    }
    if let Some(rest) = t.strip_prefix('$') {
        let mut parts = rest.split('.');
        let name = format!("${}", parts.next().unwrap_or(""));
        return Ok(Arg::Var(name, parts.map(str::to_string).collect()));
    }
    if t.starts_with('.') {
        return Ok(Arg::Dot(t.split('.').skip(1).filter(|p| !p.is_empty()).map(str::to_string).collect()));
    }
    Ok(Arg::Ident(t.to_string()))
}

// ---- execution ----

fn exec(
    nodes: &[Node],
    dot: &TVal,
    vars: &mut Vec<(String, TVal)>,
    root: &Root,
    out: &mut String,
) -> Result<(), String> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, dot, vars, root)?;
                if p.decl.is_none() {
                    out.push_str(&v.render());
                }
            }
            Node::If(branches, else_) => {
                let depth = vars.len();
                let mut done = false;
                for (cond, body) in branches {
                    if eval_pipeline(cond, dot, vars, root)?.truthy() {
                        exec(body, dot, vars, root, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    exec(else_, dot, vars, root, out)?;
                }
                vars.truncate(depth);
            }
            Node::With(p, body, else_) => {
                let depth = vars.len();
                let v = eval_pipeline(p, dot, vars, root)?;
                if v.truthy() {
                    exec(body, &v, vars, root, out)?;
                } else {
                    exec(else_, dot, vars, root, out)?;
                }
                vars.truncate(depth);
            }
            Node::Range { vars: names, pipe, body, else_ } => {
                let depth = vars.len();
                let v = eval_pipeline(pipe, dot, vars, root)?;
                let items: Vec<(TVal, TVal)> = match v {
                    TVal::List(l) => l.into_iter().enumerate().map(|(i, x)| (TVal::Num(i as f64), x)).collect(),
                    TVal::Map(m) => m.into_iter().map(|(k, v)| (TVal::Str(k), TVal::Str(v))).collect(),
                    TVal::Nil => Vec::new(),
                    other => return Err(format!("range can't iterate over {}", other.render())),
                };
                if items.is_empty() {
                    exec(else_, dot, vars, root, out)?;
                }
                for (k, item) in items {
                    match names.len() {
                        0 => {}
                        1 => vars.push((names[0].clone(), item.clone())),
                        _ => {
                            vars.push((names[0].clone(), k));
                            vars.push((names[1].clone(), item.clone()));
                        }
                    }
                    exec(body, &item, vars, root, out)?;
                    vars.truncate(depth);
                }
            }
        }
    }
    Ok(())
}

fn field(v: &TVal, path: &[String]) -> Result<TVal, String> {
    let mut cur = v.clone();
    for p in path {
        cur = match (&cur, p.as_str()) {
            (TVal::Map(m), k) => m.get(k).map(|s| TVal::Str(s.clone())).unwrap_or(TVal::Nil),
            (TVal::Sample { labels, .. }, "Labels") => TVal::Map(labels.clone()),
            (TVal::Sample { value, .. }, "Value") => TVal::Num(*value),
            (TVal::Nil, _) => TVal::Nil,
            (other, k) => return Err(format!("can't evaluate field {k} in {}", other.render())),
        };
    }
    Ok(cur)
}

fn eval_pipeline(p: &Pipeline, dot: &TVal, vars: &mut Vec<(String, TVal)>, root: &Root) -> Result<TVal, String> {
    let mut prev: Option<TVal> = None;
    for cmd in &p.cmds {
        prev = Some(eval_command(cmd, prev, dot, vars, root)?);
    }
    let v = prev.unwrap_or(TVal::Nil);
    if let Some(d) = &p.decl {
        vars.push((d.clone(), v.clone()));
    }
    Ok(v)
}

fn eval_arg(a: &Arg, dot: &TVal, vars: &mut Vec<(String, TVal)>, root: &Root) -> Result<TVal, String> {
    match a {
        Arg::Lit(v) => Ok(v.clone()),
        Arg::Var(name, path) => {
            let v = vars
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("undefined variable {name:?}"))?;
            field(&v, path)
        }
        Arg::Dot(path) => {
            if path.is_empty() {
                return Ok(dot.clone());
            }
            // At the top level `.` is the alert: `.Labels`, `.Value`, `.ExternalLabels`, `.ExternalURL`.
            match path[0].as_str() {
                "Labels" if !matches!(dot, TVal::Sample { .. }) => {
                    field(&TVal::Map(root.data.labels.clone()), &path[1..])
                }
                "Value" if !matches!(dot, TVal::Sample { .. }) => Ok(TVal::Num(root.data.value)),
                "ExternalLabels" => field(&TVal::Map(root.data.external_labels.clone()), &path[1..]),
                "ExternalURL" => Ok(TVal::Str(root.data.external_url.to_string())),
                _ => field(dot, path),
            }
        }
        Arg::Sub(p) => eval_pipeline(p, dot, vars, root),
        Arg::Ident(f) => call(f, Vec::new(), root),
    }
}

fn eval_command(
    cmd: &[Arg],
    piped: Option<TVal>,
    dot: &TVal,
    vars: &mut Vec<(String, TVal)>,
    root: &Root,
) -> Result<TVal, String> {
    match &cmd[0] {
        Arg::Ident(f) => {
            let mut args = Vec::with_capacity(cmd.len());
            for a in &cmd[1..] {
                args.push(eval_arg(a, dot, vars, root)?);
            }
            if let Some(p) = piped {
                args.push(p);
            }
            call(f, args, root)
        }
        other => {
            if cmd.len() > 1 || piped.is_some() {
                return Err("can't give argument to non-function".into());
            }
            eval_arg(other, dot, vars, root)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template_funcs::{go_g4, sprintf};

    struct NoQuery;
    impl QueryFn for NoQuery {
        fn query(&self, q: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
            Ok(vec![(BTreeMap::from([("q".to_string(), q.to_string())]), 42.0)])
        }
    }

    fn r(t: &str, value: f64) -> String {
        let labels = BTreeMap::from([
            ("tool".to_string(), "search".to_string()),
            ("instance".to_string(), "h:9100".to_string()),
        ]);
        let ext = BTreeMap::from([("cluster".to_string(), "eu".to_string())]);
        let data = TemplateData { labels: &labels, external_labels: &ext, external_url: "http://tw", value };
        render("t", t, &data, &NoQuery).unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn prometheus_style_templates() {
        assert_eq!(
            r("Tool {{ $labels.tool }} errors at {{ $value | humanizePercentage }}", 0.0712),
            "Tool search errors at 7.12%"
        );
        assert_eq!(r("{{ .Labels.tool }} = {{ .Value }}", 3.5), "search = 3.5");
        assert_eq!(r("{{ humanize $value }}", 1234567.0), "1.235M");
        assert_eq!(r("{{ humanize 0.00123 }}", 0.0), "1.23m");
        assert_eq!(r("{{ humanize1024 1048576 }}", 0.0), "1Mi");
        assert_eq!(r("{{ humanizeDuration $value }}", 3723.0), "1h 2m 3s");
        assert_eq!(r("{{ humanizeDuration $value }}", 0.25), "250ms");
        assert_eq!(r("{{ printf \"%.2f\" $value }}", 1.0 / 3.0), "0.33");
        assert_eq!(r("{{ printf \"%d calls on %s\" 3 $labels.tool }}", 0.0), "3 calls on search");
        assert_eq!(r("{{ $labels.tool | title | toUpper }}", 0.0), "SEARCH");
        assert_eq!(r("{{ if gt $value 0.5 }}high{{ else }}low{{ end }}", 0.7), "high");
        assert_eq!(r("{{ if gt $value 0.5 }}high{{ else if gt $value 0.1 }}mid{{ else }}low{{ end }}", 0.2), "mid");
        assert_eq!(r("{{- $x := 2 }} [{{ $x }}] {{- \" tight\" -}} ", 0.0), " [2] tight");
        assert_eq!(r("{{ $externalLabels.cluster }} {{ $externalURL }}", 0.0), "eu http://tw");
        assert_eq!(r("{{ $labels.instance | stripPort }}", 0.0), "h");
        assert_eq!(r("{{ range query \"up\" }}{{ .Labels.q }}={{ .Value }}{{ end }}", 0.0), "up=42");
        assert_eq!(r("{{ with query \"up\" }}{{ . | first | value }}{{ end }}", 0.0), "42");
        assert_eq!(r("{{ $labels.missing }}", 0.0), "<no value>");
        assert!(r("{{ nosuchfunc 1 }}", 0.0).starts_with("ERR template: t:1: function \"nosuchfunc\" not defined"));
        assert!(r("{{ if 1 }}x", 0.0).starts_with("ERR"));
    }

    #[test]
    fn printf_verbs() {
        assert_eq!(
            sprintf(
                "%5.1f|%-4s|%03d|%g|%e|%q",
                &[
                    TVal::Num(3.14159),
                    TVal::Str("a".into()),
                    TVal::Num(7.0),
                    TVal::Num(1e-7),
                    TVal::Num(12345.678),
                    TVal::Str("x".into())
                ]
            ),
            "  3.1|a   |007|1e-07|1.234568e+04|\"x\""
        );
        assert_eq!(go_g4(12345.0), "1.234e+04");
        assert_eq!(go_g4(7.12), "7.12");
    }
}
