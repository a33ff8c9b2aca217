//! Remote-write request bodies (after snappy) decoded into one flat, borrowed form, so the
//! handler validates and appends without a `String` per label. v1: `prometheus.WriteRequest`;
//! v2: `io.prometheus.write.v2.Request`. Field numbers follow prometheus/prompb.

use crate::wire::{packed_u32, Reader, WireError, WireResult};
use std::ops::Range;
use toolwatch_storage::LabelRef;

/// Per-request decoding limits (each named in the error when hit).
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    pub max_series_per_request: usize,
    pub max_labels_per_series: usize,
    pub max_label_name_bytes: usize,
    pub max_label_value_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_series_per_request: 100_000,
            max_labels_per_series: 64,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 16 * 1024,
        }
    }
}

/// One time series of the request: ranges into `Decoded::labels` and `Decoded::samples`.
#[derive(Debug, Clone, Default)]
pub struct SeriesSpan {
    pub labels: Range<usize>,
    pub samples: Range<usize>,
    pub histograms: usize,
    pub exemplars: usize,
    /// Why the series cannot be stored (its samples are counted as rejected).
    pub invalid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRef<'a> {
    pub metric: &'a str,
    pub typ: &'static str,
    pub help: &'a str,
    pub unit: &'a str,
}

#[derive(Debug, Default)]
pub struct Decoded<'a> {
    pub labels: Vec<LabelRef<'a>>,
    pub samples: Vec<(i64, f64)>,
    pub series: Vec<SeriesSpan>,
    pub metadata: Vec<MetadataRef<'a>>,
}

impl<'a> Decoded<'a> {
    pub fn series_labels(&self, s: &SeriesSpan) -> &[LabelRef<'a>] {
        &self.labels[s.labels.clone()]
    }

    pub fn series_samples(&self, s: &SeriesSpan) -> &[(i64, f64)] {
        &self.samples[s.samples.clone()]
    }
}

/// Prometheus' MetricType enum (same numbering in v1 and v2).
fn metric_type(v: u64) -> &'static str {
    match v {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

fn too_many_series(limits: &DecodeLimits) -> WireError {
    WireError(format!("request has more than ingest.max_series_per_request = {} series", limits.max_series_per_request))
}

/// `prometheus.WriteRequest`: timeseries = 1, metadata = 3.
pub fn decode_v1<'a>(buf: &'a [u8], limits: &DecodeLimits) -> WireResult<Decoded<'a>> {
    let mut d = Decoded::default();
    let mut r = Reader::new(buf);
    while let Some((num, v)) = r.field()? {
        match num {
            1 => {
                if d.series.len() >= limits.max_series_per_request {
                    return Err(too_many_series(limits));
                }
                let span = v1_series(v.bytes("timeseries")?, &mut d)?;
                d.series.push(span);
            }
            3 => d.metadata.push(v1_metadata(v.bytes("metadata")?)?),
            _ => {}
        }
    }
    for s in &mut d.series {
        s.invalid = check_labels(&mut d.labels[s.labels.clone()], limits);
    }
    Ok(d)
}

fn v1_series<'a>(buf: &'a [u8], d: &mut Decoded<'a>) -> WireResult<SeriesSpan> {
    let (l0, s0) = (d.labels.len(), d.samples.len());
    let mut span = SeriesSpan::default();
    let mut r = Reader::new(buf);
    while let Some((num, v)) = r.field()? {
        match num {
            1 => {
                let lb = v.bytes("label")?;
                if let Some(l) = label_fast(lb) {
                    d.labels.push(l);
                    continue;
                }
                let mut lr = Reader::new(lb);
                let (mut name, mut value) = ("", "");
                while let Some((n, lv)) = lr.field()? {
                    match n {
                        1 => name = lv.str("label name")?,
                        2 => value = lv.str("label value")?,
                        _ => {}
                    }
                }
                d.labels.push(LabelRef { name, value });
            }
            2 => d.samples.push(sample(v.bytes("sample")?)?.0),
            3 => span.exemplars += 1,
            4 => span.histograms += 1,
            _ => {}
        }
    }
    span.labels = l0..d.labels.len();
    span.samples = s0..d.samples.len();
    Ok(span)
}

