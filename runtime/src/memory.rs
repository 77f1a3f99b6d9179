//! This process's memory, as Linux reports it (`/proc/self/status`): for the figures
//! the binaries print (device peak RSS, the cloud's memory per device).

/// The resident set now (`VmRSS`), in KiB; 0 where unknown (not Linux).
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// The peak resident set so far (`VmHWM`), in KiB; 0 where unknown.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_live_process_has_a_resident_set_within_its_peak() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let (now, peak) = (super::rss_kib(), super::peak_rss_kib());
        assert!(now > 0 && now <= peak, "rss {now} KiB, peak {peak} KiB");
    }
}
