//! A work estimate of a plan at given extents, for choosing between plans
//! of one kernel at run time ([`crate::Plan::prefers_variant`]).
//!
//! The unit is one scalar operation of a loop body (a load, an add, a
//! compare); transcendental functions count [`TRANSCENDENTAL`], and a
//! Toeplitz product by FFT counts [`FFT`] per `N·log2 N` of its transform
//! size `N`, per vector. Loops multiply their bodies by their trip counts;
//! a branch counts its condition and a quarter of its body (branches in
//! sweeps are taken rarely). Only ratios between plans of the same kernel
//! matter, so vector width cancels out.

use crate::arena::Handle;
use crate::ir::*;
use crate::lir::Op;
use crate::plan::Plan;

/// The cost of `exp`, `log` and the like, in scalar operations.
pub const TRANSCENDENTAL: f64 = 8.0;

/// The cost of one Toeplitz product by FFT, per `N·log2 N` (`N` the
/// transform size, the power of two at least `n_i + n_j - 1`).
///
/// Calibrated on `kernelized_attention_rpe` with `c = e = f = 16`
/// (`passfold bench kernels/kernelized_attention_rpe.pf --size i=N --size
/// j=N --size c=16 --size e=16 --size f=16 --range 0.5`, candidates
/// "Toeplitz direct" and "Toeplitz by FFT"): the two forms took the same
/// time at `N = 256` (1.198 and 1.219 ms); at 64 the direct form was 3.1×
/// faster, at 1024 the FFT form 3.3× faster. With this constant the model's
/// ratios are 0.4, 1.0 and 3.1 there.
pub const FFT: f64 = 11.0;

/// The argument bytes of a call above which a row split across threads
/// takes the plan's [`Plan::split_form`]: about this machine's last-level
/// cache (32 MiB), where the measured crossover lies (softmax: 4,194,304
/// elements, 32 MiB of `x` and `y`, the same either way).
pub const SPLIT_FORM_MIN_BYTES: u64 = 32 << 20;

/// The estimated work of `plan` with these extents (by extent id).
pub fn work(plan: &Plan, extents: &[i64]) -> f64 {
    ops_work(&plan.kernel, &plan.program.body, extents, &[])
}

fn extent(extents: &[i64], e: ExtentId) -> f64 {
    extents.get(e.0 as usize).copied().unwrap_or(0).max(0) as f64
}

/// `blocks`: the enclosing blocked loops (`LoopCode::Blocks`) and their
/// block sizes; a ranged loop over a blocked index runs at most one block.
/// The top-level branches of a block's body (its full-block test, its
/// `-inf` guard) count in full, other branches a quarter.
fn ops_work(kernel: &Kernel, ops: &[Op], extents: &[i64], blocks: &[(ExtentId, f64)]) -> f64 {
    ops_work_in(kernel, ops, extents, blocks, false)
}

fn ops_work_in(
    kernel: &Kernel,
    ops: &[Op],
    extents: &[i64],
    blocks: &[(ExtentId, f64)],
    block_body: bool,
) -> f64 {
    let mut total = 0.0;
    for op in ops {
        total += match op {
            Op::Barrier => 0.0,
            Op::Loop {
                index,
                range,
                body,
                code,
                ..
            } => {
                let n = extent(extents, *index);
                let block = blocks.iter().rev().find(|(e, _)| e == index).map(|b| b.1);
                let trips = match range {
                    Some((a, b)) => match (&kernel.nodes[*a], &kernel.nodes[*b]) {
                        (Node::ConstInt(a), Node::ConstInt(b)) => ((*b - *a).max(0) as f64).min(n),
                        _ => block.map_or(n, |size| size.min(n)),
                    },
                    None => n,
                };
                if let crate::vector::LoopCode::Blocks(size) = code {
                    let size = f64::from((*size).max(1));
                    let mut inner = blocks.to_vec();
                    inner.push((*index, size));
                    (trips / size).ceil() * ops_work_in(kernel, body, extents, &inner, true)
                } else {
                    trips * ops_work(kernel, body, extents, blocks)
                }
            }
            Op::If { cond, then } => {
                let share = if block_body { 1.0 } else { 0.25 };
                node_work(kernel, *cond, extents)
                    + share * ops_work_in(kernel, then, extents, blocks, false)
            }
            Op::Set { value, .. } | Op::Store { value, .. } => {
                1.0 + node_work(kernel, *value, extents)
            }
            Op::Toeplitz { out, row, col, .. } => {
                let (n_i, n_j) = (extent(extents, *row), extent(extents, *col));
                let t = kernel.tensor(*out);
                let vectors: f64 = t.dims[..t.dims.len() - 1]
                    .iter()
                    .map(|d| {
                        d.0.terms
                            .iter()
                            .map(|(e, _)| extent(extents, *e))
                            .product::<f64>()
                    })
                    .product();
                let n = (n_i + n_j - 1.0).max(1.0);
                let size = (n as u64).next_power_of_two() as f64;
                vectors * (FFT * size * size.log2().max(1.0) + n_i + n_j)
            }
        };
    }
    total
}

fn node_work(kernel: &Kernel, h: Handle<Node>, extents: &[i64]) -> f64 {
    let node = &kernel.nodes[h];
    let own = match node {
        Node::ConstFloat(_)
        | Node::ConstInt(_)
        | Node::Param(_)
        | Node::IndexValue(_)
        | Node::ExtentLen(_)
        | Node::Var(_) => return 0.0,
        Node::Unary(
            UnOp::Exp
            | UnOp::ExpNonPos
            | UnOp::Exp2
            | UnOp::Log
            | UnOp::Log1p
            | UnOp::Expm1
            | UnOp::Tanh
            | UnOp::Sigmoid
            | UnOp::Softplus,
            _,
        ) => TRANSCENDENTAL,
        Node::Powf(..) => TRANSCENDENTAL,
        Node::Reduce { axes, arg, .. } => {
            let trips: f64 = axes.iter().map(|a| extent(extents, *a)).product();
            return trips * (1.0 + node_work(kernel, *arg, extents));
        }
        _ => 1.0,
    };
    own + node
        .operands()
        .iter()
        .map(|o| node_work(kernel, *o, extents))
        .sum::<f64>()
}
