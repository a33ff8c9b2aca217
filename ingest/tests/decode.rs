//! Decoder round trips: requests encoded with prost (as a real sender would) decode to the
//! same labels, samples, metadata and counts, for both protocol versions.

use proptest::prelude::*;
use prost::Message;
use toolwatch_ingest::decode::{decode_v1, decode_v2, DecodeLimits};
use toolwatch_ingest::remote_write_proto::{self as pb, v2};

fn label_strategy() -> impl Strategy<Value = (String, String)> {
    ("[a-z_]{1,8}", "\\PC{0,12}")
}

fn series_strategy() -> impl Strategy<Value = (Vec<(String, String)>, Vec<(i64, u64)>)> {
    (
        proptest::collection::btree_map("[a-z_]{1,8}", "\\PC{1,12}", 1..6).prop_map(|m| m.into_iter().collect()),
        proptest::collection::vec((any::<i64>(), any::<u64>()), 0..5),
    )
}

proptest! {
    #[test]
    fn v1_round_trip(series in proptest::collection::vec(series_strategy(), 0..20), meta in proptest::collection::vec(label_strategy(), 0..3)) {
        let req = pb::WriteRequest {
            timeseries: series.iter().map(|(l, s)| pb::TimeSeries {
                labels: l.iter().map(|(n, v)| pb::Label { name: n.clone(), value: v.clone() }).collect(),
                samples: s.iter().map(|&(t, v)| pb::Sample { timestamp: t, value: f64::from_bits(v) }).collect(),
                ..Default::default()
            }).collect(),
            metadata: meta.iter().map(|(n, h)| pb::MetricMetadata { r#type: 1, metric_family_name: n.clone(), help: h.clone(), unit: String::new() }).collect(),
        };
        let buf = req.encode_to_vec();
        let d = decode_v1(&buf, &DecodeLimits::default()).unwrap();
        prop_assert_eq!(d.series.len(), series.len());
        for (span, (labels, samples)) in d.series.iter().zip(&series) {
            let got: Vec<(String, String)> = d.series_labels(span).iter().map(|l| (l.name.to_string(), l.value.to_string())).collect();
            prop_assert_eq!(&got, labels);
            // proto3 drops zero doubles on the wire, so +0.0 and -0.0 both arrive as +0.0.
            let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, if f64::from_bits(v) == 0.0 { 0 } else { v })).collect();
            let got: Vec<(i64, u64)> = d.series_samples(span).iter().map(|&(t, v)| (t, v.to_bits())).collect();
            prop_assert_eq!(got, want);
            prop_assert!(span.invalid.is_none());
        }
        prop_assert_eq!(d.metadata.len(), meta.len());
        for (m, (n, h)) in d.metadata.iter().zip(&meta) {
            prop_assert_eq!((m.metric, m.help, m.typ), (n.as_str(), h.as_str(), "counter"));
        }
    }

    #[test]
    fn v2_round_trip(series in proptest::collection::vec(series_strategy(), 0..20)) {
        let mut symbols = vec![String::new()];
        let mut sym = |s: &str| -> u32 {
            match symbols.iter().position(|x| x == s) {
                Some(i) => i as u32,
                None => { symbols.push(s.to_string()); (symbols.len() - 1) as u32 }
            }
        };
        let timeseries: Vec<v2::TimeSeries> = series.iter().map(|(l, s)| v2::TimeSeries {
            labels_refs: l.iter().flat_map(|(n, v)| [sym(n), sym(v)]).collect(),
            samples: s.iter().map(|&(t, v)| v2::Sample { timestamp: t, value: f64::from_bits(v), start_timestamp: 0 }).collect(),
            ..Default::default()
        }).collect();
        let buf = v2::Request { symbols, timeseries }.encode_to_vec();
        let d = decode_v2(&buf, &DecodeLimits::default()).unwrap();
        prop_assert_eq!(d.series.len(), series.len());
        for (span, (labels, _)) in d.series.iter().zip(&series) {
            let got: Vec<(String, String)> = d.series_labels(span).iter().map(|l| (l.name.to_string(), l.value.to_string())).collect();
            prop_assert_eq!(&got, labels);
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        toolwatch_ingest::decode::decode_any(&bytes);
    }
}

#[test]
fn invalid_series_are_marked_not_fatal() {
    let ts = |labels: &[(&str, &str)]| pb::TimeSeries {
        labels: labels.iter().map(|(n, v)| pb::Label { name: n.to_string(), value: v.to_string() }).collect(),
        samples: vec![pb::Sample { timestamp: 1, value: 1.0 }],
        ..Default::default()
    };
    let req = pb::WriteRequest {
        timeseries: vec![
            ts(&[("__name__", "ok"), ("a", "1")]),
            ts(&[("", "x"), ("__name__", "m")]),
            ts(&[("a", "1"), ("a", "2"), ("__name__", "m")]),
            ts(&[("__name__", ""), ("a", "1")]),
            ts(&[("b", "1"), ("__name__", "unsorted")]),
        ],
        metadata: vec![],
    };
    let buf = req.encode_to_vec();
    let d = decode_v1(&buf, &DecodeLimits::default()).unwrap();
    let why: Vec<Option<String>> = d.series.iter().map(|s| s.invalid.clone()).collect();
    assert_eq!(why[0], None);
    assert_eq!(why[1].as_deref(), Some("empty label name"));
    assert_eq!(why[2].as_deref(), Some("duplicate label name \"a\""));
    assert_eq!(why[3].as_deref(), Some("empty __name__"));
    assert_eq!(why[4], None);
    assert_eq!(d.series_labels(&d.series[4])[0].name, "__name__", "sorted");
    let limits = DecodeLimits { max_series_per_request: 2, ..Default::default() };
    assert!(decode_v1(&req.encode_to_vec(), &limits).unwrap_err().0.contains("ingest.max_series_per_request = 2"));
}

#[test]
fn v2_symbol_rules() {
    let req = v2::Request {
        symbols: vec!["".into(), "__name__".into(), "up".into()],
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples: vec![v2::Sample { value: 1.0, timestamp: 5, start_timestamp: 0 }],
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 9],
                samples: vec![v2::Sample { value: 1.0, timestamp: 5, start_timestamp: 0 }],
                ..Default::default()
            },
        ],
    };
    let buf = req.encode_to_vec();
    let d = decode_v2(&buf, &DecodeLimits::default()).unwrap();
    assert!(d.series[0].invalid.is_none());
    assert!(d.series[1].invalid.as_deref().unwrap().contains("symbol reference 9 out of range"));
    let bad = v2::Request { symbols: vec!["x".into()], timeseries: vec![] };
    assert!(decode_v2(&bad.encode_to_vec(), &DecodeLimits::default()).unwrap_err().0.contains("symbols[0]"));
}
