//! Garbage, truncated MessagePack, a newer major version and an oversized frame sent to the live
//! broker in mingd: each gets its typed error, and the next valid request is served.

use std::time::Duration;

use ming_schemas::control::{Empty, Pong};
use ming_schemas::envelope::{now_ms, Envelope, Flow};
use ming_schemas::{kinds, ErrorCode};
use ming_tests::Mingd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_service_goes_on() {
    let m = Mingd::start("[bus]\nheartbeat_ms = 100\nmax_frame_bytes = 65536\n");
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let ctx = zmq::Context::new();
    let raw = ctx.socket(zmq::DEALER).unwrap();
    raw.set_rcvtimeo(3000).unwrap();
    raw.set_linger(0).unwrap();
    raw.connect(&m.bus.bus_endpoint).unwrap();
    let ping = Envelope::request(
        "raw-test",
        "agent",
        kinds::PING,
        ming_schemas::to_body(&Empty {}).unwrap(),
        now_ms() + 3000,
    );
    let good = ping.encode();
    let mut newer = ping.clone();
    newer.version.major = 2;
    newer.id ^= 1;
    let mut no_deadline = ping.clone();
    no_deadline.deadline_ms = 0;
    no_deadline.id ^= 2;
    let cases: Vec<(&str, Vec<u8>, ErrorCode, Option<u64>)> = vec![
        (
            "garbage",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            ErrorCode::BadRequest,
            None,
        ),
        (
            "truncated msgpack",
            good[..good.len() - 3].to_vec(),
            ErrorCode::BadRequest,
            None,
        ),
        (
            "newer major version",
            newer.encode(),
            ErrorCode::Unsupported,
            Some(newer.id),
        ),
        (
            "no deadline",
            no_deadline.encode(),
            ErrorCode::BadRequest,
            Some(no_deadline.id),
        ),
        ("oversized", vec![0xc0; 65537], ErrorCode::TooLarge, None),
    ];
    for (name, bytes, code, corr) in cases {
        raw.send(bytes, 0).unwrap();
        let reply = raw
            .recv_bytes(0)
            .unwrap_or_else(|e| panic!("{name}: no error reply ({e})"));
        let env = Envelope::decode(&reply, 1 << 20).unwrap();
        assert_eq!(env.flow, Flow::Error, "{name}");
        assert_eq!(env.error_body().code, code, "{name}: {}", env.error_body());
        if corr.is_some() {
            assert_eq!(env.correlation, corr, "{name}");
        }
    }
    // Two frames in one message is not the protocol either.
    raw.send_multipart([&b"a"[..], &b"b"[..]], 0).unwrap();
    let env = Envelope::decode(&raw.recv_bytes(0).unwrap(), 1 << 20).unwrap();
    assert_eq!(env.error_body().code, ErrorCode::BadRequest);
    // The broker and the service are fine.
    raw.send(good, 0).unwrap();
    let env = Envelope::decode(&raw.recv_bytes(0).unwrap(), 1 << 20).unwrap();
    assert_eq!(env.flow, Flow::Reply);
    assert_eq!(env.correlation, Some(ping.id));
    assert_eq!(env.body::<Pong>().unwrap().service, "agent");
    let pong: Pong = m
        .client
        .request("agent", kinds::PING, &Empty {}, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(pong.service, "agent");
    // The broker logged what it refused.
    assert!(m.mingd_output().contains("refused a bad frame"));
}
