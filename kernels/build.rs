//! Which SIMD backend the kernels compile: `tandem_neon` on aarch64 with NEON,
//! `tandem_sse2` on x86_64 with SSE2, neither with the `portable` feature (the scalar
//! kernels everywhere: the baseline of the instruction-count benchmarks).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tandem_neon)");
    println!("cargo::rustc-check-cfg=cfg(tandem_sse2)");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_PORTABLE").is_some() {
        return;
    }
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let has = |feature: &str| features.split(',').any(|f| f == feature);
    if arch == "aarch64" && has("neon") {
        println!("cargo::rustc-cfg=tandem_neon");
    }
    if arch == "x86_64" && has("sse2") {
        println!("cargo::rustc-cfg=tandem_sse2");
    }
}
