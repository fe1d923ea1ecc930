//! `oba bench`: an open-loop load generator for any RealWorld (Conduit) API.
//!
//! It seeds the system through its public API (users who follow each other, articles with
//! tags, favorites, comments), then starts operations at a constant rate whether or not the
//! earlier ones have finished, as wrk2 does. Latency is measured from each operation's
//! *intended* start, so a stalled server shows as the queue it causes (coordinated omission
//! corrected), not as fewer, faster samples. The mix follows DeathStarBench's social network:
//! 60 % home page lists (global and feed), 30 % an article with its comments, 10 % writes
//! (favorite or unfavorite, comment, publish).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// How much to seed before the load starts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SeedSizes {
    pub users: usize,
    /// Whom each user follows (the next `follows` users).
    pub follows: usize,
    pub articles: usize,
    pub favorites: usize,
    pub comments: usize,
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The API root, e.g. `http://127.0.0.1:8080/api`.
    pub api: String,
    /// Operations started per second.
    pub rate: f64,
    pub duration: Duration,
    pub seed: SeedSizes,
    /// Operations in flight at most: the generator's memory is bounded even against a server
    /// that stops answering (late operations still count from their intended start).
    pub max_in_flight: usize,
    /// Where the JSON report goes, if anywhere.
    pub report: Option<PathBuf>,
    /// Where the latency-over-time chart (SVG) goes, if anywhere.
    pub plot: Option<PathBuf>,
}

/// What a run measured; also written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub api: String,
    pub rate: f64,
    pub duration_s: f64,
    pub seed: SeedSizes,
    /// Operations started and finished (an article read is one operation of two requests).
    pub operations: u64,
    /// Finished operations per second of the load phase.
    pub throughput: f64,
    /// Operations that failed: a non-2xx answer or no answer.
    pub errors: u64,
    /// Every request's outcome: HTTP status, or `connect`/`timeout`/`io`.
    pub statuses: BTreeMap<String, u64>,
    pub latency_ms: Percentiles,
    pub by_operation: BTreeMap<String, OperationReport>,
    /// Resident memory of every local process named `oba` (not this one), after the load.
    pub oba_rss_mib: Vec<ProcessRss>,
    /// Latency of the operations that finished in each second of the run.
    pub timeline: Vec<Window>,
}

/// One second of the run: the operations that finished in it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Window {
    /// Seconds since the load started (the end of the window).
    pub second: u64,
    pub finished: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationReport {
    pub count: u64,
    pub errors: u64,
    pub latency_ms: Percentiles,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessRss {
    pub pid: u32,
    pub rss_mib: f64,
}

/// What is printed while the load runs, once a second.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub elapsed: Duration,
    pub started: u64,
    pub finished: u64,
    pub errors: u64,
    pub in_flight: usize,
    pub p99_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("seeding {what} failed: {detail}")]
    Seed { what: String, detail: String },
    #[error("invalid setting: {0}")]
    Config(String),
    #[error("cannot write the report {path}: {detail}")]
    Report { path: String, detail: String },
}

/// The operations of the mix, with their weights (out of 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    HomeGlobal,
    HomeFeed,
    Article,
    Favorite,
    Comment,
    Publish,
}

const MIX: [(Operation, u32); 6] = [
    (Operation::HomeGlobal, 30),
    (Operation::HomeFeed, 30),
    (Operation::Article, 30),
    (Operation::Favorite, 5),
    (Operation::Comment, 3),
    (Operation::Publish, 2),
];

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Self::HomeGlobal => "home_global",
            Self::HomeFeed => "home_feed",
            Self::Article => "article_and_comments",
            Self::Favorite => "favorite",
            Self::Comment => "comment",
            Self::Publish => "publish",
        }
    }

    /// The operation for a number in 0..100.
    fn pick(roll: u32) -> Self {
        let mut left = roll;
        for (operation, weight) in MIX {
            if left < weight {
                return operation;
            }
            left -= weight;
        }
        Self::HomeGlobal
    }
}

