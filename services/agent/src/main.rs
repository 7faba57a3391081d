//! `ming-agent`: see the crate docs.

ming_bus::service_main!(ming_agent::run);
