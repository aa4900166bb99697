//! The IR verifier: checks the invariants of [`crate::ir`].
//!
//! A failure is a compiler bug, not a user error, so it panics with the
//! kernel's text (Cranelift's verifier errors "always represent a bug").

use crate::ir::*;

/// Panics if `kernel` breaks an invariant of the IR.
pub fn verify(kernel: &Kernel) {
    if let Err(msg) = check(kernel) {
        panic!("passfold internal error: IR verification failed: {msg}\n{kernel}");
    }
}

/// The invariants, as a `Result` (for tests).
pub fn check(kernel: &Kernel) -> Result<(), String> {
    let n = kernel.nodes.len();
    if kernel.node_types.len() != n || kernel.node_spans.len() != n {
        return Err("side tables and arena differ in length".into());
    }
    if kernel.extents.len() > 64 {
        return Err("more than 64 extents".into());
    }
    for (h, node) in kernel.nodes.iter() {
        for op in node.operands() {
            if op >= h {
                return Err(format!("{h} uses {op}, which is not earlier"));
            }
        }
        if let Node::Load { tensor, index } = node {
            let t = kernel
                .tensors
                .get(tensor.0 as usize)
                .ok_or_else(|| format!("{h} reads a missing tensor"))?;
            if t.dims.len() != index.len() {
                return Err(format!("{h} indexes `{}` with the wrong rank", t.name));
            }
        }
    }
    let free = kernel.free_indices();
    for (s, stmt) in kernel.stmts.iter().enumerate() {
        if stmt.value.index() >= n {
            return Err(format!("statement {s} has a missing value"));
        }
        let allowed = stmt.indices.iter().fold(0u64, |acc, e| acc | 1 << e.0);
        if free[stmt.value.index()] & !allowed != 0 {
            return Err(format!("statement {s} uses an index it does not bind"));
        }
        if kernel.ty(stmt.value) != kernel.tensor(stmt.tensor).ty {
            return Err(format!("statement {s} stores a value of another type"));
        }
    }
    Ok(())
}
