//! `ming-audio`: see the crate docs.

ming_bus::service_main!(ming_audio::run);
