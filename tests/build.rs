//! Emits every catalogue kernel, and every kernel of
//! `tests/regressions/` (random kernels that once exposed a bug), through
//! the ahead-of-time back end into `OUT_DIR/aot_catalogue.rs` (fused and
//! unfused plans in `f32`, the fused plan in `f64`), which `tests/aot.rs`
//! includes: they exercise `passfold_aot::emit_items` and the generated
//! code is compiled by this crate's build.

use std::fmt::Write as _;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=../kernels");
    println!("cargo::rerun-if-changed=../aot/src");
    println!("cargo::rerun-if-changed=tests/regressions");
    let mut kernels: Vec<(String, String)> = passfold_kernels::CATALOGUE
        .iter()
        .map(|k| (k.name.to_string(), k.source.to_string()))
        .collect();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir("tests/regressions")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "pf"));
    files.sort();
    for path in files {
        let stem = path
            .file_stem()
            .map_or(String::new(), |s| s.to_string_lossy().into_owned());
        if let Ok(src) = std::fs::read_to_string(&path) {
            kernels.push((format!("reg_{stem}"), src));
        }
    }
    let mut out = String::new();
    let mut arms = String::new();
    let mut levels = String::new();
    let mut threads = String::new();
    let mut failures = Vec::new();
    for (name, source) in &kernels {
        for (variant, float, unfused) in [
            ("fused_f32", None, false),
            ("unfused_f32", None, true),
            ("fused_f64", Some(passfold_dsl::ScalarType::F64), false),
        ] {
            let opts = passfold_dsl::LowerOptions {
                float,
                ..Default::default()
            };
            let Ok(kernel) = passfold_dsl::check(source, &opts) else {
                failures.push(format!("{name} {variant}: does not check"));
                continue;
            };
            let plan = passfold_dsl::plan(
                &kernel,
                passfold_dsl::PlanOptions {
                    unfused,
                    wide: true,
                    ..Default::default()
                },
            );
            let aot = passfold_aot::Options {
                source: Some(source.clone()),
                test_entry: true,
            };
            match passfold_aot::emit_items(&plan, &aot) {
                Ok(items) => {
                    let module = format!("{name}_{variant}");
                    let _ = writeln!(
                        out,
                        "#[allow(non_snake_case, non_upper_case_globals, unused, unused_mut, unused_assignments, unused_parens, unused_braces, clippy::all)]\npub mod {module} {{ {items} }}"
                    );
                    let _ = writeln!(
                        arms,
                        "(\"{name}\", \"{variant}\") => Some(|level, e, a, p| {module}::call_f64(level, 1, e, a, p).map_err(|e| e.to_string())),"
                    );
                    let _ = writeln!(
                        threads,
                        "(\"{name}\", \"{variant}\") => Some(({module}::ROWS_SPLIT, |t, e, a, p| {module}::call_f64(3, t, e, a, p).map_err(|e| e.to_string()))),"
                    );
                    let _ = writeln!(
                        levels,
                        "(\"{name}\", \"{variant}\") => Some({module}::level()),"
                    );
                }
                Err(e) => failures.push(format!("{name} {variant}: {e}")),
            }
        }
    }
    let _ = writeln!(
        out,
        "/// `call_f64` of the AOT module of a catalogue kernel's variant.\npub fn aot_entry(name: &str, variant: &str) -> Option<AotEntry> {{ match (name, variant) {{ {arms} _ => None }} }}"
    );
    let _ = writeln!(
        out,
        "/// `ROWS_SPLIT` and `call_f64` with a thread count (`call_threads`) of a variant.\npub fn aot_threads(name: &str, variant: &str) -> Option<(bool, AotThreads)> {{ match (name, variant) {{ {threads} _ => None }} }}"
    );
    let _ = writeln!(
        out,
        "/// The instruction level the AOT module of a variant runs at.\npub fn aot_level(name: &str, variant: &str) -> Option<&'static str> {{ match (name, variant) {{ {levels} _ => None }} }}"
    );
    let _ = writeln!(
        out,
        "/// Kernels the AOT back end refused.\npub const AOT_FAILURES: &[&str] = &{failures:?};"
    );
    let path = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("aot_catalogue.rs");
    std::fs::write(path, out).expect("OUT_DIR is writable");
}
