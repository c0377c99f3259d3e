use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/spf.bpf.c";

fn main() {
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("spf.skel.rs");
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args(["-O2", "-g", "-Wall", "-Wno-unused-function"])
        .build_and_generate(&out)
        .unwrap_or_else(|e| panic!("building the BPF program {SRC} with clang: {e:#}"));
    // The program and every part and header it includes.
    println!("cargo:rerun-if-changed=src/bpf");
}