const TAGS: [&str; 10] = [
    "rust",
    "grpc",
    "events",
    "kubernetes",
    "graphql",
    "sql",
    "nats",
    "testing",
    "design",
    "ops",
];

/// The seeded world the load acts on.
struct World {
    api: String,
    http: reqwest::Client,
    tokens: Vec<String>,
    slugs: Vec<String>,
}

/// One request's outcome: its status name and whether it succeeded.
struct Outcome {
    status: String,
    ok: bool,
}

/// A request to the RealWorld API as the user of `token` (its `Token` scheme), with a JSON body.
fn api_request(
    http: &reqwest::Client,
    method: reqwest::Method,
    api: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::RequestBuilder {
    let mut request = http.request(method, format!("{api}{path}"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Token {token}"));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
}

impl World {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Outcome {
        let request = api_request(&self.http, method, &self.api, path, Some(token), body);
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                // Read the body: the time to the last byte is the latency.
                let read = response.bytes().await;
                Outcome {
                    status: status.as_u16().to_string(),
                    ok: status.is_success() && read.is_ok(),
                }
            }
            Err(e) if e.is_timeout() => Outcome {
                status: "timeout".into(),
                ok: false,
            },
            Err(e) if e.is_connect() => Outcome {
                status: "connect".into(),
                ok: false,
            },
            Err(_) => Outcome {
                status: "io".into(),
                ok: false,
            },
        }
    }

    /// Runs one operation; every request's outcome in order.
    async fn run(&self, operation: Operation, rng: &mut fastrand::Rng, n: u64) -> Vec<Outcome> {
        use reqwest::Method;
        let token = &self.tokens[rng.usize(..self.tokens.len())];
        let slug = &self.slugs[rng.usize(..self.slugs.len())];
        match operation {
            Operation::HomeGlobal => {
                vec![
                    self.call(Method::GET, "/articles?limit=20", token, None)
                        .await,
                ]
            }
            Operation::HomeFeed => {
                vec![
                    self.call(Method::GET, "/articles/feed?limit=20", token, None)
                        .await,
                ]
            }
            Operation::Article => {
                let article = self
                    .call(Method::GET, &format!("/articles/{slug}"), token, None)
                    .await;
                let comments = self
                    .call(
                        Method::GET,
                        &format!("/articles/{slug}/comments"),
                        token,
                        None,
                    )
                    .await;
                vec![article, comments]
            }
            Operation::Favorite => {
                let method = if rng.bool() {
                    Method::POST
                } else {
                    Method::DELETE
                };
                vec![
                    self.call(method, &format!("/articles/{slug}/favorite"), token, None)
                        .await,
                ]
            }
            Operation::Comment => {
                let body = json!({ "comment": { "body": format!("bench comment {n}") } });
                vec![
                    self.call(
                        Method::POST,
                        &format!("/articles/{slug}/comments"),
                        token,
                        Some(body),
                    )
                    .await,
                ]
            }
            Operation::Publish => {
                let body = json!({ "article": article(&format!("load {n} {}", rng.u32(..)), rng) });
                vec![
                    self.call(Method::POST, "/articles", token, Some(body))
                        .await,
                ]
            }
        }
    }
}

fn article(label: &str, rng: &mut fastrand::Rng) -> Value {
    let first = rng.usize(..TAGS.len());
    let second = (first + 1 + rng.usize(..TAGS.len() - 1)) % TAGS.len();
    json!({
        "title": format!("Benchmark article {label}"),
        "description": format!("what article {label} is about"),
        "body": format!("# Article {label}\n\n{}", "Some text. ".repeat(40)),
        "tagList": [TAGS[first], TAGS[second]],
    })
}

/// Seeding calls at once.
const SEED_CONCURRENCY: usize = 8;

/// One seeding request of `method` on `path` as the user of `token`.
struct SeedCall {
    method: reqwest::Method,
    path: String,
    token: Option<String>,
    body: Option<Value>,
}

impl SeedCall {
    fn new(
        method: reqwest::Method,
        path: String,
        token: Option<&String>,
        body: Option<Value>,
    ) -> Self {
        Self {
            method,
            path,
            token: token.cloned(),
            body,
        }
    }

    /// Sends it; the JSON answer, or what went wrong.
    async fn send(self, http: reqwest::Client, api: String) -> Result<Value, BenchError> {
        let what = format!("{} {}", self.method, self.path);
        let fail = |detail: String| BenchError::Seed {
            what: what.clone(),
            detail,
        };
        let request = api_request(
            &http,
            self.method,
            &api,
            &self.path,
            self.token.as_deref(),
            self.body,
        );
        let response = request.send().await.map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("{status}: {text}")));
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))
    }
}

