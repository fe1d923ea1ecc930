//! `oba`: run the whole platform in one process (`oba up`, the default) or one service
//! (`oba serve <service>`). Configuration comes from `OBA_*` variables and `./.env`.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;

/// mimalloc returns freed memory to the system, where glibc's arenas keep every password
/// hash's 19 MiB (measured in bench/: the README's memory figures).
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;
use oba::{SeparateProcesses, Service, StartError, System, UpConfig};
use oba_kit::config::Env;
use oba_kit::shutdown::{CancellationToken, cancel_on_signal};

#[derive(Parser)]
#[command(version, about = "oba, the overengineered blog app")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Every service in this process on loopback ports, with embedded storage (default).
    Up {
        /// Do not start this service: it runs elsewhere (e.g. `cargo run -- serve <service>`
        /// with the output of `oba env <service>`) at its usual address.
        #[arg(long, value_enum)]
        skip: Vec<Service>,
        /// Run every service as its own `oba serve` process on this PostgreSQL server (each
        /// service gets the database `<name>_<service>`, `<name>` from the URL or `oba`),
        /// supervised and restarted, instead of all in this process on SQLite.
        #[arg(long, value_name = "postgres://…")]
        database_url: Option<String>,
        /// NATS server with JetStream: required with --database-url; alone, the services of
        /// this process use it instead of the in-process bus (OBA_BUS_URL).
        #[arg(long, value_name = "nats://…")]
        bus_url: Option<String>,
        /// Processes per service (with --database-url); replica r listens on the first
        /// replica's port + 10·r.
        #[arg(long, default_value = "1")]
        replicas: std::num::NonZeroU8,
    },
    /// One service, configured from the environment (containers, separate processes).
    Serve {
        #[arg(value_enum)]
        service: Service,
    },
    /// Create a service's database if missing and apply its migrations, then exit.
    Migrate {
        #[arg(value_enum)]
        service: Service,
    },
    /// Write a new Ed25519 token key pair (PEM) into a directory, unless one is there.
    Keygen { dir: std::path::PathBuf },
    /// Sign a service credential (valid one year) with OBA_TOKEN_PRIVATE_KEY_FILE and write
    /// it to a file: the edge's OBA_SERVICE_TOKEN_FILE.
    ServiceToken {
        #[arg(value_enum)]
        service: Service,
        out: std::path::PathBuf,
    },
    /// Print the environment a service gets when deployed (from the config repo), with the
    /// local addresses, storage and keys of `oba up`, as KEY=value lines.
    Env {
        #[arg(value_enum)]
        service: Service,
        #[arg(long, default_value = "deploy/config-repo")]
        config_repo: std::path::PathBuf,
    },
    /// List every setting `oba serve <service>` reads, and whether it is required.
    Keys {
        #[arg(value_enum)]
        service: Service,
    },
    /// GET an http:// URL and exit 0 on a 2xx answer (container health checks: the image
    /// has no shell or curl).
    Probe { url: String },
    /// Load any RealWorld (Conduit) API: seed it through its public API, then start
    /// operations at a constant rate (open loop: latency from each one's intended start) in
    /// a mix of 60 % home lists, 30 % article + comments, 10 % writes; prints a table and
    /// writes a JSON report.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The API root, e.g. http://127.0.0.1:8080/api
    api: String,
    /// Operations started per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds of load after seeding.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Users each user follows.
    #[arg(long, default_value_t = 5)]
    follows: usize,
    #[arg(long, default_value_t = 500)]
    articles: usize,
    #[arg(long, default_value_t = 2000)]
    favorites: usize,
    #[arg(long, default_value_t = 1000)]
    comments: usize,
    /// Operations in flight at most (bounds the generator's memory against a stalled server).
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = "oba-bench.json")]
    report: std::path::PathBuf,
    /// Also draw latency over time (p50, p99, max per second) into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // One process, one resource: `oba serve` spans are the service's, `oba up` spans are
    // oba's. The processes that serve the edge keep recent traces for its status page.
    let (process, keep_recent) = match &cli.command {
        Some(Command::Serve { service }) => (service.name(), *service == Service::BlogAggregator),
        None | Some(Command::Up { .. }) => ("oba", true),
        _ => ("oba", false),
    };
    let telemetry = match oba_kit::telemetry::init(process, keep_recent) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let command = cli.command.unwrap_or(Command::Up {
        skip: Vec::new(),
        database_url: None,
        bus_url: None,
        replicas: std::num::NonZeroU8::MIN,
    });
    let result = match command {
        Command::Up {
            skip,
            database_url,
            bus_url,
            replicas,
        } => up(skip, database_url, bus_url, replicas, shutdown).await,
        Command::Serve { service } => oba::serve(service, Env::from_process(), shutdown).await,
        Command::Migrate { service } => service.migrate(&mut Env::from_process()).await,
        Command::Keygen { dir } => keygen(&dir),
        Command::ServiceToken { service, out } => service_token(service, &out),
        Command::Env {
            service,
            config_repo,
        } => print_env(service, &config_repo),
        Command::Keys { service } => {
            for (key, required) in service.settings() {
                println!("{key} {}", if required { "required" } else { "optional" });
            }
            Ok(())
        }
        Command::Probe { url } => oba::probe(&url).await,
        Command::Bench(args) => bench(args).await,
    };
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

