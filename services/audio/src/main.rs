//! `ming-audio`: see the crate docs.

fn main() -> anyhow::Result<()> {
    ming_bus::process::init_tracing();
    let cfg = ming_bus::process::load_config_or_exit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match rt.block_on(ming_audio::run(cfg, ming_bus::process::shutdown_signal())) {
        Ok(()) => Ok(()),
        Err(e @ ming_audio::StartError::Bus(_)) => Err(e.into()),
        Err(e) => {
            // A missing or unreadable model: a restart would not help.
            tracing::error!(error = %e, "cannot serve");
            eprintln!("ming-audio: {e}");
            std::process::exit(ming_bus::process::EX_CONFIG);
        }
    }
}
