//! Malformed kernels: each gives the right diagnostic at the right line and
//! column, and none panics. The rendered text of all of them is one snapshot.

use crate::common::first_error;

/// `(name, source, message fragment, line, the token the error points at)`.
/// The expected column is that token's first occurrence on the line.
const CASES: &[(&str, &str, &str, usize, &str)] = &[
    (
        "unbound_index",
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {\n    y[b] = x[b, i];\n}",
        "index `i` is not bound here",
        2,
        "i]",
    ),
    (
        "extent_mismatch",
        "kernel k(x: f32[b, i], w: f32[j]) -> (y: f32[b, i]) {\n    y[b, i] = x[b, i] + w[i];\n}",
        "extent mismatch: dimension 0 of `w` has extent `j`, indexed by `i`",
        2,
        "i];",
    ),
    (
        "unknown_function",
        "kernel k(x: f32[i]) -> (y: f32[i]) {\n    y[i] = expo(x[i]);\n}",
        "unknown function `expo`",
        2,
        "expo",
    ),
    (
        "mismatched_types",
        "kernel k(x: f32[i], z: f64[i]) -> (y: f32[i]) {\n    y[i] = x[i] + z[i];\n}",
        "mismatched types in `+`: `f32` and `f64`",
        2,
        "x[i] +",
    ),
    (
        "write_input",
        "kernel k(x: f32[i]) -> (y: f32[i]) {\n    x[i] = 0.0;\n    y[i] = x[i];\n}",
        "cannot write input `x`",
        2,
        "x[i] = 0",
    ),
    (
        "read_output_before_write",
        "kernel k(x: f32[b, i]) -> (y: f32[b, i]) {\n    m[b] = max[i](y[b, i]);\n    y[b, i] = x[b, i] - m[b];\n}",
        "output `y` is read before it is written",
        2,
        "y[b, i]",
    ),
    (
        "reduce_unused_index",
        "kernel k(x: f32[b, i], w: f32[j]) -> (y: f32[b, i]) {\n    y[b, i] = sum[j](x[b, i]);\n}",
        "the reduction is over `j`, which its argument does not use",
        2,
        "j]",
    ),
    (
        "missing_semicolon",
        "kernel k(x: f32[i]) -> (y: f32[i]) {\n    y[i] = x[i]\n}",
        "expected `;`",
        3,
        "}",
    ),
    (
        "unbalanced_delimiter",
        "kernel k(x: f32[i]) -> (y: f32[i]) {\n    y[i] = exp(x[i];\n}",
        "unclosed `(`",
        2,
        "(x[i];",
    ),
    (
        "wrong_rank",
        "kernel k(x: f32[b, i]) -> (y: f32[b]) {\n    y[b] = x[b];\n}",
        "`x` has 2 dimension(s) but is indexed with 1",
        2,
        "x[b]",
    ),
    (
        "affine_out_of_range",
        "kernel k(x: f32[i]) -> (y: f32[i]) {\n    y[i] = x[i + 1] - x[i];\n}",
        "subscript `i + 1` may fall outside dimension 0 of `x` (`i`)",
        2,
        "i + 1",
    ),
    (
        "unknown_type",
        "kernel k(x: f16[i]) -> (y: f32[i]) {\n    y[i] = x[i];\n}",
        "unknown element type `f16`",
        1,
        "f16",
    ),
    (
        "output_never_written",
        "kernel k(x: f32[i]) -> (y: f32[i], z: f32[i]) {\n    y[i] = x[i];\n}",
        "output `z` is never written",
        1,
        "z:",
    ),
    (
        "chained_comparison",
        "kernel k(x: f32[i]) -> (y: f32[i]) {\n    y[i] = select(0.0 < x[i] < 1.0, x[i], 0.0);\n}",
        "comparisons cannot be chained",
        2,
        "< 1.0",
    ),
    (
        "integer_division",
        "kernel k(x: f32[i, j]) -> (y: f32[i, j]) {\n    y[i, j] = x[i, j] * (i / j);\n}",
        "integer division is not supported",
        2,
        "(i / j)",
    ),
    (
        "select_needs_bool",
        "kernel k(x: f32[i]) -> (y: f32[i]) {\n    y[i] = select(x[i], 1.0, 0.0);\n}",
        "expected a comparison (`bool`)",
        2,
        "x[i],",
    ),
    (
        "topk_needs_constant",
        "kernel k(x: f32[b, i], n: f32) -> (y: f32[b]) {\n    y[b] = topk[i](x[b, i], n);\n}",
        "`topk` needs a positive integer constant `k`",
        2,
        "n)",
    ),
    (
        "duplicate_argument",
        "kernel k(x: f32[i], x: f32[i]) -> (y: f32[i]) {\n    y[i] = x[i];\n}",
        "`x` is declared twice",
        1,
        "x: f32[i])",
    ),
    (
        "index_bound_twice",
        "kernel k(x: f32[b, i]) -> (y: f32[b, i]) {\n    y[b, i] = sum[i](x[b, i]);\n}",
        "index `i` is already bound here",
        2,
        "i](",
    ),
    (
        "not_a_kernel",
        "fn softmax(x: f32[i]) {}",
        "expected `kernel`",
        1,
        "fn",
    ),
];

