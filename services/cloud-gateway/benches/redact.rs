//! Redaction throughput on a realistic handoff payload (a conversation with some personal data
//! in it). Prints MB/s; asserts nothing. `cargo bench -p ming-cloud-gateway --bench redact`.

use std::time::Instant;

use ming_cloud_gateway::redact::{Placeholders, Redactor};

fn main() {
    let turn =
        "User: I moved to 221B Baker Street last week; my new number is +44 20 7946 0958 and \
                mail goes to jane.doe@example.com. Can you draft a letter to the bank about card \
                4111 1111 1111 1111 and my account GB82 WEST 1234 5698 7654 32? The meeting on \
                2024-01-15 at 10:30 covered version 1.2.3 of the plan, pages 12 to 40, and cost \
                $1,234.56. Ask Alice Smith whether the password policy changed.\n";
    let text = turn.repeat(2000); // ~1 MB
    let redactor = Redactor::new(&["Alice Smith".to_string()]);
    let mut best = f64::MAX;
    let mut found = 0;
    for _ in 0..5 {
        let mut ph = Placeholders::default();
        let t = Instant::now();
        let out = redactor.redact(&text, &mut ph);
        best = best.min(t.elapsed().as_secs_f64());
        found = ph.redactions().len();
        std::hint::black_box(out);
    }
    let mb = text.len() as f64 / 1e6;
    println!(
        "redaction: {:.2} MB in {:.1} ms (best of 5) = {:.1} MB/s; {found} distinct values redacted",
        mb,
        best * 1e3,
        mb / best
    );
}
