//! Series catalog and value generators of the benchmark workload.

/// splitmix64: deterministic, tiny.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn round_to(v: f64, decimals: u32) -> f64 {
    let m = 10f64.powi(decimals as i32);
    (v * m).round() / m
}

#[derive(Clone, Debug)]
enum Kind {
    Counter {
        per_step: f64,
        decimals: u32,
    },
    Gauge {
        lo: f64,
        hi: f64,
        vol: f64,
        decimals: u32,
    },
    Const(f64),
    /// Cumulative bucket `idx` of histogram group `group`.
    Bucket {
        group: usize,
        idx: usize,
    },
    HistSum {
        group: usize,
    },
    HistCount {
        group: usize,
    },
}

const LES: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, f64::INFINITY];
const TOOLS: [&str; 8] =
    ["search", "fetch", "read_file", "write_file", "run_query", "list_series", "get_alerts", "label_values"];

struct Hist {
    median: f64,
    per_step: f64,
    counts: [u64; 12],
    sum: f64,
}

/// `n` series over as many instances as needed, with their evolving values.
pub struct Workload {
    pub labels: Vec<Vec<(String, String)>>,
    kinds: Vec<Kind>,
    state: Vec<f64>,
    hists: Vec<Hist>,
    rng: Rng,
    pub interval_ms: i64,
}

impl Workload {
    pub fn new(n: usize, interval_ms: i64) -> Workload {
        let mut w = Workload {
            labels: Vec::new(),
            kinds: Vec::new(),
            state: Vec::new(),
            hists: Vec::new(),
            rng: Rng::new(42),
            interval_ms,
        };
        let mut inst = 0;
        while w.labels.len() < n {
            w.instance(inst, interval_ms as f64 / 1000.0);
            inst += 1;
        }
        w.labels.truncate(n);
        w.kinds.truncate(n);
        w.state = vec![0.0; n];
        for i in 0..n {
            w.state[i] = match w.kinds[i] {
                Kind::Gauge { lo, hi, decimals, .. } => round_to((lo + hi) / 2.0, decimals),
                Kind::Counter { per_step, .. } => (per_step * 1000.0).round(),
                _ => 0.0,
            };
        }
        w
    }

    fn add(&mut self, inst: usize, name: &str, extra: &[(&str, &str)], kind: Kind) {
        let mut l: Vec<(String, String)> = vec![
            ("__name__".into(), name.into()),
            ("instance".into(), format!("mcp-{inst:04}:9100")),
            ("job".into(), ["mcp-gateway", "mcp-worker", "toolwatch"][inst % 3].into()),
        ];
        l.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
        l.sort();
        self.labels.push(l);
        self.kinds.push(kind);
    }

    fn histogram(&mut self, inst: usize, base: &str, extra: &[(&str, &str)], median: f64, per_step: f64) {
        let group = self.hists.len();
        self.hists.push(Hist { median, per_step, counts: [0; 12], sum: 0.0 });
        for (idx, le) in LES.iter().enumerate() {
            let le = if le.is_infinite() { "+Inf".to_string() } else { le.to_string() };
            let mut e = extra.to_vec();
            e.push(("le", &le));
            self.add(inst, &format!("{base}_bucket"), &e, Kind::Bucket { group, idx });
        }
        self.add(inst, &format!("{base}_sum"), extra, Kind::HistSum { group });
        self.add(inst, &format!("{base}_count"), extra, Kind::HistCount { group });
    }