/// Sends `calls`, [`SEED_CONCURRENCY`] at once; the answers in order.
async fn send_all(
    http: &reqwest::Client,
    api: &str,
    calls: impl IntoIterator<Item = SeedCall>,
) -> Result<Vec<Value>, BenchError> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(
        calls
            .into_iter()
            .map(|call| call.send(http.clone(), api.to_owned())),
    )
    .buffered(SEED_CONCURRENCY)
    .try_collect()
    .await
}

/// The string at `pointer` in each answer.
fn strings(answers: Vec<Value>, pointer: &str, what: &str) -> Result<Vec<String>, BenchError> {
    answers
        .iter()
        .map(|answer| {
            answer
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| BenchError::Seed {
                    what: what.to_owned(),
                    detail: format!("no {pointer} in the answer"),
                })
        })
        .collect()
}

async fn seed(config: &BenchConfig, http: &reqwest::Client) -> Result<World, BenchError> {
    use reqwest::Method;
    let sizes = config.seed;
    if sizes.users == 0 || sizes.articles == 0 {
        return Err(BenchError::Config(
            "seed at least one user and one article".into(),
        ));
    }
    let api = config.api.trim_end_matches('/').to_owned();
    // A run's own names, so that a system can be seeded again by the next run.
    let run = format!("{:06x}", fastrand::u32(..0x00ff_ffff));
    let names: Vec<String> = (0..sizes.users).map(|i| format!("b{run}u{i}")).collect();
    let sign_ups = names.iter().map(|name| {
        let user = json!({ "user": {
            "username": name,
            "email": format!("{name}@example.com"),
            "password": format!("password-{name}"),
        }});
        SeedCall::new(Method::POST, "/users".into(), None, Some(user))
    });
    let tokens = strings(
        send_all(http, &api, sign_ups).await?,
        "/user/token",
        "POST /users",
    )?;
    let follows = (0..sizes.users).flat_map(|u| {
        (1..=sizes.follows.min(sizes.users - 1)).map(move |k| (u, (u + k) % sizes.users))
    });
    let follows = follows.map(|(u, v)| {
        let path = format!("/profiles/{}/follow", names[v]);
        SeedCall::new(Method::POST, path, Some(&tokens[u]), None)
    });
    send_all(http, &api, follows.collect::<Vec<_>>()).await?;
    let mut rng = fastrand::Rng::with_seed(7);
    let drafts: Vec<SeedCall> = (0..sizes.articles)
        .map(|i| {
            let body = json!({ "article": article(&format!("{run} {i}"), &mut rng) });
            SeedCall::new(
                Method::POST,
                "/articles".into(),
                Some(&tokens[i % sizes.users]),
                Some(body),
            )
        })
        .collect();
    let slugs = strings(
        send_all(http, &api, drafts).await?,
        "/article/slug",
        "POST /articles",
    )?;
    // Distinct (user, article) pairs: a favorite counts once.
    let mut pairs: Vec<(usize, usize)> = (0..sizes.users)
        .flat_map(|u| (0..slugs.len()).map(move |a| (u, a)))
        .collect();
    rng.shuffle(&mut pairs);
    pairs.truncate(sizes.favorites);
    let favorites: Vec<SeedCall> = pairs
        .into_iter()
        .map(|(u, a)| {
            let path = format!("/articles/{}/favorite", slugs[a]);
            SeedCall::new(Method::POST, path, Some(&tokens[u]), None)
        })
        .collect();
    send_all(http, &api, favorites).await?;
    let comments: Vec<SeedCall> = (0..sizes.comments)
        .map(|i| {
            let path = format!("/articles/{}/comments", slugs[rng.usize(..slugs.len())]);
            let body = json!({ "comment": { "body": format!("comment {i}") } });
            SeedCall::new(
                Method::POST,
                path,
                Some(&tokens[i % sizes.users]),
                Some(body),
            )
        })
        .collect();
    send_all(http, &api, comments).await?;
    Ok(World {
        api,
        http: http.clone(),
        tokens,
        slugs,
    })
}

