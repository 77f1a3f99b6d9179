//! Test-only record of which backend a kernel call executed, so tests can fail when the
//! SIMD path was silently skipped.

use crate::Backend;
use std::cell::Cell;

thread_local! {
    static LAST: Cell<Option<Backend>> = const { Cell::new(None) };
}

/// Called by each backend's entry point (test builds only).
pub(crate) fn record(backend: Backend) {
    LAST.with(|last| last.set(Some(backend)));
}

/// The backend of the most recent kernel call on this thread, clearing the record.
pub(crate) fn take() -> Option<Backend> {
    LAST.with(|last| last.take())
}
