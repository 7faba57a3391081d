//! What every MingLLM binary does at start: logging, configuration, signals.

use std::time::Duration;

use ming_config::{Config, LoadOptions, Paths};

use crate::BusConfig;

/// Installs the `tracing` subscriber: `RUST_LOG` (default `info`), to stderr (which the
/// supervisor captures into the service's log file).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Loads the layered configuration; the file given by `MING_CONFIG` (set by the supervisor for
/// its children) or `explicit` is the `--config` layer.
///
/// # Errors
/// The [`ming_config::ConfigError`] listing every problem.
pub fn load_config(
    explicit: Option<std::path::PathBuf>,
) -> Result<Config, ming_config::ConfigError> {
    let file = explicit.or_else(|| {
        std::env::var_os("MING_CONFIG")
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    Config::load(&LoadOptions {
        file,
        skip_system_and_user: std::env::var_os("MING_NO_USER_CONFIG").is_some(),
    })
}

/// Exit status of a service that cannot run as configured (sysexits.h `EX_CONFIG`): the
/// supervisor marks it failed instead of restarting it.
pub const EX_CONFIG: i32 = 78;

/// [`load_config`] for a service's `main`: on a bad config, prints every problem and exits with
/// [`EX_CONFIG`].
pub fn load_config_or_exit() -> Config {
    match load_config(None) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(EX_CONFIG);
        }
    }
}

impl BusConfig {
    /// The bus described by a loaded configuration.
    pub fn from_config(cfg: &Config) -> Self {
        let paths = Paths::resolve(&cfg.paths);
        Self {
            bus_endpoint: paths.bus_endpoint(),
            events_in_endpoint: paths.events_in_endpoint(),
            events_out_endpoint: paths.events_out_endpoint(),
            max_frame_bytes: usize::try_from(cfg.bus.max_frame_bytes).unwrap_or(usize::MAX),
            heartbeat: Duration::from_millis(cfg.bus.heartbeat_ms),
            liveness: cfg.bus.liveness,
            default_timeout: Duration::from_millis(cfg.bus.default_timeout_ms),
            queue_limit: cfg.bus.queue_limit as usize,
            broker_spin: Duration::from_micros(cfg.bus.broker_spin_us),
            client_spin: Duration::from_micros(cfg.bus.client_spin_us),
        }
    }
}

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; only ctrl-c will stop this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Defines `main` for a service binary whose library exposes
/// `run(Config, impl Future<Output = ()>) -> Result<(), impl Error>`: tracing, the layered config
/// (exit 78 when it is bad), a multi-threaded runtime, and SIGTERM/SIGINT as the shutdown trigger.
#[macro_export]
macro_rules! service_main {
    ($run:path) => {
        fn main() -> anyhow::Result<()> {
            $crate::process::init_tracing();
            let cfg = $crate::process::load_config_or_exit();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on($run(cfg, $crate::process::shutdown_signal()))?;
            Ok(())
        }
    };
}
