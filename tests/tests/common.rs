//! Render helpers shared by the tests: each boundary has one, and the tests
//! are data.

use passfold_dsl::{LowerOptions, PlanOptions};

/// The `Display` text of the checked kernel, or the rendered diagnostics.
pub fn ir_text(src: &str) -> String {
    match passfold_dsl::check(src, &LowerOptions::default()) {
        Ok(k) => k.to_string(),
        Err(d) => d.render("kernel.pf", src),
    }
}

/// The plan text, or the rendered diagnostics.
pub fn plan_text(src: &str) -> String {
    match passfold_dsl::compile(src, &LowerOptions::default(), PlanOptions::default()) {
        Ok(p) => p.to_string(),
        Err(d) => d.render("kernel.pf", src),
    }
}

/// The rendered diagnostics of a kernel that must fail to check, with the
/// first one's message and 1-based line and column.
pub fn first_error(src: &str) -> (String, usize, usize, String) {
    let res = std::panic::catch_unwind(|| passfold_dsl::check(src, &LowerOptions::default()));
    let res = res.unwrap_or_else(|_| panic!("the checker panicked on:\n{src}"));
    let Err(diags) = res else {
        panic!("expected an error for:\n{src}");
    };
    let first = &diags.0[0];
    let (line, col) = first.span().line_col(src);
    (first.message.clone(), line, col, diags.render("kernel.pf", src))
}