/// The usual encoding of a v1 label, `0x0a len name 0x12 len value` with one-byte lengths,
/// decoded with one UTF-8 check for both strings: tags and one-byte lengths are ASCII, so the
/// whole slice is valid UTF-8 exactly when name and value are. None for anything else (the
/// generic path then decides).
#[inline]
fn label_fast(b: &[u8]) -> Option<LabelRef<'_>> {
    if b.len() < 4 || b[0] != 0x0a || b[1] >= 0x80 {
        return None;
    }
    let nl = b[1] as usize;
    let vt = 2 + nl;
    if b.len() < vt + 2 || b[vt] != 0x12 || b[vt + 1] >= 0x80 || b.len() != vt + 2 + b[vt + 1] as usize {
        return None;
    }
    let all = std::str::from_utf8(b).ok()?;
    Some(LabelRef { name: &all[2..vt], value: &all[vt + 2..] })
}

/// Sample (v1 and v2): value = 1 (double), timestamp = 2 (int64), v2's start_timestamp = 3.
#[inline]
fn sample(buf: &[u8]) -> WireResult<((i64, f64), i64)> {
    // Usual encoding: 0x09 + 8-byte double, 0x10 + varint timestamp, nothing else.
    if buf.len() >= 11 && buf[0] == 0x09 && buf[9] == 0x10 {
        let v = f64::from_bits(u64::from_le_bytes(buf[1..9].try_into().expect("8 bytes")));
        let mut r = Reader::new(&buf[10..]);
        let t = r.varint()? as i64;
        if r.at_end() {
            return Ok(((t, v), 0));
        }
    }
    let (mut t, mut v, mut start) = (0i64, 0f64, 0i64);
    let mut r = Reader::new(buf);
    while let Some((num, x)) = r.field()? {
        match num {
            1 => v = x.double("sample value")?,
            2 => t = x.varint("sample timestamp")? as i64,
            3 => start = x.varint("sample start_timestamp")? as i64,
            _ => {}
        }
    }
    Ok(((t, v), start))
}

fn v1_metadata(buf: &[u8]) -> WireResult<MetadataRef<'_>> {
    let mut m = MetadataRef { metric: "", typ: "unknown", help: "", unit: "" };
    let mut r = Reader::new(buf);
    while let Some((num, v)) = r.field()? {
        match num {
            1 => m.typ = metric_type(v.varint("metadata type")?),
            2 => m.metric = v.str("metric_family_name")?,
            4 => m.help = v.str("help")?,
            5 => m.unit = v.str("unit")?,
            _ => {}
        }
    }
    Ok(m)
}

