//! `ming-audio`: see the crate docs.

fn main() -> anyhow::Result<()> {
    ming_bus::process::init_tracing();
    let cfg = ming_bus::process::load_config_or_exit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(ming_audio::run(cfg, ming_bus::process::shutdown_signal()))?;
    Ok(())
}
