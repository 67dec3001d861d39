//! Link flags for the binaries.

use std::path::Path;
use std::process::Command;

/// Functions the server runs, hottest first (made by `build-data/symbol-order.sh`).
const SYMBOL_ORDER: &str = "build-data/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={SYMBOL_ORDER}");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations as a compact bitmap (DT_RELR, glibc 2.36+) instead of 24 bytes
        // each: the loader reads 8 KiB of them at start-up instead of 630 KiB, and those pages
        // no longer stay in the server's memory. GNU ld before 2.38 ignores the flag with a
        // warning.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    if std::env::var("PROFILE").as_deref() == Ok("release") && links_with_lld() {
        // The functions the server runs, laid out side by side at the start of the code
        // instead of spread over all of its 12 MB. The kernel maps code 64 KiB around each
        // page first run, so scattered functions kept most of the binary resident. Symbols
        // the list names that this build lacks (it was made from an older one) are skipped.
        let order =
            Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join(SYMBOL_ORDER);
        if order.is_file() {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                order.display()
            );
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
}

/// Whether the binaries are linked by rustc's own LLD, the only linker here that takes a
/// symbol ordering file: the default for `x86_64-unknown-linux-gnu` since Rust 1.90, unless
/// the build picks another linker.
fn links_with_lld() -> bool {
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if ["linker", "link-self-contained", "fuse-ld"]
        .iter()
        .any(|flag| flags.contains(flag))
    {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(output) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&output.stdout);
    let minor = version
        .lines()
        .find_map(|line| line.strip_prefix("release: 1."))
        .and_then(|rest| rest.split('.').next())
        .and_then(|minor| minor.parse::<u32>().ok());
    minor.is_some_and(|minor| minor >= 90)
}
