//! The stable text form of a [`Kernel`] (`passfold ir`).
//!
//! One item per line: the signature, the temporaries, then the nodes in arena
//! order, each statement printed right after the last node it uses.

use crate::ir::*;
use std::fmt;

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel {}(", self.name)?;
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            Ok(())
        };
        for t in self
            .tensors
            .iter()
            .filter(|t| matches!(t.kind, TensorKind::Input | TensorKind::InOut))
        {
            sep(f)?;
            self.write_tensor(f, t)?;
        }
        for p in &self.params {
            sep(f)?;
            write!(f, "{}: {}", p.name, p.ty)?;
        }
        for c in &self.consts {
            sep(f)?;
            write!(f, "const {}: i32 = {}", c.name, c.value)?;
        }
        write!(f, ") -> (")?;
        let outs: Vec<&Tensor> = self
            .tensors
            .iter()
            .filter(|t| t.kind == TensorKind::Output)
            .collect();
        for (i, t) in outs.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            self.write_tensor(f, t)?;
        }
        writeln!(f, ")")?;
        for t in self.tensors.iter().filter(|t| t.kind == TensorKind::Temp) {
            write!(f, "  temp ")?;
            self.write_tensor(f, t)?;
            writeln!(f)?;
        }
        let mut next = 0;
        for stmt in &self.stmts {
            while next <= stmt.value.index() {
                let h = crate::arena::Handle::from_index(next);
                write!(f, "  {h}: {} = ", self.ty(h))?;
                self.write_node(f, &self.nodes[h])?;
                writeln!(f)?;
                next += 1;
            }
            let t = self.tensor(stmt.tensor);
            write!(f, "  {}", t.name)?;
            self.write_indices(f, &stmt.indices)?;
            writeln!(f, " = {}", stmt.value)?;
        }
        Ok(())
    }
}

impl Kernel {
    fn write_tensor(&self, f: &mut fmt::Formatter<'_>, t: &Tensor) -> fmt::Result {
        let m = if t.kind == TensorKind::InOut {
            "mut "
        } else {
            ""
        };
        write!(f, "{}: {m}{}", t.name, t.ty)?;
        if !t.dims.is_empty() {
            write!(f, "[")?;
            for (i, d) in t.dims.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                d.0.write(f, &self.extents)?;
            }
            write!(f, "]")?;
        }
        if let Some(p) = t.pad {
            write!(f, " pad {}", FloatText(p))?;
        }
        Ok(())
    }

    /// Writes `[b, i]`.
    pub fn write_indices(&self, f: &mut impl fmt::Write, idx: &[ExtentId]) -> fmt::Result {
        if idx.is_empty() {
            return Ok(());
        }
        write!(f, "[")?;
        for (i, e) in idx.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}", self.extent(*e).name)?;
        }
        write!(f, "]")
    }

    /// Writes one node's right-hand side (`add %1, %2`).
    pub fn write_node(&self, f: &mut impl fmt::Write, node: &Node) -> fmt::Result {
        self.write_node_with(f, node, &|h| h.to_string())
    }

    /// Writes one node's right-hand side, naming operands with `name`.
    pub fn write_node_with(
        &self,
        f: &mut impl fmt::Write,
        node: &Node,
        name: &dyn Fn(crate::arena::Handle<Node>) -> String,
    ) -> fmt::Result {
        match node {
            Node::ConstFloat(bits) => write!(f, "const {}", FloatText(f64::from_bits(*bits))),
            Node::ConstInt(v) => write!(f, "const {v}"),
            Node::Param(p) => write!(f, "param {}", self.params[p.0 as usize].name),
            Node::IndexValue(e) => write!(f, "index {}", self.extent(*e).name),
            Node::ExtentLen(e) => write!(f, "len {}", self.extent(*e).name),
            Node::Var(v) => write!(f, "var v{}", v.0),
            Node::Load { tensor, index } => {
                write!(f, "load {}[", self.tensor(*tensor).name)?;
                for (i, idx) in index.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    match idx {
                        Index::Affine(a) => a.write(f, &self.extents)?,
                        Index::Gather(h) => write!(f, "{}", name(*h))?,
                    }
                }
                write!(f, "]")
            }
            Node::Unary(op, a) => write!(f, "{} {}", unop_name(*op), name(*a)),
            Node::Binary(op, a, b) => write!(f, "{} {}, {}", binop_name(*op), name(*a), name(*b)),
            Node::Cmp(op, a, b) => write!(f, "{} {}, {}", cmp_name(*op), name(*a), name(*b)),
            Node::Select(c, a, b) => write!(f, "select {}, {}, {}", name(*c), name(*a), name(*b)),
            Node::Powf(a, p) => write!(f, "pow {}, {}", name(*a), FloatText(f64::from_bits(*p))),
            Node::Cast(ty, a) => write!(f, "cast.{ty} {}", name(*a)),
            Node::Reduce { op, axes, arg } => {
                write!(f, "{}", reduce_name(*op))?;
                self.write_indices(f, axes)?;
                write!(f, " {}", name(*arg))
            }
        }
    }
}

/// A float printed so that it reads back exactly (`inf`, `-inf`, `nan`, `1.0`, `1e-30`).
pub struct FloatText(pub f64);

impl fmt::Display for FloatText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            write!(f, "nan")
        } else if v.is_infinite() {
            write!(f, "{}inf", if v < 0.0 { "-" } else { "" })
        } else {
            // Debug is the shortest text that reads back exactly.
            write!(f, "{v:?}")
        }
    }
}

/// The text name of a unary operation, as the DSL spells it.
pub fn unop_name(op: UnOp) -> &'static str {
    match op {
        UnOp::Neg => "neg",
        UnOp::Not => "not",
        UnOp::Exp => "exp",
        UnOp::Log => "log",
        UnOp::Log1p => "log1p",
        UnOp::Expm1 => "expm1",
        UnOp::Sqrt => "sqrt",
        UnOp::Rsqrt => "rsqrt",
        UnOp::Abs => "abs",
        UnOp::Tanh => "tanh",
        UnOp::Sigmoid => "sigmoid",
        UnOp::Softplus => "softplus",
        UnOp::Sign => "sign",
        UnOp::Round => "round",
        UnOp::Exp2 => "exp2",
        UnOp::ExpNonPos => "exp.nonpos",
    }
}

/// The text name of a binary operation.
pub fn binop_name(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "add",
        BinOp::Sub => "sub",
        BinOp::Mul => "mul",
        BinOp::Div => "div",
        BinOp::Min => "min",
        BinOp::Max => "max",
        BinOp::MaxNum => "maxnum",
        BinOp::And => "and",
        BinOp::Or => "or",
    }
}

/// The text name of a comparison.
pub fn cmp_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Lt => "lt",
        CmpOp::Le => "le",
        CmpOp::Gt => "gt",
        CmpOp::Ge => "ge",
        CmpOp::Eq => "eq",
        CmpOp::Ne => "ne",
    }
}

/// The text name of a reduction.
pub fn reduce_name(op: ReduceOp) -> String {
    match op {
        ReduceOp::Sum => "sum".into(),
        ReduceOp::Max => "max".into(),
        ReduceOp::Min => "min".into(),
        ReduceOp::Mean => "mean".into(),
        ReduceOp::TopK(k) => format!("topk.{k}"),
    }
}
