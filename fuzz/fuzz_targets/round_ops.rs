//! Arbitrary update sequences (stale, spoofed, duplicate, late, foreign) against a round
//! coordinator: no panic, at most one commit, each node aggregated at most once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_runtime::session::check::{UpdateOp, check_round};

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = check_round(&UpdateOp::from_bytes(data)) {
        panic!("{broken}");
    }
});