/// `io.prometheus.write.v2.Request`: symbols = 4, timeseries = 5. A series' labels are pairs
/// of indexes into the symbols; `symbols[0]` must be the empty string.
pub fn decode_v2<'a>(buf: &'a [u8], limits: &DecodeLimits) -> WireResult<Decoded<'a>> {
    let mut symbols: Vec<&'a str> = Vec::new();
    let mut series_bufs: Vec<&'a [u8]> = Vec::new();
    let mut r = Reader::new(buf);
    while let Some((num, v)) = r.field()? {
        match num {
            4 => symbols.push(v.str("symbol")?),
            5 => {
                if series_bufs.len() >= limits.max_series_per_request {
                    return Err(too_many_series(limits));
                }
                series_bufs.push(v.bytes("timeseries")?);
            }
            _ => {}
        }
    }
    if symbols.first().is_some_and(|s| !s.is_empty()) {
        return Err(WireError(format!("symbols[0] must be the empty string, got {:?}", symbols[0])));
    }
    let mut d = Decoded::default();
    let mut refs: Vec<u32> = Vec::new();
    for sb in series_bufs {
        let (l0, s0) = (d.labels.len(), d.samples.len());
        let mut span = SeriesSpan::default();
        let (mut help_ref, mut unit_ref, mut typ) = (0u32, 0u32, None);
        refs.clear();
        let mut r = Reader::new(sb);
        while let Some((num, v)) = r.field()? {
            match num {
                1 => packed_u32(v, &mut refs, "labels_refs")?,
                2 => d.samples.push(sample(v.bytes("sample")?)?.0),
                3 => span.histograms += 1,
                4 => span.exemplars += 1,
                5 => {
                    let mut mr = Reader::new(v.bytes("metadata")?);
                    while let Some((n, mv)) = mr.field()? {
                        match n {
                            1 => typ = Some(metric_type(mv.varint("metadata type")?)),
                            3 => help_ref = mv.varint("help_ref")? as u32,
                            4 => unit_ref = mv.varint("unit_ref")? as u32,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let sym = |i: u32| symbols.get(i as usize).copied();
        if refs.len() % 2 == 1 {
            span.invalid = Some(format!("labels_refs has an odd length {}", refs.len()));
        } else if let Some(bad) = refs.iter().find(|&&i| i as usize >= symbols.len()) {
            span.invalid = Some(format!("symbol reference {bad} out of range (request has {} symbols)", symbols.len()));
        } else {
            for pair in refs.chunks_exact(2) {
                d.labels.push(LabelRef { name: sym(pair[0]).unwrap_or(""), value: sym(pair[1]).unwrap_or("") });
            }
        }
        span.labels = l0..d.labels.len();
        span.samples = s0..d.samples.len();
        if span.invalid.is_none() {
            span.invalid = check_labels(&mut d.labels[span.labels.clone()], limits);
        }
        if let (Some(typ), None) = (typ, &span.invalid) {
            let metric = d.labels[span.labels.clone()].iter().find(|l| l.name == "__name__").map(|l| l.value);
            if let (Some(metric), Some(help), Some(unit)) = (metric, sym(help_ref), sym(unit_ref)) {
                d.metadata.push(MetadataRef { metric, typ, help, unit });
            }
        }
        d.series.push(span);
    }
    Ok(d)
}

/// Sorts one series' labels in place and says why they are invalid, if they are.
fn check_labels(labels: &mut [LabelRef<'_>], limits: &DecodeLimits) -> Option<String> {
    if labels.len() > limits.max_labels_per_series {
        return Some(format!(
            "{} labels exceed ingest.max_labels_per_series = {}",
            labels.len(),
            limits.max_labels_per_series
        ));
    }
    if !labels.windows(2).all(|w| w[0].name < w[1].name) {
        labels.sort();
    }
    for (i, l) in labels.iter().enumerate() {
        if l.name.is_empty() {
            return Some("empty label name".into());
        }
        if i > 0 && labels[i - 1].name == l.name {
            return Some(format!("duplicate label name {:?}", l.name));
        }
        if l.name == "__name__" && l.value.is_empty() {
            return Some("empty __name__".into());
        }
        if l.name.len() > limits.max_label_name_bytes {
            return Some(format!(
                "label name of {} bytes exceeds ingest.max_label_name_bytes = {}",
                l.name.len(),
                limits.max_label_name_bytes
            ));
        }
        if l.value.len() > limits.max_label_value_bytes {
            return Some(format!(
                "value of label {:?} has {} bytes, over ingest.max_label_value_bytes = {}",
                l.name,
                l.value.len(),
                limits.max_label_value_bytes
            ));
        }
    }
    if labels.iter().all(|l| l.value.is_empty()) {
        return Some("no labels".into());
    }
    None
}

/// Used by the fuzz target and tests: decodes `buf` as either version, ignoring the result.
pub fn decode_any(buf: &[u8]) {
    let limits = DecodeLimits::default();
    let _ = decode_v1(buf, &limits);
    let _ = decode_v2(buf, &limits);
}