#[test]
fn malformed_kernels_point_at_the_right_place() {
    let mut rendered = String::new();
    for &(name, src, message, line, token) in CASES {
        let (got, got_line, got_col, text) = first_error(src);
        let line_text = src
            .lines()
            .nth(line - 1)
            .unwrap_or_else(|| panic!("{name}: no line {line}"));
        let col = line_text
            .find(token)
            .unwrap_or_else(|| panic!("{name}: `{token}` not on line {line}"))
            + 1;
        assert!(
            got.contains(message),
            "{name}: message `{got}` lacks `{message}`"
        );
        assert_eq!(
            (got_line, got_col),
            (line, col),
            "{name}: wrong place for `{got}`\n{text}"
        );
        rendered.push_str(&format!("=== {name}\n{text}\n"));
    }
    insta::assert_snapshot!("diagnostics", rendered);
}

#[test]
fn garbage_never_panics() {
    // A few hand-made nasties; the fuzz target does the rest.
    let inputs = [
        "",
        "kernel",
        "kernel k",
        "kernel k(",
        "kernel k() {}",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = x[i] + ; }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = x[99999999999999999999]; }",
        "kernel k(x: f32[9223372036854775807 * i]) -> (y: f32[i]) { y[i] = 1.0; }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = x[i * 9223372036854775807 * 4]; }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = pow(x[i], x[i]); }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = len(q); }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = topk[i](x[i], 0); }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = sum[](x[i]); }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = 'a'; }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = \"s\"; }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = 1.0f32; }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = x[i] } trailing",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = -----------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------x[i]; }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = 1 < 2; }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { y[i] = é; }",
        "kernel k(x: f32[i]) -> (y: f32[i]) { é[i] = x[i]; }",
        "kernel k(x: f32) -> (y: f32) { y = x; }",
        "kernel k(x: f32[]) -> (y: f32[]) { y = x; }",
    ];
    for src in inputs {
        let res = std::panic::catch_unwind(|| passfold_dsl::check(src, &Default::default()));
        let Ok(res) = res else {
            panic!("panicked on {src:?}")
        };
        if let Err(d) = res {
            for diag in &d.0 {
                let s = diag.span();
                assert!(
                    s.start as usize <= src.len() && s.end as usize <= src.len(),
                    "span outside input for {src:?}"
                );
                let _ = d.render("k.pf", src);
            }
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 300;
    let src = format!(
        "kernel k(x: f32[i]) -> (y: f32[i]) {{\n    y[i] = {}x[i]{};\n}}",
        "(".repeat(depth),
        ")".repeat(depth)
    );
    let (message, line, col, _) = first_error(&src);
    assert!(message.contains("nested deeper than"), "{message}");
    assert_eq!(line, 2);
    assert!(col > 10);
}
