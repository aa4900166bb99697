//! Shrinking: simpler variants of a failing [`Case`] (fewer statements,
//! smaller expressions, smaller extents, plainer inputs), each of which
//! still checks, and a greedy minimizer over them.

use super::*;

/// Every node of `e` in preorder.
fn preorder<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    out.push(e);
    match e {
        Expr::Unary(_, a) | Expr::Pow(a, _) | Expr::Reduce(_, _, a) => preorder(a, out),
        Expr::Binary(_, a, b) => {
            preorder(a, out);
            preorder(b, out);
        }
        Expr::Select(c, a, b) => {
            cond_preorder(c, out);
            preorder(a, out);
            preorder(b, out);
        }
        _ => {}
    }
}

fn cond_preorder<'a>(c: &'a Cond, out: &mut Vec<&'a Expr>) {
    match c {
        Cond::Cmp(_, a, b) => {
            preorder(a, out);
            preorder(b, out);
        }
        Cond::Not(a) => cond_preorder(a, out),
        Cond::And(a, b) | Cond::Or(a, b) => {
            cond_preorder(a, out);
            cond_preorder(b, out);
        }
    }
}

/// `e` with its preorder node number `target` replaced by `new`.
fn replace_at(e: &Expr, counter: &mut usize, target: usize, new: &Expr) -> Expr {
    let here = *counter;
    *counter += 1;
    if here == target {
        return new.clone();
    }
    let mut r = |a: &Expr| bx(replace_at(a, counter, target, new));
    match e {
        Expr::Unary(f, a) => Expr::Unary(*f, r(a)),
        Expr::Pow(a, n) => Expr::Pow(r(a), *n),
        Expr::Reduce(op, axes, a) => Expr::Reduce(*op, axes.clone(), r(a)),
        Expr::Binary(op, a, b) => {
            let a = r(a);
            let b = r(b);
            Expr::Binary(*op, a, b)
        }
        Expr::Select(c, a, b) => {
            let c = cond_replace(c, counter, target, new);
            let a = bx(replace_at(a, counter, target, new));
            let b = bx(replace_at(b, counter, target, new));
            Expr::Select(Box::new(c), a, b)
        }
        other => other.clone(),
    }
}

fn cond_replace(c: &Cond, counter: &mut usize, target: usize, new: &Expr) -> Cond {
    match c {
        Cond::Cmp(op, a, b) => {
            let a = bx(replace_at(a, counter, target, new));
            let b = bx(replace_at(b, counter, target, new));
            Cond::Cmp(*op, a, b)
        }
        Cond::Not(a) => Cond::Not(Box::new(cond_replace(a, counter, target, new))),
        Cond::And(a, b) => {
            let a = cond_replace(a, counter, target, new);
            Cond::And(Box::new(a), Box::new(cond_replace(b, counter, target, new)))
        }
        Cond::Or(a, b) => {
            let a = cond_replace(a, counter, target, new);
            Cond::Or(Box::new(a), Box::new(cond_replace(b, counter, target, new)))
        }
    }
}

/// Renumbers temporaries after removing statement `gone` (its reads become `1.0`).
fn drop_temp(e: &Expr, gone: usize) -> Expr {
    let d = |a: &Expr| bx(drop_temp(a, gone));
    match e {
        Expr::Temp(k) if *k == gone => Expr::Num(1.0),
        Expr::Temp(k) if *k > gone => Expr::Temp(k - 1),
        Expr::Unary(f, a) => Expr::Unary(*f, d(a)),
        Expr::Pow(a, n) => Expr::Pow(d(a), *n),
        Expr::Reduce(op, axes, a) => Expr::Reduce(*op, axes.clone(), d(a)),
        Expr::Binary(op, a, b) => Expr::Binary(*op, d(a), d(b)),
        Expr::Select(c, a, b) => Expr::Select(Box::new(cond_drop(c, gone)), d(a), d(b)),
        other => other.clone(),
    }
}

