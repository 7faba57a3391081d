//! `ming-audio`: see the crate docs.

fn main() -> anyhow::Result<()> {
    ming_bus::process::init_tracing();
    let cfg = match ming_bus::process::load_config(None) {
        Ok(cfg) => cfg,
        Err(e) => {
            // EX_CONFIG: the supervisor marks the service failed instead of restarting it.
            eprintln!("{e}");
            std::process::exit(78);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(ming_audio::run(cfg, ming_bus::process::shutdown_signal()))?;
    Ok(())
}
