//! Arbitrary send/deliver/drop/duplicate/reorder/timeout/reconnect sequences against a
//! split device/cloud pair: no panic, no step trained or delivered twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_runtime::session::check::{SplitOp, check_split};

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = check_split(&SplitOp::from_bytes(data)) {
        panic!("{broken}");
    }
});
