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
    let init = cloud(&["ca", "init"], &cache);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = cloud(&["serve", "--listen", &addr], &cache);
    assert_one_line_error(&out, &format!("cannot listen on {addr}"));
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn missing_ca_is_one_line_error_naming_the_directory_and_the_fix() {
    let cache = temp_cache("noca");
    let out = cloud(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--pki",
            "/nonexistent/pki",
        ],
        &cache,
    );
    assert_one_line_error(&out, "ca init --pki /nonexistent/pki");
}

#[test]
fn ca_init_refuses_to_overwrite_and_issue_validates_names() {
    let cache = temp_cache("ca");
    assert!(cloud(&["ca", "init"], &cache).status.success());
    assert_one_line_error(&cloud(&["ca", "init"], &cache), "a CA already exists");
    let bad = cloud(&["ca", "issue", "--node", "bad name!"], &cache);
    assert_one_line_error(&bad, "not a valid device name");
    let out = cloud(&["ca", "issue", "--node", "pi-01"], &cache);
    assert!(out.status.success());
    let allowlist = std::fs::read_to_string(cache.join("pki/allowlist.txt")).unwrap();
    // `NAME SHA256`: the certificate is pinned by its fingerprint.
    let line = allowlist
        .lines()
        .find(|l| l.starts_with("pi-01 "))
        .expect("pi-01 listed");
    assert_eq!(line.len(), "pi-01 ".len() + 64, "{line}");
    // Upper case is refused so names compare exactly.
    assert_one_line_error(
        &cloud(&["ca", "issue", "--node", "PI-01"], &cache),
        "not a valid",
    );
    let _ = std::fs::remove_dir_all(cache);
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
