//! The function library of rule templates (`humanize*`, `printf`, `query`, comparisons, ...)
//! and the Go formatting rules (`%g`, `%e`, durations, timestamps) they need to print exactly
//! what Prometheus prints.

use crate::template::{go_float, Root, TVal};
use std::fmt::Write as _;

fn arg_n(args: &[TVal], n: usize, f: &str) -> Result<(), String> {
    if args.len() != n {
        return Err(format!("wrong number of args for {f}: want {n} got {}", args.len()));
    }
    Ok(())
}

fn cmp_vals(a: &TVal, b: &TVal) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (TVal::Str(x), TVal::Str(y)) => Ok(x.cmp(y)),
        _ => {
            let (x, y) = (a.as_f64()?, b.as_f64()?);
            x.partial_cmp(&y).ok_or_else(|| "incomparable values".to_string())
        }
    }
}

pub(crate) fn call(f: &str, args: Vec<TVal>, root: &Root) -> Result<TVal, String> {
    let s = |i: usize| -> String { args.get(i).map(|v| v.render()).unwrap_or_default() };
    Ok(match f {
        "humanize" => {
            arg_n(&args, 1, f)?;
            TVal::Str(humanize(
                args[0].as_f64()?,
                1000.0,
                &["", "k", "M", "G", "T", "P", "E", "Z", "Y"],
                &["", "m", "u", "n", "p", "f", "a", "z", "y"],
            ))
        }
        "humanize1024" => {
            arg_n(&args, 1, f)?;
            TVal::Str(humanize(args[0].as_f64()?, 1024.0, &["", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"], &[""]))
        }
        "humanizePercentage" => {
            arg_n(&args, 1, f)?;
            TVal::Str(format!("{}%", go_g4(args[0].as_f64()? * 100.0)))
        }
        "humanizeDuration" => {
            arg_n(&args, 1, f)?;
            TVal::Str(humanize_duration(args[0].as_f64()?))
        }
        "humanizeTimestamp" => {
            arg_n(&args, 1, f)?;
            let v = args[0].as_f64()?;
            if v.is_nan() || v.is_infinite() {
                TVal::Str(go_g4(v))
            } else {
                TVal::Str(format_timestamp(v))
            }
        }
        "printf" => {
            if args.is_empty() {
                return Err("wrong number of args for printf".into());
            }
            TVal::Str(sprintf(&s(0), &args[1..]))
        }
        "title" => TVal::Str(title(&s(0))),
        "toUpper" => TVal::Str(s(0).to_uppercase()),
        "toLower" => TVal::Str(s(0).to_lowercase()),
        "stripPort" => {
            let v = s(0);
            TVal::Str(match v.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                    h.trim_start_matches('[').trim_end_matches(']').to_string()
                }
                _ => v,
            })
        }
        "match" => {
            arg_n(&args, 2, f)?;
            let re = regex::Regex::new(&s(0)).map_err(|e| e.to_string())?;
            TVal::Bool(re.is_match(&s(1)))
        }
        "reReplaceAll" => {
            arg_n(&args, 3, f)?;
            let re = regex::Regex::new(&s(0)).map_err(|e| e.to_string())?;
            TVal::Str(re.replace_all(&s(2), s(1).as_str()).into_owned())
        }
        "query" => {
            arg_n(&args, 1, f)?;
            let rows = root.q.query(&s(0))?;
            TVal::List(rows.into_iter().map(|(labels, value)| TVal::Sample { labels, value }).collect())
        }
        "first" => match args.into_iter().next() {
            Some(TVal::List(l)) => l.into_iter().next().ok_or("first() called on vector with no elements")?,
            _ => return Err("first() expects a query result".into()),
        },
        "label" => {
            arg_n(&args, 2, f)?;
            match &args[1] {
                TVal::Sample { labels, .. } => TVal::Str(labels.get(&s(0)).cloned().unwrap_or_default()),
                _ => return Err("label() expects a sample".into()),
            }
        }
        "value" => match args.first() {
            Some(TVal::Sample { value, .. }) => TVal::Num(*value),
            _ => return Err("value() expects a sample".into()),
        },
        "strvalue" => match args.first() {
            Some(TVal::Sample { labels, .. }) => TVal::Str(labels.get("__value__").cloned().unwrap_or_default()),
            _ => return Err("strvalue() expects a sample".into()),
        },
        "sortByLabel" => {
            arg_n(&args, 2, f)?;
            let key = s(0);
            match args.into_iter().nth(1) {
                Some(TVal::List(mut l)) => {
                    l.sort_by(|a, b| {
                        let g = |v: &TVal| match v {
                            TVal::Sample { labels, .. } => labels.get(&key).cloned().unwrap_or_default(),
                            _ => String::new(),
                        };
                        g(a).cmp(&g(b))
                    });
                    TVal::List(l)
                }
                _ => return Err("sortByLabel() expects a query result".into()),
            }
        }
        "len" => match args.first() {
            Some(TVal::List(l)) => TVal::Num(l.len() as f64),
            Some(TVal::Map(m)) => TVal::Num(m.len() as f64),
            Some(TVal::Str(st)) => TVal::Num(st.len() as f64),
            _ => return Err("len of unsupported value".into()),
        },
        "index" => {
            arg_n(&args, 2, f)?;
            match &args[0] {
                TVal::Map(m) => m.get(&s(1)).map(|v| TVal::Str(v.clone())).unwrap_or(TVal::Nil),
                TVal::List(l) => l.get(args[1].as_f64()? as usize).cloned().ok_or("index out of range")?,
                _ => return Err("can't index item".into()),
            }
        }
        "externalURL" => TVal::Str(root.data.external_url.to_string()),
        "pathPrefix" => TVal::Str(String::new()),
        "safeHtml" | "html" | "urlquery" | "js" => TVal::Str(s(0)),
        "parseDuration" => {
            arg_n(&args, 1, f)?;
            TVal::Num(toolwatch_query::http::parse_duration(&s(0))?.as_secs_f64())
        }
        "toTime" => TVal::Str(format_timestamp(args.first().map(|v| v.as_f64()).transpose()?.unwrap_or(0.0))),
        "eq" => {
            if args.len() < 2 {
                return Err("missing argument for comparison".into());
            }
            TVal::Bool(args[1..].iter().any(|b| cmp_vals(&args[0], b).is_ok_and(|o| o.is_eq())))
        }
        "ne" => {
            arg_n(&args, 2, f)?;
            TVal::Bool(!cmp_vals(&args[0], &args[1])?.is_eq())
        }
        "lt" | "le" | "gt" | "ge" => {
            arg_n(&args, 2, f)?;
            let o = cmp_vals(&args[0], &args[1])?;
            TVal::Bool(match f {
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        "and" => args.iter().find(|v| !v.truthy()).cloned().or_else(|| args.last().cloned()).unwrap_or(TVal::Nil),
        "or" => args.iter().find(|v| v.truthy()).cloned().or_else(|| args.last().cloned()).unwrap_or(TVal::Nil),
        "not" => TVal::Bool(!args.first().is_some_and(|v| v.truthy())),
        "print" => TVal::Str(args.iter().map(|a| a.render()).collect::<Vec<_>>().join("")),
        "println" => TVal::Str(format!("{}\n", args.iter().map(|a| a.render()).collect::<Vec<_>>().join(" "))),
        _ => return Err(format!("function {f:?} not defined")),
    })
}

/// Go's `%.4g`.
pub(crate) fn go_g4(v: f64) -> String {
    sprintf("%.4g", &[TVal::Num(v)])
}

fn humanize(v: f64, base: f64, big: &[&str], small: &[&str]) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return go_g4(v);
    }
    let mut v = v;
    if v.abs() >= 1.0 {
        let mut i = 0;
        while v.abs() >= base && i + 1 < big.len() {
            v /= base;
            i += 1;
        }
        return format!("{}{}", go_g4(v), big[i]);
    }
    let mut i = 0;
    while v.abs() < 1.0 && i + 1 < small.len() {
        v *= base;
        i += 1;
    }
    format!("{}{}", go_g4(v), small[i])
}

fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return go_g4(v);
    }
    if v == 0.0 {
        return "0s".into();
    }
    let neg = v < 0.0;
    let a = v.abs();
    let sign = if neg { "-" } else { "" };
    if a >= 1.0 {
        let secs = a as i64;
        let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let mut out = sign.to_string();
        if d != 0 {
            let _ = write!(out, "{d}d {h}h {m}m {s}s");
        } else if h != 0 {
            let _ = write!(out, "{h}h {m}m {s}s");
        } else if m != 0 {
            let _ = write!(out, "{m}m {s}s");
        } else {
            let _ = write!(out, "{}s", go_g4(a));
        }
        return out;
    }
    let mut v = a;
    for unit in ["s", "ms", "us", "ns", "ps", "fs", "as"] {
        if v >= 1.0 || unit == "as" {
            return format!("{sign}{}{unit}", go_g4(v));
        }
        v *= 1000.0;
    }
    unreachable!()
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

fn format_timestamp(secs: f64) -> String {
    let ms = (secs * 1000.0).round() as i64;
    let s = toolwatch_query::http::format_rfc3339(ms);
    // Go prints `2006-01-02 15:04:05.999999999 -0700 MST`.
    let (date, time) = s.trim_end_matches('Z').split_once('T').unwrap_or((&s, ""));
    let time = time.trim_end_matches(".000");
    let time = if time.contains('.') { time.trim_end_matches('0') } else { time };
    format!("{date} {time} +0000 UTC")
}

/// A subset of Go's fmt verbs: `%s %v %d %f %e %g %q %x %%` with flags, width and precision.
pub fn sprintf(fmt: &str, args: &[TVal]) -> String {
    let mut out = String::new();
    let chars: Vec<char> = fmt.chars().collect();
    let mut i = 0;
    let mut ai = 0;
    while i < chars.len() {
        if chars[i] != '%' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        i += 1;
        let mut flags = String::new();
        while i < chars.len() && "+-# 0".contains(chars[i]) {
            flags.push(chars[i]);
            i += 1;
        }
        let mut width = String::new();
        while i < chars.len() && chars[i].is_ascii_digit() {
            width.push(chars[i]);
            i += 1;
        }
        let mut prec: Option<usize> = None;
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            let mut p = String::new();
            while i < chars.len() && chars[i].is_ascii_digit() {
                p.push(chars[i]);
                i += 1;
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(&verb) = chars.get(i) else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += 1;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(ai) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        ai += 1;
        let body = match verb {
            'd' => match arg.as_f64() {
                Ok(v) if v.fract() == 0.0 => format!("{}", v as i64),
                _ => format!("%!d({})", arg.render()),
            },
            'f' | 'F' => match arg.as_f64() {
                Ok(v) => format!("{:.*}", prec.unwrap_or(6), v),
                Err(_) => format!("%!f({})", arg.render()),
            },
            'e' => match arg.as_f64() {
                Ok(v) => go_exp(v, prec.unwrap_or(6)),
                Err(_) => format!("%!e({})", arg.render()),
            },
            'g' => match arg.as_f64() {
                Ok(v) => go_g(v, prec),
                Err(_) => format!("%!g({})", arg.render()),
            },
            'q' => serde_json::to_string(&arg.render()).unwrap_or_default(),
            'x' => match arg {
                TVal::Num(v) if v.fract() == 0.0 => format!("{:x}", *v as i64),
                other => other.render().bytes().map(|b| format!("{b:02x}")).collect(),
            },
            _ => {
                let r = arg.render();
                match prec {
                    Some(p) if verb == 's' => r.chars().take(p).collect(),
                    _ => r,
                }
            }
        };
        let body = if flags.contains('+') && matches!(verb, 'd' | 'f' | 'e' | 'g') && !body.starts_with('-') {
            format!("+{body}")
        } else {
            body
        };
        let w: usize = width.parse().unwrap_or(0);
        if body.chars().count() < w {
            let pad = w - body.chars().count();
            if flags.contains('-') {
                out.push_str(&body);
                out.extend(std::iter::repeat_n(' ', pad));
            } else if flags.contains('0') && matches!(verb, 'd' | 'f' | 'e' | 'g') {
                let (sign, digits) = if body.starts_with(['-', '+']) { body.split_at(1) } else { ("", body.as_str()) };
                out.push_str(sign);
                out.extend(std::iter::repeat_n('0', pad));
                out.push_str(digits);
            } else {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(&body);
            }
        } else {
            out.push_str(&body);
        }
    }
    if ai < args.len() {
        let extra: Vec<String> = args[ai..].iter().map(|a| a.render()).collect();
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

fn go_exp(v: f64, prec: usize) -> String {
    let s = format!("{:.*e}", prec, v);
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, d) = if let Some(d) = e.strip_prefix('-') { ('-', d) } else { ('+', e) };
            format!("{m}e{sign}{d:0>2}")
        }
        None => s,
    }
}

/// Go's `%g` (shortest, or `prec` significant digits), exponent when it is < -4 or >= precision.
fn go_g(v: f64, prec: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    let p = match prec {
        Some(0) => 1,
        Some(p) => p,
        None => {
            // Shortest representation: Go uses exponent form when exp < -4 || exp >= 21.
            return go_float(v);
        }
    };
    let exp = v.abs().log10().floor() as i32;
    // Round to p significant digits first; rounding can bump the exponent.
    let e_str = format!("{:.*e}", p - 1, v);
    let (mant, e) = e_str.split_once('e').unwrap_or((&e_str, "0"));
    let exp_r: i32 = e.parse().unwrap_or(exp);
    if exp_r < -4 || exp_r >= p as i32 {
        let mant = if mant.contains('.') { mant.trim_end_matches('0').trim_end_matches('.') } else { mant };
        let sign = if exp_r < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp_r.abs());
    }
    let decimals = (p as i32 - 1 - exp_r).max(0) as usize;
    let s = format!("{:.*}", decimals, v);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}
