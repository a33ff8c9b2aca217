//! Time in the API's forms: unix seconds or RFC 3339 timestamps, Prometheus durations, and the
//! proleptic Gregorian calendar behind them and behind PromQL's date functions.

use std::time::Duration;

/// Earliest and latest times the API accepts, far enough from i64's ends for arithmetic.
pub const MIN_TIME: i64 = i64::MIN / 4;
pub const MAX_TIME: i64 = i64::MAX / 4;

/// A time parameter: unix seconds (fractions allowed) or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        let secs = f.trunc();
        let ms = ((f - secs) * 1000.0).round();
        return Ok(((secs * 1000.0 + ms) as i64).clamp(MIN_TIME, MAX_TIME));
    }
    parse_rfc3339(s).ok_or_else(|| format!("cannot parse {s:?} to a valid timestamp"))
}

pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let neg_year = date.starts_with('-');
    let mut dp = date.trim_start_matches('-').splitn(3, '-');
    let y: i64 = dp.next()?.parse().ok()?;
    let y = if neg_year { -y } else { y };
    let mo: i64 = dp.next()?.parse().ok()?;
    let d: i64 = dp.next()?.parse().ok()?;
    let tz_pos = rest.find(['Z', 'z', '+', '-'])?;
    let (clock, tz) = rest.split_at(tz_pos);
    let mut cp = clock.splitn(3, ':');
    let h: i64 = cp.next()?.parse().ok()?;
    let mi: i64 = cp.next()?.parse().ok()?;
    let sec_str = cp.next()?;
    let (sec, frac) = match sec_str.split_once('.') {
        Some((a, b)) => (a.parse::<i64>().ok()?, format!("{b:0<3}")[..3].parse::<i64>().ok()?),
        None => (sec_str.parse::<i64>().ok()?, 0),
    };
    let offset_s = match tz {
        "Z" | "z" => 0,
        _ => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let (oh, om) = tz[1..].split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = (days as i128) * 86_400 + (h * 3600 + mi * 60 + sec - offset_s) as i128;
    let ms = secs * 1000 + frac as i128;
    Some(ms.clamp(MIN_TIME as i128, MAX_TIME as i128) as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration parameter: seconds (fractions allowed) or a Prometheus duration (`1m30s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() || f * 1e9 > i64::MAX as f64 || f < 0.0 {
            return Err(format!("cannot parse {s:?} to a valid duration. It overflows int64"));
        }
        return Ok(Duration::from_secs_f64(f));
    }
    parse_duration_ms(s)
        .map(|ms| Duration::from_millis(ms as u64))
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", sod / 3600, (sod / 60) % 60, sod % 60, ms.rem_euclid(1000))
}

/// Parses a Prometheus duration (`5m`, `1h30m`, `10s`, `0`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if s == "0" {
        return Ok(0);
    }
    let mut total = 0i64;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("bad duration {s:?}"))?;
        if digits == 0 {
            return Err(format!("bad duration {s:?}"));
        }
        let n: i64 = rest[..digits].parse().map_err(|_| format!("bad duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            u => return Err(format!("bad duration unit {u:?} in {s:?}")),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} overflows"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}