/// Latencies of one kind of operation, in microseconds.
struct Latencies {
    histogram: Histogram<u64>,
    count: u64,
    errors: u64,
}

impl Latencies {
    fn new() -> Self {
        Self {
            // 1 µs to 1 h at 3 significant digits: any latency a run can see.
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant bounds are valid"),
            count: 0,
            errors: 0,
        }
    }

    fn record(&mut self, latency: Duration, ok: bool) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
        self.count += 1;
        if !ok {
            self.errors += 1;
        }
    }

    /// This second's figures (one [`Latencies`] per second, then dropped: memory stays flat
    /// however long the run).
    fn window(&self, second: u64) -> Window {
        let p = self.percentiles();
        Window {
            second,
            finished: self.count,
            p50_ms: p.p50,
            p99_ms: p.p99,
            max_ms: p.max,
        }
    }

    fn percentiles(&self) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let at = |q: f64| ms(self.histogram.value_at_quantile(q));
        Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: ms(self.histogram.max()),
        }
    }
}

/// A finished operation: what it was, each request's outcome, its latency from the intended start.
type Finished = (Operation, Vec<Outcome>, Duration);

/// What [`drive`] measured.
struct Measured {
    all: Latencies,
    by_operation: BTreeMap<Operation, Latencies>,
    statuses: BTreeMap<String, u64>,
    timeline: Vec<Window>,
    elapsed: f64,
}

/// The open loop: starts `operate` at `config.rate` for `config.duration` on a schedule fixed
/// in advance, and measures each operation from its intended start.
async fn drive<F, Fut>(
    config: &BenchConfig,
    mut progress: impl FnMut(Progress),
    operate: F,
) -> Measured
where
    F: Fn(Operation, fastrand::Rng, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Vec<Outcome>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(config.max_in_flight));
    let started = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (finished_tx, mut finished) = mpsc::unbounded_channel::<Finished>();
    let interval = Duration::from_secs_f64(1.0 / config.rate);
    let total = (config.duration.as_secs_f64() * config.rate).floor() as u64;
    let start = Instant::now();
    let generator = {
        let (operate, slots, started) = (Arc::new(operate), slots.clone(), started.clone());
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(11);
            for n in 0..total {
                // The schedule is fixed in advance: a slow answer delays no later start.
                let intended = start + interval.mul_f64(n as f64);
                tokio::time::sleep_until(intended).await;
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let operation = Operation::pick(rng.u32(..100));
                let own_rng = fastrand::Rng::with_seed(rng.u64(..));
                let (operate, finished_tx) = (operate.clone(), finished_tx.clone());
                tokio::spawn(async move {
                    let outcomes = operate(operation, own_rng, n).await;
                    let _ = finished_tx.send((operation, outcomes, intended.elapsed()));
                    drop(slot);
                });
            }
        })
    };

    let mut all = Latencies::new();
    let mut window = Latencies::new();
    let mut timeline = Vec::new();
    let mut by_operation: BTreeMap<Operation, Latencies> = BTreeMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut ticks =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        tokio::select! {
            next = finished.recv() => {
                let Some((operation, outcomes, latency)) = next else { break };
                let ok = outcomes.iter().all(|o| o.ok);
                for outcome in outcomes {
                    *statuses.entry(outcome.status).or_default() += 1;
                }
                all.record(latency, ok);
                window.record(latency, ok);
                by_operation.entry(operation).or_insert_with(Latencies::new).record(latency, ok);
            }
            _ = ticks.tick() => {
                let done = std::mem::replace(&mut window, Latencies::new()).window(timeline.len() as u64 + 1);
                timeline.push(done);
                progress(Progress {
                    elapsed: start.elapsed(),
                    started: started.load(std::sync::atomic::Ordering::Relaxed),
                    finished: all.count,
                    errors: all.errors,
                    in_flight: config.max_in_flight - slots.available_permits(),
                    p99_ms: all.percentiles().p99,
                });
            }
        }
    }
    if window.count > 0 {
        timeline.push(window.window(timeline.len() as u64 + 1));
    }
    // The channel closes once the generator and every operation are done.
    let _ = generator.await;
    Measured {
        all,
        by_operation,
        statuses,
        timeline,
        elapsed: start.elapsed().as_secs_f64(),
    }
}

