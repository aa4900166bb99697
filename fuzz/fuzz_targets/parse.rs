//! Parser and checker on arbitrary text: no panic, no hang, and every
//! diagnostic's span inside the input (the contract of `passfold_dsl::parse`
//! and `passfold_dsl::lower`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use passfold_dsl::LowerOptions;

fuzz_target!(|src: &str| {
    if let Err(diags) = passfold_dsl::check(src, &LowerOptions::default()) {
        assert!(!diags.0.is_empty(), "an error without a diagnostic");
        for d in &diags.0 {
            for (span, _) in &d.labels {
                assert!(
                    span.start <= span.end && span.end as usize <= src.len(),
                    "span {span:?} outside the input ({} bytes): {}",
                    src.len(),
                    d.message
                );
            }
        }
        // Rendering must not panic either.
        let _ = diags.render("fuzz.pf", src);
    }
});
