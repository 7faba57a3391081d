//! `ming-inference`: see the crate docs.

fn main() -> anyhow::Result<()> {
    ming_bus::process::init_tracing();
    let cfg = ming_bus::process::load_config_or_exit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match rt.block_on(ming_inference::run(
        cfg,
        ming_bus::process::shutdown_signal(),
    )) {
        Ok(()) => Ok(()),
        Err(
            e @ (ming_inference::InferenceError::Model(_)
            | ming_inference::InferenceError::Engine(_)),
        ) => {
            tracing::error!(error = %e, "cannot serve");
            eprintln!("ming-inference: {e}");
            std::process::exit(ming_bus::process::EX_CONFIG);
        }
        Err(e) => Err(e.into()),
    }
}