    fn instance(&mut self, inst: usize, step_s: f64) {
        for (k, tool) in TOOLS.iter().enumerate() {
            let rate = 0.5 + k as f64 * 0.3;
            self.add(
                inst,
                "mcp_tool_calls_total",
                &[("status", "ok"), ("tool", tool)],
                Kind::Counter { per_step: rate * step_s, decimals: 0 },
            );
            self.add(
                inst,
                "mcp_tool_calls_total",
                &[("status", "error"), ("tool", tool)],
                Kind::Counter { per_step: rate * 0.02 * step_s, decimals: 0 },
            );
            self.histogram(
                inst,
                "mcp_tool_latency_seconds",
                &[("tool", tool)],
                0.02 * (1.0 + k as f64 * 2.5),
                rate * step_s,
            );
        }
        for h in ["/mcp", "/api/v1/write", "/api/v1/query"] {
            for (code, rate) in [("200", 4.0), ("400", 0.05), ("500", 0.01)] {
                self.add(
                    inst,
                    "http_requests_total",
                    &[("code", code), ("handler", h)],
                    Kind::Counter { per_step: rate * step_s, decimals: 0 },
                );
            }
            self.histogram(inst, "http_request_duration_seconds", &[("handler", h)], 0.01, 4.0 * step_s);
        }
        self.add(inst, "mcp_sessions_active", &[], Kind::Gauge { lo: 0.0, hi: 200.0, vol: 3.0, decimals: 0 });
        self.add(inst, "mcp_requests_in_flight", &[], Kind::Gauge { lo: 0.0, hi: 32.0, vol: 1.0, decimals: 0 });
        self.add(
            inst,
            "process_resident_memory_bytes",
            &[],
            Kind::Gauge { lo: 80e6, hi: 400e6, vol: 2e6, decimals: 0 },
        );
        self.add(inst, "process_open_fds", &[], Kind::Gauge { lo: 20.0, hi: 300.0, vol: 2.0, decimals: 0 });
        self.add(inst, "process_cpu_seconds_total", &[], Kind::Counter { per_step: 0.3 * step_s, decimals: 2 });
        self.add(inst, "process_start_time_seconds", &[], Kind::Const(1.7e9 + inst as f64 * 37.0));
        for mode in ["idle", "user", "system", "iowait"] {
            self.add(
                inst,
                "node_cpu_seconds_total",
                &[("mode", mode)],
                Kind::Counter { per_step: 0.25 * step_s, decimals: 2 },
            );
        }
        self.add(inst, "node_load1", &[], Kind::Gauge { lo: 0.0, hi: 4.0, vol: 0.2, decimals: 2 });
        self.add(
            inst,
            "node_memory_MemAvailable_bytes",
            &[],
            Kind::Gauge { lo: 2e9, hi: 20e9, vol: 50e6, decimals: 0 },
        );
        self.add(
            inst,
            "node_network_receive_bytes_total",
            &[("device", "eth0")],
            Kind::Counter { per_step: 250_000.0 * step_s, decimals: 0 },
        );
        self.add(
            inst,
            "go_gc_duration_seconds",
            &[("quantile", "0.5")],
            Kind::Gauge { lo: 0.00002, hi: 0.002, vol: 0.00005, decimals: 6 },
        );
        self.add(inst, "scrape_duration_seconds", &[], Kind::Gauge { lo: 0.002, hi: 0.05, vol: 0.002, decimals: 4 });
        self.add(inst, "up", &[], Kind::Const(1.0));
    }

    /// Advances every series by one interval; returns the values, indexed like `labels`.
    pub fn step(&mut self) -> &[f64] {
        for h in &mut self.hists {
            let n = (h.per_step * (0.5 + self.rng.f64())).round() as u64;
            for _ in 0..n {
                // Log-normal-ish observation around the median.
                let x = h.median * (2.0 * (self.rng.f64() - 0.5) * 2.0).exp();
                h.sum += x;
                for (i, le) in LES.iter().enumerate() {
                    if x <= *le {
                        h.counts[i] += 1;
                    }
                }
            }
        }
        for i in 0..self.kinds.len() {
            self.state[i] = match self.kinds[i] {
                Kind::Counter { per_step, decimals } => {
                    round_to(self.state[i] + per_step * (0.5 + self.rng.f64()), decimals)
                }
                Kind::Gauge { lo, hi, vol, decimals } => {
                    round_to((self.state[i] + vol * 2.0 * (self.rng.f64() - 0.5)).clamp(lo, hi), decimals)
                }
                Kind::Const(c) => c,
                Kind::Bucket { group, idx } => self.hists[group].counts[idx] as f64,
                Kind::HistSum { group } => round_to(self.hists[group].sum, 3),
                Kind::HistCount { group } => self.hists[group].counts[11] as f64,
            };
        }
        &self.state
    }
}
