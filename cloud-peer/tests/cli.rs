//! The `tandem-cloud` binary: bad input gives one clear line and a non-zero exit code.

use std::process::{Command, Output};

fn cloud(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem-cloud"))
        .args(args)
        .env("TANDEM_CACHE", cache)
        .env_remove("RUST_LOG")
        .output()
        .expect("run tandem-cloud")
}

fn temp_cache(test: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tandem-cloud-cli-{test}-{}", std::process::id()))
}

/// Exit code 1 and exactly one `error:` line naming `needle`, no panic.
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

#[test]
fn port_in_use_is_one_line_error() {
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let cache = temp_cache("busy");
    let out = cloud(&["serve", "--listen", &addr], &cache);
    assert_one_line_error(&out, &format!("cannot listen on {addr}"));
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn missing_certificate_is_one_line_error_naming_the_file() {
    let cache = temp_cache("nocert");
    let out = cloud(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            "/nonexistent/c.pem",
            "--key",
            "/nonexistent/k.pem",
        ],
        &cache,
    );
    assert_one_line_error(&out, "/nonexistent/c.pem");
}

#[test]
fn malformed_listen_address_is_a_usage_error() {
    let cache = temp_cache("badaddr");
    let out = cloud(&["serve", "--listen", "not-an-address"], &cache);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn help_describes_the_serve_command() {
    let out = cloud(&["--help"], &temp_cache("help"));
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("serve"), "{stdout}");
    assert!(stdout.contains("QUIC"), "{stdout}");
}
