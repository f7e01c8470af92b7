//! Wiring only: Args → Config → telemetry → bind → serve → signals → drain → exit code.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing::{error, info, warn};

use sse_gateway::admin::Admin;
use sse_gateway::cli::Args;
use sse_gateway::config::{Config, Overrides};
use sse_gateway::drain::{Drain, Signal, Signals};
use sse_gateway::hub::{self, Hub};
use sse_gateway::metrics::Metrics;
use sse_gateway::server::{self, Server};
use sse_gateway::telemetry::{self, error_chain};

/// Exit code for a bad configuration (and `--check` failures).
const EX_CONFIG: u8 = 2;
/// Exit code when the gateway could not start (a listener could not be bound).
const EX_START: u8 = 1;

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config, &args.overrides()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    // Like `nginx -t`, the certificates are part of the configuration: read them
    // before anything starts, so a bad one is the same exit 2 as a bad key.
    if let Err(error) = server::check_tls(&config.listen) {
        eprintln!("error: {}: {}", config.file.display(), error_chain(&error));
        return ExitCode::from(EX_CONFIG);
    }
    if let Err(error) = hub::check_upstream_tls(&config.routes) {
        eprintln!("error: {}: {}", config.file.display(), error_chain(&error));
        return ExitCode::from(EX_CONFIG);
    }
    if args.check {
        // `--check` prints its summary for a person to read: stdout is the point.
        #[allow(clippy::print_stdout)]
        {
            println!("{}", config.summary());
            println!("configuration ok");
        }
        return ExitCode::SUCCESS;
    }
    telemetry::init(args.log_format);
    let available = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = args.workers(available);
    // One worker is one thread, as an nginx worker is: no cross-thread wakes, and
    // the kernel skips per-syscall file reference counting in a single-threaded
    // process, which every client write pays otherwise.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(EX_START);
        }
    };
    let code = runtime.block_on(run(config, &args.overrides()));
    // Whatever is left (connections past the drain deadline) is dropped, not awaited.
    runtime.shutdown_background();
    ExitCode::from(code)
}

async fn run(config: Config, overrides: &Overrides) -> u8 {
    // Handlers first, so a signal sent on seeing `listening` is never missed.
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            error!(error = %error, "cannot install signal handlers");
            return EX_START;
        }
    };
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::new(&config.upstream, Arc::clone(&metrics));
    let drain = Drain::new();

    let bound = match Server::bind(&config).await {
        Ok(bound) => bound,
        Err(error) => {
            error!(error = %error_chain(&error), "cannot start");
            return if error.is_config() {
                EX_CONFIG
            } else {
                EX_START
            };
        }
    };
    let tls = bound.tls_reload();
    let admin = match Admin::bind(config.admin.addr).await {
        Ok(admin) => admin,
        Err(error) => {
            error!(error = %error, addr = %config.admin.addr, "cannot listen on the admin address");
            return EX_START;
        }
    };
    admin.serve(Arc::clone(&metrics), drain.watch(), hub.clone());
    let serving = bound.serve(
        &config,
        hub,
        Arc::clone(&metrics),
        drain.watch(),
        &drain.tracker(),
    );

    let mut deadline = config.drain.deadline;
    loop {
        match signals.recv().await {
            Signal::Terminate => break,
            Signal::Reload => match Config::load(&config.file, overrides) {
                // Certificates first: a listener whose new files don't load rejects
                // the whole reload, so routes and certificates never disagree.
                Ok(new) => match hub::check_upstream_tls(&new.routes)
                    .map_err(|e| error_chain(&e))
                    .and_then(|()| tls.reload_tls(&new.listen).map_err(|e| error_chain(&e)))
                {
                    Err(error) => {
                        metrics.reload(false);
                        warn!(error = %error, "reload rejected; the running configuration stays")
                    }
                    Ok(tls_listeners) => {
                        metrics.reload(true);
                        let reloaded = serving.reload(&new);
                        if reloaded.listeners_kept {
                            warn!("reload: listener addresses changed; they apply after a restart");
                        }
                        if reloaded.limits_kept {
                            warn!("reload: limits changed; they apply after a restart");
                        }
                        deadline = new.drain.deadline;
                        info!(
                            routes = new.routes.len(),
                            sources_closed = reloaded.sources_closed,
                            tls_listeners,
                            "configuration reloaded"
                        );
                    }
                },
                Err(error) => {
                    metrics.reload(false);
                    warn!(error = %error, "reload rejected; the running configuration stays")
                }
            },
        }
    }
    let outcome = drain.run(deadline, &mut signals).await;
    info!(exit_code = outcome.exit_code(), "exiting");
    outcome.exit_code()
}
