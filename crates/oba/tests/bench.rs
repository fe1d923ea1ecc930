//! `oba bench` against `oba up`: a short open-loop run at a low rate.

mod support;

use std::time::Duration;

use oba::bench::{BenchConfig, SeedSizes, run};
use support::TestSystem;

#[tokio::test]
async fn a_low_rate_run_reports_every_operation_without_errors() {
    let system = TestSystem::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("report.json");
    let config = BenchConfig {
        api: format!("{}/api", system.url),
        rate: 20.0,
        duration: Duration::from_secs(10),
        seed: SeedSizes {
            users: 4,
            follows: 2,
            articles: 8,
            favorites: 10,
            comments: 10,
        },
        max_in_flight: 64,
        report: Some(path.clone()),
        plot: Some(dir.path().join("latency.svg")),
    };
    let mut ticks = 0;
    let report = run(&config, |_| ticks += 1)
        .await
        .expect("the run completes");

    assert_eq!(report.errors, 0, "{}", report.table());
    assert_eq!(report.operations, 200, "every scheduled operation ran");
    assert!(ticks >= 9, "progress about once a second: {ticks}");
    for name in ["home_global", "home_feed", "article_and_comments"] {
        let op = &report.by_operation[name];
        assert!(op.count > 0 && op.latency_ms.p50 > 0.0, "{name}: {op:?}");
    }
    let l = report.latency_ms;
    assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
    assert!(
        report.statuses.keys().all(|s| s.starts_with('2')),
        "{:?}",
        report.statuses
    );

    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("report written")).expect("JSON");
    for field in [
        "throughput",
        "errors",
        "statuses",
        "latency_ms",
        "by_operation",
        "oba_rss_mib",
    ] {
        assert!(
            written.get(field).is_some(),
            "report has {field}: {written}"
        );
    }
    for q in ["p50", "p90", "p99", "p999", "max"] {
        assert!(written["latency_ms"][q].is_f64(), "latency_ms.{q}");
    }
    assert!(report.timeline.len() >= 10, "a window per second");
    let finished: u64 = report.timeline.iter().map(|w| w.finished).sum();
    assert_eq!(finished, report.operations, "every operation in one window");
    let svg = std::fs::read_to_string(dir.path().join("latency.svg")).expect("chart written");
    assert!(
        svg.starts_with("<svg") && svg.contains("p99"),
        "an SVG with its legend"
    );
}