/// Seeds the system, runs the load and returns the report (also written to `config.report`).
/// `progress` is called about once a second while the load runs.
pub async fn run(
    config: &BenchConfig,
    progress: impl FnMut(Progress),
) -> Result<Report, BenchError> {
    if !(config.rate.is_finite() && config.rate > 0.0) {
        return Err(BenchError::Config("the rate must be above 0".into()));
    }
    if config.max_in_flight == 0 || config.duration.is_zero() {
        return Err(BenchError::Config(
            "the duration and operations in flight must be above 0".into(),
        ));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| BenchError::Config(format!("HTTP client: {e}")))?;
    let world = Arc::new(seed(config, &http).await?);

    let measured = drive(config, progress, move |operation, mut rng, n| {
        let world = world.clone();
        async move { world.run(operation, &mut rng, n).await }
    })
    .await;
    let Measured {
        all,
        by_operation,
        statuses,
        timeline,
        elapsed,
    } = measured;
    let report = Report {
        api: config.api.clone(),
        rate: config.rate,
        duration_s: config.duration.as_secs_f64(),
        seed: config.seed,
        operations: all.count,
        throughput: all.count as f64 / elapsed,
        errors: all.errors,
        statuses,
        latency_ms: all.percentiles(),
        by_operation: by_operation
            .iter()
            .map(|(operation, l)| {
                let report = OperationReport {
                    count: l.count,
                    errors: l.errors,
                    latency_ms: l.percentiles(),
                };
                (operation.name().to_owned(), report)
            })
            .collect(),
        oba_rss_mib: oba_rss(),
        timeline,
    };
    if let Some(path) = &config.report {
        let fail = |detail: String| BenchError::Report {
            path: path.display().to_string(),
            detail,
        };
        let json = serde_json::to_vec_pretty(&report).map_err(|e| fail(e.to_string()))?;
        std::fs::write(path, json).map_err(|e| fail(e.to_string()))?;
    }
    if let Some(path) = &config.plot {
        plot(&report, path).map_err(|detail| BenchError::Report {
            path: path.display().to_string(),
            detail,
        })?;
    }
    Ok(report)
}

/// Draws p50, p99 and max latency per second of the run as an SVG chart.
fn plot(report: &Report, path: &std::path::Path) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let seconds = report.timeline.len() as u64;
    let top = report
        .timeline
        .iter()
        .map(|w| w.max_ms)
        .fold(1.0_f64, f64::max)
        * 1.1;
    let title = format!(
        "{}: {:.0} ops/s open loop, p99 {:.1} ms, {} errors",
        report.api, report.rate, report.latency_ms.p99, report.errors
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0..seconds.max(1), 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("second of the run")
        .y_desc("latency (ms, from the intended start)")
        .draw()
        .map_err(|e| e.to_string())?;
    /// A line: its legend, colour and the figure it draws from each window.
    type Line = (&'static str, RGBColor, fn(&Window) -> f64);
    let series: [Line; 3] = [
        ("p50", BLUE, |w| w.p50_ms),
        ("p99", RGBColor(230, 120, 0), |w| w.p99_ms),
        ("max", RED, |w| w.max_ms),
    ];
    for (name, color, value) in series {
        let points = report.timeline.iter().map(|w| (w.second, value(w)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// RSS of every process named `oba` but this one (Linux `/proc`; empty elsewhere).
fn oba_rss() -> Vec<ProcessRss> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<ProcessRss> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "oba")
        })
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kib: f64 = status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(ProcessRss {
                pid,
                rss_mib: (kib / 1024.0 * 10.0).round() / 10.0,
            })
        })
        .collect();
    found.sort_by_key(|p| p.pid);
    found
}

