//! Division by a loop-invariant divisor as multiplication by its reciprocal.
//!
//! A division costs several times a multiplication (softmax's output sweep
//! `exp(x - m) / s` spent about a sixth of its time dividing), so a loop
//! whose values divide by a value that does not change inside it (a
//! variable the loop does not assign, a parameter, a constant or an extent,
//! combined by arithmetic) computes, before the loop,
//!
//! - `k = 2^64` if `0 < |d| < 2^-126` (`2^-1022` for `f64`), `2^-64` if
//!   `2^126 < |d| < inf` (`2^1022`), else `1`;
//! - `r = 1 / (d·k)`,
//!
//! and divides as `(x·r)·k`. The scaling keeps `r` a normal number (a
//! subnormal divisor's reciprocal overflows, a huge one's is subnormal), so
//! the quotient is within 1.5 ULP of the correctly rounded `x / d` (one
//! rounding of `r`, one of the product; `·k` is exact unless the result is
//! subnormal, then within one subnormal ULP), and the special cases agree
//! with the division: `d = ±0` gives `r = ±inf` (`x/0` is `±inf`, `0/0`
//! NaN), `d = ±inf` gives `r = ±0`, NaN stays NaN.
//!
//! Scalar plans (`PlanOptions::scalar`) keep their divisions: they promise
//! the interpreter's results bit for bit.

use crate::arena::Handle;
use crate::ir::*;
use crate::lir::{Op, Program, sets_in, value_roots};
use crate::rules::Rewriter;
use std::collections::HashMap;

/// Rewrites every innermost loop of `program` as the module docs say.
pub fn divide_by_reciprocal(rw: &mut Rewriter, program: &mut Program) {
    let mut body = std::mem::take(&mut program.body);
    walk(rw, program, &mut body);
    program.body = body;
}

fn walk(rw: &mut Rewriter, program: &mut Program, ops: &mut Vec<Op>) {
    let mut out = Vec::with_capacity(ops.len());
    for mut op in ops.drain(..) {
        match &mut op {
            Op::Loop { body, .. } => {
                if body.iter().any(crate::lir::has_loop) {
                    walk(rw, program, body);
                } else {
                    // Innermost loops only: once-per-row divisions (a mean's
                    // `/ n`) are not worth their rounding.
                    let before = rewrite_loop(rw, program, body);
                    out.extend(before);
                }
            }
            Op::If { then, .. } => walk(rw, program, then),
            _ => {}
        }
        out.push(op);
    }
    *ops = out;
}

/// Rewrites the divisions by invariants in a loop's body; returns the
/// assignments to place before the loop.
fn rewrite_loop(rw: &mut Rewriter, program: &mut Program, body: &mut [Op]) -> Vec<Op> {
    let mut assigned = Vec::new();
    sets_in(body, &mut assigned);
    let mut roots = Vec::new();
    value_roots(body, &mut roots);
    // The float divisions reachable from the body's values, by divisor.
    let mut divisions: Vec<(Handle<Node>, Handle<Node>, Handle<Node>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = roots;
    while let Some(h) = stack.pop() {
        if !seen.insert(h) {
            continue;
        }
        let node = rw.kernel.nodes[h].clone();
        if let Node::Binary(BinOp::Div, a, d) = node
            && rw.kernel.ty(h).is_float()
            && invariant(&rw.kernel, d, &assigned)
        {
            divisions.push((h, a, d));
        }
        stack.extend(node.operands());
    }
    if divisions.is_empty() {
        return Vec::new();
    }
    let mut before = Vec::new();
    let mut factors: HashMap<Handle<Node>, (Handle<Node>, Handle<Node>)> = HashMap::new();
    let mut map = HashMap::new();
    for (h, a, d) in divisions {
        let ty = rw.kernel.ty(h);
        let (r, k) = match factors.get(&d) {
            Some(&f) => f,
            None => {
                let (min_normal, max_scaled) = if ty == ScalarType::F64 {
                    (f64::MIN_POSITIVE, 2f64.powi(1022))
                } else {
                    (f64::from(f32::MIN_POSITIVE), 2f64.powi(126))
                };
                let abs = rw.un(UnOp::Abs, d);
                let zero = rw.float(0.0, ty);
                let inf = rw.float(f64::INFINITY, ty);
                let lo = rw.float(min_normal, ty);
                let hi = rw.float(max_scaled, ty);
                let below = rw.cmp(CmpOp::Lt, abs, lo);
                let nonzero = rw.cmp(CmpOp::Ne, abs, zero);
                let tiny = rw.bin(BinOp::And, below, nonzero);
                let above = rw.cmp(CmpOp::Gt, abs, hi);
                let finite = rw.cmp(CmpOp::Ne, abs, inf);
                let huge = rw.bin(BinOp::And, above, finite);
                let up = rw.float(2f64.powi(64), ty);
                let down = rw.float(2f64.powi(-64), ty);
                let one = rw.float(1.0, ty);
                let k = rw.select(huge, down, one);
                let k = rw.select(tiny, up, k);
                let name = divisor_name(&rw.kernel, program, d);
                let k_var = program.var(format!("{name}.scale"), ty);
                before.push(Op::Set {
                    var: k_var,
                    value: k,
                });
                let k_read = rw.var(k_var, ty);
                let scaled = rw.bin(BinOp::Mul, d, k_read);
                let recip = rw.bin(BinOp::Div, one, scaled);
                let r_var = program.var(format!("{name}.recip"), ty);
                before.push(Op::Set {
                    var: r_var,
                    value: recip,
                });
                let f = (rw.var(r_var, ty), rw.var(k_var, ty));
                factors.insert(d, f);
                f
            }
        };
        let xr = rw.bin(BinOp::Mul, a, r);
        map.insert(h, rw.bin(BinOp::Mul, xr, k));
    }
    rw.replace_in_ops(body, &map);
    before
}

/// Whether `h` has the same value in every iteration of a loop assigning
/// `assigned`: constants, parameters, extents and variables it does not
/// assign, combined by arithmetic (no loads, reductions or index values).
fn invariant(k: &Kernel, h: Handle<Node>, assigned: &[VarId]) -> bool {
    let mut stack = vec![h];
    while let Some(h) = stack.pop() {
        match &k.nodes[h] {
            Node::ConstFloat(_) | Node::ConstInt(_) | Node::Param(_) | Node::ExtentLen(_) => {}
            Node::Var(v) if !assigned.contains(v) => {}
            n @ (Node::Unary(..)
            | Node::Binary(..)
            | Node::Cast(..)
            | Node::Cmp(..)
            | Node::Select(..)) => stack.extend(n.operands()),
            _ => return false,
        }
    }
    true
}

/// A readable name for a divisor's variables (`s` for `$s.acc`, `inv7`, ...).
fn divisor_name(k: &Kernel, program: &Program, d: Handle<Node>) -> String {
    match &k.nodes[d] {
        Node::Var(v) => program.vars[v.0 as usize].name.clone(),
        Node::Param(p) => k.params[p.0 as usize].name.clone(),
        _ => "div".to_string(),
    }
}
