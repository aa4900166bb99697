//! The IR and plan text of every catalogue kernel, pinned.

use crate::common::{ir_text, plan_text};

#[test]
fn catalogue_ir_and_plan() {
    for k in passfold_kernels::CATALOGUE {
        let text = format!("{}\n{}", ir_text(k.source), plan_text(k.source));
        insta::assert_snapshot!(format!("ir_{}", k.name), text);
    }
}
