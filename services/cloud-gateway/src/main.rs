//! `ming-cloud-gateway`: see the crate docs.

ming_bus::service_main!(ming_cloud_gateway::run);