fn cond_drop(c: &Cond, gone: usize) -> Cond {
    match c {
        Cond::Cmp(op, a, b) => Cond::Cmp(*op, bx(drop_temp(a, gone)), bx(drop_temp(b, gone))),
        Cond::Not(a) => Cond::Not(Box::new(cond_drop(a, gone))),
        Cond::And(a, b) => Cond::And(Box::new(cond_drop(a, gone)), Box::new(cond_drop(b, gone))),
        Cond::Or(a, b) => Cond::Or(Box::new(cond_drop(a, gone)), Box::new(cond_drop(b, gone))),
    }
}

/// Simpler variants of a case, simplest first; each one checks.
pub fn shrink_candidates(case: &Case) -> Vec<Case> {
    let mut out = Vec::new();
    let spec = &case.spec;
    let n_out = spec.stmts.iter().filter(|s| s.output).count();
    // Whole statements.
    for k in 0..spec.stmts.len() {
        if spec.stmts[k].output && n_out == 1 {
            continue;
        }
        let mut stmts: Vec<Stmt> = Vec::new();
        for (n, s) in spec.stmts.iter().enumerate() {
            if n != k {
                stmts.push(Stmt {
                    indices: s.indices.clone(),
                    value: drop_temp(&s.value, k),
                    output: s.output,
                });
            }
        }
        out.push(Case {
            spec: Spec { stmts },
            ..case.clone()
        });
    }
    // Inputs and extents.
    if case.also_f64 {
        out.push(Case {
            also_f64: false,
            ..case.clone()
        });
    }
    if case.fill != Fill::Uniform(3.0) {
        out.push(Case {
            fill: Fill::Uniform(3.0),
            ..case.clone()
        });
    }
    for e in 0..3 {
        let n = case.extents[e];
        for smaller in [1, n / 2, n - 1] {
            if smaller >= 1 && smaller < n {
                let mut c = case.clone();
                c.extents[e] = smaller;
                out.push(c);
            }
        }
    }
    // Sub-expressions: replace a node by a child or a constant.
    for (k, s) in spec.stmts.iter().enumerate() {
        let mut nodes = Vec::new();
        preorder(&s.value, &mut nodes);
        for (n, node) in nodes.iter().enumerate() {
            let mut replacements: Vec<Expr> = Vec::new();
            match node {
                Expr::Unary(_, a) | Expr::Pow(a, _) | Expr::Reduce(_, _, a) => {
                    replacements.push((**a).clone())
                }
                Expr::Binary(_, a, b) | Expr::Select(_, a, b) => {
                    replacements.push((**a).clone());
                    replacements.push((**b).clone());
                }
                _ => {}
            }
            if let Expr::Reduce(op, axes, a) = node {
                if *op != Red::Sum {
                    replacements.push(Expr::Reduce(Red::Sum, axes.clone(), a.clone()));
                }
                if axes.len() > 1 {
                    for keep in axes {
                        replacements.push(Expr::Reduce(*op, vec![*keep], a.clone()));
                    }
                }
            }
            if !matches!(node, Expr::Num(v) if *v == 1.0 || *v == 0.0) {
                replacements.push(Expr::Num(1.0));
                replacements.push(Expr::Num(0.0));
            }
            for r in replacements {
                let mut c = case.clone();
                c.spec.stmts[k].value = replace_at(&s.value, &mut 0, n, &r);
                out.push(c);
            }
        }
    }
    out.retain(|c| {
        passfold_dsl::check(&c.spec.to_string(), &passfold_dsl::LowerOptions::default()).is_ok()
    });
    out
}

/// Greedily shrinks a failing case: takes the first candidate that still
/// fails until none does (at most `budget` checks).
pub fn minimize(case: &Case, fails: &mut dyn FnMut(&Case) -> bool, budget: usize) -> Case {
    let mut best = case.clone();
    let mut tries = 0;
    'outer: loop {
        for c in shrink_candidates(&best) {
            if tries >= budget {
                break 'outer;
            }
            tries += 1;
            if fails(&c) {
                best = c;
                continue 'outer;
            }
        }
        break;
    }
    best
}
