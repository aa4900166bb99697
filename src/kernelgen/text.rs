//! Kernel text of a [`Spec`]: its `Display`, which declares exactly the
//! inputs, parameters and extents the statements use.

use super::*;
use std::fmt;

impl Spec {
    fn stmt_name(&self, k: usize) -> String {
        let s = &self.stmts[k];
        let nth = self.stmts[..k]
            .iter()
            .filter(|t| t.output == s.output)
            .count();
        format!("{}{nth}", if s.output { "y" } else { "q" })
    }

    fn write_expr(&self, e: &Expr, out: &mut String, used: &mut Used) {
        use std::fmt::Write;
        match e {
            Expr::Num(v) => out.push_str(&num_text(*v)),
            Expr::Param(n) => {
                used.params = used.params.max(*n as usize + 1);
                let _ = write!(out, "a{n}");
            }
            Expr::Index(ix) => {
                used.extents |= ix.bit();
                out.push_str(ix.name());
            }
            Expr::Len(ix) => {
                used.extents |= ix.bit();
                let _ = write!(out, "len({})", ix.name());
            }
            Expr::Load(input, subs) => {
                used.inputs |= 1 << *input as u8;
                out.push_str(input.name());
                out.push('[');
                for (n, s) in subs.iter().enumerate() {
                    if n > 0 {
                        out.push_str(", ");
                    }
                    match s {
                        Sub::Ix(ix) => out.push_str(ix.name()),
                        Sub::Affine(ix, k, c) => {
                            let _ = match (k, c) {
                                (1, c) if *c >= 0 => write!(out, "{} + {c}", ix.name()),
                                (1, c) => write!(out, "{} - {}", ix.name(), -c),
                                (k, c) if *c >= 0 => write!(out, "{k} * {} + {c}", ix.name()),
                                (k, c) => write!(out, "{k} * {} - {}", ix.name(), -c),
                            };
                        }
                        Sub::Gather => {
                            used.inputs |= 1 << Input::T as u8;
                            out.push_str("t[b]");
                        }
                        Sub::Rel => out.push_str("j - i"),
                    }
                }
                out.push(']');
            }
            Expr::Temp(k) => {
                out.push_str(&self.stmt_name(*k));
                let s = &self.stmts[*k];
                if !s.indices.is_empty() {
                    let names: Vec<&str> = s.indices.iter().map(|i| i.name()).collect();
                    let _ = write!(out, "[{}]", names.join(", "));
                }
            }
            Expr::Unary(Fn1::Neg, a) => {
                out.push_str("-(");
                self.write_expr(a, out, used);
                out.push(')');
            }
            Expr::Unary(f, a) => {
                out.push_str(f.name());
                out.push('(');
                self.write_expr(a, out, used);
                out.push(')');
            }
            Expr::Binary(op @ (Op2::Min | Op2::Max), a, b) => {
                out.push_str(if *op == Op2::Min { "min(" } else { "max(" });
                self.write_expr(a, out, used);
                out.push_str(", ");
                self.write_expr(b, out, used);
                out.push(')');
            }
            Expr::Binary(op, a, b) => {
                out.push('(');
                self.write_expr(a, out, used);
                out.push_str(match op {
                    Op2::Add => " + ",
                    Op2::Sub => " - ",
                    Op2::Mul => " * ",
                    _ => " / ",
                });
                self.write_expr(b, out, used);
                out.push(')');
            }
            Expr::Select(c, a, b) => {
                out.push_str("select(");
                self.write_cond(c, out, used);
                out.push_str(", ");
                self.write_expr(a, out, used);
                out.push_str(", ");
                self.write_expr(b, out, used);
                out.push(')');
            }
            Expr::Pow(a, n) => {
                out.push_str("pow(");
                self.write_expr(a, out, used);
                let _ = write!(out, ", {n})");
            }
            Expr::Reduce(op, axes, a) => {
                let name = match op {
                    Red::Sum => "sum",
                    Red::Max => "max",
                    Red::Min => "min",
                    Red::Mean => "mean",
                    Red::TopK(_) => "topk",
                };
                let names: Vec<&str> = axes.iter().map(|i| i.name()).collect();
                let _ = write!(out, "{name}[{}](", names.join(", "));
                self.write_expr(a, out, used);
                if let Red::TopK(k) = op {
                    let _ = write!(out, ", {k}");
                }
                out.push(')');
            }
        }
    }

    fn write_cond(&self, c: &Cond, out: &mut String, used: &mut Used) {
        match c {
            Cond::Cmp(op, a, b) => {
                self.write_expr(a, out, used);
                out.push(' ');
                out.push_str(op.symbol());
                out.push(' ');
                self.write_expr(b, out, used);
            }
            Cond::Not(a) => {
                out.push_str("!(");
                self.write_cond(a, out, used);
                out.push(')');
            }
            Cond::And(a, b) | Cond::Or(a, b) => {
                out.push('(');
                self.write_cond(a, out, used);
                out.push_str(if matches!(c, Cond::And(..)) {
                    ") && ("
                } else {
                    ") || ("
                });
                self.write_cond(b, out, used);
                out.push(')');
            }
        }
    }
}

#[derive(Default)]
struct Used {
    inputs: u8,
    params: usize,
    extents: u8,
}

fn num_text(v: f64) -> String {
    if v == f64::INFINITY {
        "inf".into()
    } else if v == f64::NEG_INFINITY {
        "(-inf)".into()
    } else if v < 0.0 {
        format!("({v:?})")
    } else {
        format!("{v:?}")
    }
}

impl fmt::Display for Spec {
    /// The kernel text: inputs in menu order, then parameters; every extent
    /// a statement uses gets a plain dimension (a one-dimensional `e_*`
    /// input when no read input has it), so calls can bind it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut used = Used::default();
        let mut body = String::new();
        for (k, s) in self.stmts.iter().enumerate() {
            let mut line = format!("    {}", self.stmt_name(k));
            if !s.indices.is_empty() {
                let names: Vec<&str> = s.indices.iter().map(|i| i.name()).collect();
                line.push_str(&format!("[{}]", names.join(", ")));
            }
            line.push_str(" = ");
            self.write_expr(&s.value, &mut line, &mut used);
            line.push_str(";\n");
            body.push_str(&line);
            for ix in &s.indices {
                used.extents |= ix.bit();
            }
        }
        let mut args: Vec<String> = Vec::new();
        let mut plain = 0u8;
        for input in ALL_INPUTS {
            if used.inputs & (1 << input as u8) != 0 {
                args.push(input.decl("f32"));
                plain |= input.plain();
                used.extents |= input.needs();
            }
        }
        let mut outs: Vec<String> = Vec::new();
        for (k, s) in self.stmts.iter().enumerate().filter(|(_, s)| s.output) {
            let names: Vec<&str> = s.indices.iter().map(|i| i.name()).collect();
            outs.push(format!("{}: f32[{}]", self.stmt_name(k), names.join(", ")));
            plain |= Stmt::mask(s);
        }
        for ix in ALL_IX {
            if used.extents & ix.bit() != 0 && plain & ix.bit() == 0 {
                args.push(format!("e_{}: f32[{}]", ix.name(), ix.name()));
            }
        }
        for n in 0..used.params {
            args.push(format!("a{n}: f32"));
        }
        writeln!(
            f,
            "kernel gen({}) -> ({}) {{",
            args.join(", "),
            outs.join(", ")
        )?;
        f.write_str(&body)?;
        f.write_str("}\n")
    }
}

impl Stmt {
    fn mask(&self) -> u8 {
        self.indices.iter().fold(0, |m, i| m | i.bit())
    }
}
