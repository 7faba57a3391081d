//! `ming-memory`: see the crate docs.

ming_bus::service_main!(ming_memory::run);
