//! The `tandem` binary: bad input gives one clear line and a non-zero exit code.

use std::process::{Command, Output};
use tandem_runtime::transport::pki::Pki;

fn tandem(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env("TANDEM_CACHE", cache)
        .env_remove("RUST_LOG")
        .output()
        .expect("run tandem")
}

fn temp_cache(test: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tandem-cli-{test}-{}", std::process::id()))
}

/// Exit code 1 and exactly one `error:` line containing `needle`, no panic.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "stderr: {stderr}");
    assert!(
        errors[0].contains(needle),
        "'{}' lacks '{needle}'",
        errors[0]
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// The device name the tests' certificates are issued for.
const NODE: &str = "cli-node";

/// A cache holding a CA and a certificate for [`NODE`], so `hello` gets past the
/// certificate checks.
fn cache_with_certificate(test: &str) -> std::path::PathBuf {
    let cache = temp_cache(test);
    let pki = Pki::new(cache.join("pki"));
    pki.init().unwrap();
    pki.issue(NODE).unwrap();
    cache
}

/// `tandem hello --cloud CLOUD --node NODE EXTRA...`.
fn hello(cloud: &str, extra: &[&str], cache: &std::path::Path) -> Output {
    let mut args = vec!["hello", "--cloud", cloud, "--node", NODE];
    args.extend_from_slice(extra);
    tandem(&args, cache)
}

#[test]
fn missing_ca_certificate_names_the_file() {
    let cache = temp_cache("noca");
    let out = hello("127.0.0.1:4433", &[], &cache);
    assert_one_line_error(&out, "no CA certificate at");
}

#[test]
fn missing_device_certificate_names_the_issue_command() {
    let cache = cache_with_certificate("nodevice");
    let out = tandem(
        &["hello", "--cloud", "127.0.0.1:4433", "--node", "other-node"],
        &cache,
    );
    assert_one_line_error(&out, "tandem-cloud ca issue --node other-node");
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn malformed_address_is_one_line_error() {
    let cache = cache_with_certificate("badaddr");
    let out = hello("no-port-here", &[], &cache);
    assert_one_line_error(&out, "invalid cloud address 'no-port-here'");
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn unreachable_cloud_times_out_with_one_line_error() {
    let cache = cache_with_certificate("unreachable");
    // A bound UDP socket that never answers: the handshake cannot complete.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = hello(&addr, &["--timeout", "0.5"], &cache);
    assert_one_line_error(&out, &format!("no answer from {addr}"));
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn non_pem_trust_file_is_one_line_error() {
    let cache = cache_with_certificate("notpem");
    let bogus = cache.join("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let out = hello("127.0.0.1:4433", &["--ca", bogus.to_str().unwrap()], &cache);
    assert_one_line_error(&out, "bogus.pem");
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn bad_timeout_is_one_line_error() {
    let cache = cache_with_certificate("timeout");
    let out = hello("127.0.0.1:4433", &["--timeout", "0"], &cache);
    assert_one_line_error(&out, "--timeout");
    let _ = std::fs::remove_dir_all(cache);
}
