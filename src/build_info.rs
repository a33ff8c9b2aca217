//! What this binary was built from (build.rs sets the facts), shown in Prometheus' shapes:
//! `toolwatch --version`, `/api/v1/status/buildinfo` and the `toolwatch_build_info` gauge.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use toolwatch_query::http::BuildInfo;

pub static BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    revision: env!("TOOLWATCH_REVISION"),
    branch: env!("TOOLWATCH_BRANCH"),
    build_user: env!("TOOLWATCH_BUILD_USER"),
    build_date: env!("TOOLWATCH_BUILD_DATE"),
    rust_version: env!("TOOLWATCH_RUST_VERSION"),
};

pub const PLATFORM: &str = env!("TOOLWATCH_PLATFORM");

/// `--version`, as `prometheus --version` prints it.
pub fn version_text() -> String {
    let b = &BUILD;
    format!(
        "toolwatch, version {} (branch: {}, revision: {})\n  build user:       {}\n  build date:       {}\n  rust version:     {}\n  platform:         {PLATFORM}\n",
        b.version, b.branch, b.revision, b.build_user, b.build_date, b.rust_version
    )
}

/// The build date as `YYYY-MM-DD` (the man page's date), empty when unknown.
pub fn build_day() -> String {
    let d = BUILD.build_date;
    match (d.get(0..4), d.get(4..6), d.get(6..8)) {
        (Some(y), Some(m), Some(day)) if d.as_bytes()[..8].iter().all(u8::is_ascii_digit) => format!("{y}-{m}-{day}"),
        _ => String::new(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    revision: String,
    branch: String,
    rustversion: String,
    platform: String,
}

/// `toolwatch_build_info{version, revision, branch, rustversion, platform} 1`, as Prometheus'
/// `prometheus_build_info`: dashboards join on it to show which version runs where.
pub fn register(registry: &mut Registry) {
    let family = Family::<BuildLabels, Gauge>::default();
    let b = &BUILD;
    family
        .get_or_create(&BuildLabels {
            version: b.version.into(),
            revision: b.revision.into(),
            branch: b.branch.into(),
            rustversion: b.rust_version.into(),
            platform: PLATFORM.into(),
        })
        .set(1);
    registry.register("toolwatch_build_info", "A metric with a constant 1 labelled by what toolwatch was built from", family);
}
