//! Link flags for the binaries.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations as a compact bitmap (DT_RELR, glibc 2.36+) instead of 24 bytes
        // each: the loader reads 8 KiB of them at start-up instead of 630 KiB, and those pages
        // no longer stay in the server's memory. GNU ld before 2.38 ignores the flag with a
        // warning.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
