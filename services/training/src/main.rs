//! `ming-training`: see the crate docs.

ming_bus::service_main!(ming_training::run);
