//! `kernel!` compile errors: each malformed kernel in `tests/compile_fail/`
//! fails to compile with the run-time checker's message at the offending
//! token (messages and spans pinned in the `.stderr` files).

#[test]
fn malformed_kernels_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail(concat!(env!("CARGO_MANIFEST_DIR"), "/compile_fail/*.rs"));
}
