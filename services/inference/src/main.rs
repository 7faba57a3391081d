//! `ming-inference`: see the crate docs.

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
            std::process::exit(78);
        }
        Err(e) => Err(e.into()),
    }
}
