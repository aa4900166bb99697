//! Emits softmax's online plan (running max, `exp` recomputed in the output
//! sweep: two sweeps, 12 bytes per element) through the ahead-of-time back
//! end into `OUT_DIR/softmax_online.rs`, for the `aot_online` variant of
//! `benches/aot.rs` (`kernel!` always takes the default plan).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=../kernels/softmax.pf");
    println!("cargo::rerun-if-changed=../aot/src");
    let entry = passfold_kernels::get("softmax").expect("softmax is in the catalogue");
    let kernel = passfold_dsl::check(entry.source, &Default::default()).expect("softmax checks");
    let plan = passfold_dsl::plan(
        &kernel,
        passfold_dsl::PlanOptions {
            exp_shift: passfold_dsl::fuse::ExpShift::RunningMax,
            reload: passfold_dsl::fuse::Reload::Recompute,
            ..Default::default()
        },
    );
    let items = passfold_aot::emit_items(&plan, &Default::default()).expect("softmax emits");
    let text = format!(
        "#[allow(non_snake_case, non_upper_case_globals, unused, unused_mut, unused_assignments, unused_parens, unused_braces, clippy::all)]\npub mod softmax_online {{ {items} }}"
    );
    let path = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("softmax_online.rs");
    std::fs::write(path, text).expect("OUT_DIR is writable");
}