async fn bench(args: BenchArgs) -> Result<(), StartError> {
    let config = oba::bench::BenchConfig {
        api: args.api,
        rate: args.rate,
        duration: std::time::Duration::from_secs(args.seconds),
        seed: oba::bench::SeedSizes {
            users: args.users,
            follows: args.follows,
            articles: args.articles,
            favorites: args.favorites,
            comments: args.comments,
        },
        max_in_flight: args.max_in_flight,
        report: Some(args.report.clone()),
        plot: args.plot.clone(),
    };
    eprintln!("seeding {} ...", config.api);
    let report = oba::bench::run(&config, |p| {
        eprintln!(
            "{:>4} s  started {:>7}  finished {:>7}  errors {:>5}  in flight {:>5}  p99 {:>8.2} ms",
            p.elapsed.as_secs(),
            p.started,
            p.finished,
            p.errors,
            p.in_flight,
            p.p99_ms
        );
    })
    .await
    .map_err(|e| StartError::Io(e.to_string()))?;
    println!("{}", report.table());
    println!("report: {}", args.report.display());
    if let Some(plot) = &args.plot {
        println!("chart: {}", plot.display());
    }
    Ok(())
}

fn keygen(dir: &std::path::Path) -> Result<(), StartError> {
    let (files, created) = oba_kit::auth::ensure_dev_keypair(dir)
        .map_err(|e| StartError::Io(format!("cannot write keys into {}: {e}", dir.display())))?;
    let verb = if created { "wrote" } else { "kept existing" };
    println!(
        "{verb} OBA_TOKEN_PRIVATE_KEY_FILE={}\n{verb} OBA_TOKEN_PUBLIC_KEY_FILE={}",
        files.private_key.display(),
        files.public_key.display()
    );
    Ok(())
}

fn service_token(service: Service, out: &std::path::Path) -> Result<(), StartError> {
    let mut env = Env::from_process();
    let key = env.required("OBA_TOKEN_PRIVATE_KEY_FILE");
    env.finish()?;
    oba::write_service_token(std::path::Path::new(&key.value), service, out)?;
    println!(
        "wrote a service credential of {} to {}",
        service.name(),
        out.display()
    );
    Ok(())
}

fn print_env(service: Service, config_repo: &std::path::Path) -> Result<(), StartError> {
    let config = UpConfig::from_env(Env::from_process())?;
    for (key, value) in oba::service_env(&config, service, config_repo)? {
        println!("{key}={value}");
    }
    Ok(())
}

async fn up(
    skip: Vec<Service>,
    database_url: Option<String>,
    bus_url: Option<String>,
    replicas: std::num::NonZeroU8,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let started = Instant::now();
    let separate = SeparateProcesses::from_flags(database_url, bus_url.clone(), replicas);
    let config = UpConfig::from_env(Env::from_process());
    // Every problem at once: the flags' and the environment's.
    let (separate, mut config) = match (separate, config) {
        (Ok(separate), Ok(config)) => (separate, config),
        (Err(mut flags), Err(env)) => {
            flags.problems.extend(env.problems);
            return Err(flags.into());
        }
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e.into()),
    };
    if let Some(separate) = separate {
        if !skip.is_empty() {
            return Err(StartError::Io(
                "--skip is for oba up in one process; with --database-url every service is a \
                 process of its own"
                    .into(),
            ));
        }
        return oba::run_separate(config, separate, shutdown).await;
    }
    if let Some(bus_url) = bus_url {
        config.env.set("OBA_BUS_URL", bus_url);
    }
    config.skip = skip;
    let system = System::up(config, shutdown.clone()).await?;
    let url = system.edge_url();
    println!(
        "oba is up in {} ms\n  Web:      {url}/\n  GraphQL:  {url}/graphql\n  GraphiQL: {url}/graphiql\n  Status:   {url}/status\nPress Ctrl-C to stop.",
        started.elapsed().as_millis()
    );
    let drain = async {
        shutdown.cancelled().await;
        tokio::time::sleep(oba::DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = system.wait() => result,
        () = drain => Err(StartError::Io("in-flight requests did not finish in time".into())),
    }
}