impl Report {
    /// The report as a Markdown table, one row per operation and one for all.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{}: {:.0} operations/s for {:.0} s (open loop), {:.1} finished/s, {} errors\n\n\
             | operation | count | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n\
             |---|---|---|---|---|---|---|---|\n",
            self.api, self.rate, self.duration_s, self.throughput, self.errors
        );
        let rows = self
            .by_operation
            .iter()
            .map(|(name, op)| (name.as_str(), op.count, op.errors, op.latency_ms))
            .chain([("all", self.operations, self.errors, self.latency_ms)]);
        for (name, count, errors, l) in rows {
            out.push_str(&format!(
                "| {name} | {count} | {errors} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                l.p50, l.p90, l.p99, l.p999, l.max
            ));
        }
        out.push_str(&format!("\nrequests by status: {:?}\n", self.statuses));
        if !self.oba_rss_mib.is_empty() {
            let rss: Vec<String> = self
                .oba_rss_mib
                .iter()
                .map(|p| format!("{} MiB (pid {})", p.rss_mib, p.pid))
                .collect();
            out.push_str(&format!("RSS of oba processes: {}\n", rss.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_60_home_30_article_10_writes() {
        let mut counts: BTreeMap<Operation, u32> = BTreeMap::new();
        for roll in 0..100 {
            *counts.entry(Operation::pick(roll)).or_default() += 1;
        }
        let home = counts[&Operation::HomeGlobal] + counts[&Operation::HomeFeed];
        let writes = counts[&Operation::Favorite]
            + counts[&Operation::Comment]
            + counts[&Operation::Publish];
        assert_eq!((home, counts[&Operation::Article], writes), (60, 30, 10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_counts_for_every_operation_it_delays() {
        // 50 operations a second, one at a time; the first stalls for 300 ms and the others
        // answer at once. The 14 scheduled during the stall wait for it: measured from their
        // intended start they are slow too, as a user would see them (wrk2's correction).
        let config = BenchConfig {
            api: "http://unused".into(),
            rate: 50.0,
            duration: Duration::from_secs(1),
            seed: SeedSizes {
                users: 1,
                follows: 0,
                articles: 1,
                favorites: 0,
                comments: 0,
            },
            max_in_flight: 1,
            report: None,
            plot: None,
        };
        let measured = drive(
            &config,
            |_| {},
            |_, _, n| async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                vec![Outcome {
                    status: "200".into(),
                    ok: true,
                }]
            },
        )
        .await;
        assert_eq!(measured.all.count, 50);
        let p = measured.all.percentiles();
        assert!(p.max >= 299.0 && p.max < 310.0, "the stall itself: {p:?}");
        assert!(p.p90 >= 150.0, "the operations it delayed: {p:?}");
        assert!(p.p50 < 5.0, "the rest: {p:?}");
    }

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut latencies = Latencies::new();
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms), ms != 100);
        }
        let p = latencies.percentiles();
        assert!((p.p50 - 50.0).abs() < 0.1, "p50 {}", p.p50);
        assert!((p.p99 - 99.0).abs() < 0.1, "p99 {}", p.p99);
        assert!((p.max - 100.0).abs() < 0.1, "max {}", p.max);
        assert_eq!((latencies.count, latencies.errors), (100, 1));
    }
}
