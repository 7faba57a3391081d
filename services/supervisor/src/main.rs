//! `mingd`: the MingLLM supervisor. See the crate docs (`lib.rs`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mingd",
    version,
    about = "MingLLM supervisor: bus broker and service manager"
)]
struct Args {
    /// A config file layered over the defaults, /etc/mingllm and ~/.config/mingllm.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the effective configuration (after every layer) and exit.
    Config,
    /// Internal: apply the network sandbox, then exec the command (how services are started).
    #[command(hide = true)]
    SandboxExec {
        #[arg(long)]
        deny_net: bool,
        #[arg(long)]
        allow_unsandboxed: bool,
        /// Apply one layer only (`netns`, `landlock`), or `none` (as on a kernel with neither), to
        /// test or diagnose the sandbox.
        #[arg(long)]
        only: Option<String>,
        #[arg(last = true, required = true)]
        argv: Vec<OsString>,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::SandboxExec {
        deny_net,
        allow_unsandboxed,
        only,
        argv,
    }) = &args.cmd
    {
        use ming_supervisor::sandbox::{sandbox_exec, Layers};
        let layers = match only.as_deref() {
            None => Layers::Both,
            Some("netns") => Layers::NetnsOnly,
            Some("landlock") => Layers::LandlockOnly,
            Some("none") => Layers::None,
            Some(other) => {
                eprintln!(
                    "mingd sandbox-exec: --only takes `netns`, `landlock` or `none`, not `{other}`"
                );
                std::process::exit(64);
            }
        };
        // Before any thread or runtime exists: namespaces need a single-threaded process.
        std::process::exit(sandbox_exec(*deny_net, layers, *allow_unsandboxed, argv));
    }
    ming_bus::process::init_tracing();
    let config_file = args
        .config
        .clone()
        .map(|p| std::path::absolute(&p).unwrap_or(p));
    let cfg = match ming_bus::process::load_config(config_file.clone()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("mingd: {e}");
            std::process::exit(2);
        }
    };
    if let Some(Cmd::Config) = args.cmd {
        print!("{}", toml::to_string_pretty(&cfg)?);
        return Ok(());
    }
    // One thread: every child is forked from this thread, which lives as long as mingd, so
    // PR_SET_PDEATHSIG (tied to the forking thread) fires exactly when mingd dies.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(ming_supervisor::run(
        cfg,
        config_file,
        ming_bus::process::shutdown_signal(),
    ))?;
    Ok(())
}
