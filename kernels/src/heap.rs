//! The C allocator's handling of large blocks, for processes that train.
//!
//! A training step allocates and frees the same large tensors every step (MiniLM's
//! 47 MB word-embedding gradient, the optimiser's temporaries). glibc's `malloc` serves
//! any block above its mmap threshold (at most 32 MiB by its own adjustment) with a fresh
//! `mmap` and unmaps it on `free`, so every step faults in and zeroes those pages again:
//! 13% of a split device step on x86_64 was page faults (`perf`, 2026-11-30), and the
//! backward pass took 308 ms against 181 ms with the blocks kept (same binary, glibc's
//! tunables). [`keep_freed_blocks`] raises both thresholds so freed blocks stay in the
//! heap and the next step reuses them. The price is resident memory: what a step freed
//! is not returned to the system (the device's peak RSS went from 508 to 543 MiB).

/// Blocks up to this size come from the heap instead of their own mapping.
pub const MMAP_THRESHOLD: usize = 256 << 20;
/// Free memory at the top of the heap up to this size is kept rather than returned.
pub const TRIM_THRESHOLD: usize = 512 << 20;

/// Keeps freed large blocks for reuse (see the module's documentation). Call it once,
/// first thing in `main`, before other threads start. Returns whether the allocator took
/// both settings; where the C library is not glibc it does nothing and returns `false`.
pub fn keep_freed_blocks() -> bool {
    imp::keep_freed_blocks()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::{MMAP_THRESHOLD, TRIM_THRESHOLD};
    use core::ffi::c_int;

    // glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;

    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub(super) fn keep_freed_blocks() -> bool {
        let set = |param, value: usize| {
            let value = c_int::try_from(value).unwrap_or(c_int::MAX);
            // SAFETY: mallopt only reads its two integers and updates the allocator's
            // parameters under its own lock; both parameters exist in every glibc.
            unsafe { mallopt(param, value) == 1 }
        };
        // Both, not `&&`'s short circuit: the trim threshold matters on its own.
        let mmap = set(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        let trim = set(M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        mmap && trim
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn keep_freed_blocks() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's minor page faults so far (`/proc/thread-self/stat`, field 10).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn minor_faults() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name (field 2) is in parentheses and may hold spaces.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(7).unwrap().parse().unwrap()
    }

    /// Faults taken to allocate, fill, free and again allocate and fill a 48 MiB block
    /// (above glibc's 32 MiB cap on its own threshold), with a block held after it (too
    /// large for the allocator's caches, so it comes from the heap's top, after the first):
    /// a thread's heap that is wholly free is unmapped whatever the thresholds.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn faults_of_a_second_large_block() -> u64 {
        const LEN: usize = 48 << 20;
        let first = vec![1u8; LEN];
        let after = vec![0u8; 1 << 20];
        // Read before the free: reading allocates, and a small block would be cut from
        // the freed one.
        let before = minor_faults();
        drop(first);
        let second = vec![2u8; LEN];
        let faults = minor_faults() - before;
        assert_eq!(second[LEN - 1] + after[0], 2);
        faults
    }

    /// Before: the second block is a fresh mapping and faults in every page (12,288 of
    /// 4 KiB, or a few with transparent huge pages). After: it is the first block's memory.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_large_blocks_are_reused_instead_of_mapped_again() {
        let fresh = faults_of_a_second_large_block();
        assert!(keep_freed_blocks(), "glibc refused the thresholds");
        let kept = faults_of_a_second_large_block();
        assert!(
            fresh >= 8,
            "a fresh 48 MiB mapping took only {fresh} faults"
        );
        assert!(
            kept * 8 <= fresh,
            "{kept} faults with the blocks kept, {fresh} without"
        );
    }
}
