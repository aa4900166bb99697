//! The scalar lowering: ops and node values as plain Rust statements.
//!
//! Follows `passfold_dsl::interp::interpret_program` op by op: each `Loop`
//! is a counted loop over an `i64` index `i{extent}` (a loop over an index
//! that is already bound shadows it, so the outer value is back after it,
//! as the interpreter restores it), each `Set` an assignment to a local
//! `v{var}`, each `Store` an indexed write into the tensor's slice. A value
//! is a block that computes the nodes it needs in handle order (a
//! topological order) as `let n{node}` bindings; a reduction left in a
//! value is a loop nest inside that block. Every read is in bounds: exact
//! subscripts are in range by the validated extents, the others are
//! compared with the dimension first and give the pad value or, for a
//! gather site, return its status `1 + site`. Slices are indexed safely.

use crate::AotError;
use passfold_dsl::lir::{Op, Program};
use passfold_dsl::vector::LoopCode;
use passfold_dsl::{
    Affine, BinOp, CmpOp, ExtentId, Handle, Index, Kernel, Node, ReduceOp, ScalarType, TensorKind,
    UnOp,
};
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

/// The lane context of a vector loop's body (see `lanes.rs`).
pub(crate) struct LaneCx {
    /// For every node, whether it varies with the loop's index.
    pub vary: Vec<bool>,
    /// The chunk each varying load reads, by node index.
    pub chunk_of: Vec<Option<usize>>,
    /// The mutable chunk of every tensor the loop stores to.
    pub store_chunk: Vec<(passfold_dsl::TensorId, usize)>,
    /// A loop without states runs element by element over whole-range
    /// slices: lane variables are scalars (`lv{var}`), not arrays.
    pub flat: bool,
}

/// One lowering of a plan's program.
pub(crate) struct Body<'a> {
    pub k: &'a Kernel,
    pub program: &'a Program,
    /// Gather site of each node (the status is `1 + site`).
    pub site_of: Vec<Option<usize>>,
    /// Lanes per vector loop step, by element type.
    pub lanes_f32: usize,
    pub lanes_f64: usize,
    /// A scalar plan ([`passfold_dsl::PlanOptions::scalar`]): reductions
    /// keep the interpreter's order instead of one accumulator per lane.
    pub scalar: bool,
    /// Loads whose range checks a reduction around them made once, before
    /// its loop (their subscripts do not move with it).
    pub prechecked: std::cell::RefCell<std::collections::HashSet<usize>>,
    /// Loads a reduction around them reads from a row slice it took before
    /// its loop: the expression that reads the element.
    pub sliced: std::cell::RefCell<std::collections::HashMap<usize, TokenStream>>,
}

pub(crate) fn rust_type(ty: ScalarType) -> TokenStream {
    match ty {
        ScalarType::F32 => quote!(f32),
        ScalarType::F64 => quote!(f64),
        ScalarType::I32 => quote!(i32),
        ScalarType::Bool => quote!(bool),
    }
}

/// A float literal of type `ty` (`f32` rounds `v`).
pub(crate) fn float_lit(ty: ScalarType, v: f64) -> TokenStream {
    let wide = ty == ScalarType::F64;
    if v.is_nan() {
        return if wide {
            quote!(f64::NAN)
        } else {
            quote!(f32::NAN)
        };
    }
    if v.is_infinite() {
        return match (wide, v > 0.0) {
            (true, true) => quote!(f64::INFINITY),
            (true, false) => quote!(f64::NEG_INFINITY),
            (false, true) => quote!(f32::INFINITY),
            (false, false) => quote!(f32::NEG_INFINITY),
        };
    }
    let lit = if wide {
        Literal::f64_suffixed(v.abs())
    } else {
        Literal::f32_suffixed((v as f32).abs())
    };
    if v.is_sign_negative() {
        quote!((-#lit))
    } else {
        quote!(#lit)
    }
}

pub(crate) fn node_ident(h: Handle<Node>) -> proc_macro2::Ident {
    format_ident!("n{}", h.index())
}

pub(crate) fn uniform_ident(h: Handle<Node>) -> proc_macro2::Ident {
    format_ident!("u{}", h.index())
}

pub(crate) fn index_ident(e: ExtentId) -> proc_macro2::Ident {
    format_ident!("i{}", e.0)
}

pub(crate) fn extent_ident(e: ExtentId) -> proc_macro2::Ident {
    format_ident!("e{}", e.0)
}

pub(crate) fn tensor_ident(t: usize) -> proc_macro2::Ident {
    format_ident!("t{}", t)
}

pub(crate) fn var_ident(v: u32) -> proc_macro2::Ident {
    format_ident!("v{}", v)
}

pub(crate) fn lane_var_ident(v: u32) -> proc_macro2::Ident {
    format_ident!("lv{}", v)
}

/// The origin, length and stride locals of dimension `d` of tensor `t`.
pub(crate) fn layout_idents(
    t: usize,
    d: usize,
) -> (proc_macro2::Ident, proc_macro2::Ident, proc_macro2::Ident) {
    (
        format_ident!("o{}_{}", t, d),
        format_ident!("l{}_{}", t, d),
        format_ident!("s{}_{}", t, d),
    )
}

/// `Σ c·i + k` over bound indices, as an `i64` expression.
pub(crate) fn affine_expr(a: &Affine) -> TokenStream {
    let mut terms = Vec::new();
    for &(e, c) in &a.terms {
        let i = index_ident(e);
        terms.push(if c == 1 {
            quote!(#i)
        } else {
            quote!((#c * #i))
        });
    }
    let k = a.constant;
    if terms.is_empty() {
        return quote!(#k);
    }
    if k != 0 {
        terms.push(quote!(#k));
    }
    quote!((#(#terms)+*))
}

impl<'a> Body<'a> {
    pub fn unsupported(&self, h: Handle<Node>, what: &str) -> AotError {
        AotError::Unsupported {
            what: what.to_string(),
            span: self.k.span(h),
        }
    }

    /// Lanes of a vector loop over `elem`.
    pub fn lanes(&self, elem: ScalarType) -> usize {
        if elem == ScalarType::F64 {
            self.lanes_f64
        } else {
            self.lanes_f32
        }
    }

    /// The path of a math function of `ty`'s module.
    fn math(&self, ty: ScalarType, name: &str) -> TokenStream {
        let m = if ty == ScalarType::F64 {
            quote!(f64)
        } else {
            quote!(f32)
        };
        let f = format_ident!("{}", name);
        quote!(rt::#m::#f)
    }

    /// Lowers ops in program order.
    pub fn ops(&self, ops: &[Op]) -> Result<TokenStream, AotError> {
        let mut out = TokenStream::new();
        for op in ops {
            out.extend(self.op(op)?);
        }
        Ok(out)
    }

    fn op(&self, op: &Op) -> Result<TokenStream, AotError> {
        Ok(match op {
            Op::Barrier => return Err(AotError::SplitRow),
            Op::Toeplitz {
                out,
                vec,
                first_row,
                first_col,
                row,
                col,
            } => {
                // Directly, accumulated in f64 (the JIT's runtime uses the
                // FFT; the generated Rust stays self-contained).
                let (o, v) = (tensor_ident(out.0 as usize), tensor_ident(vec.0 as usize));
                let (r, c) = (
                    tensor_ident(first_row.0 as usize),
                    tensor_ident(first_col.0 as usize),
                );
                let (ni, nj) = (extent_ident(*row), extent_ident(*col));
                let ty = if self.k.tensor(*out).ty == ScalarType::F64 {
                    quote!(f64)
                } else {
                    quote!(f32)
                };
                quote! {
                    {
                        let n_i = #ni as usize;
                        let n_j = #nj as usize;
                        let vectors = if n_i == 0 { 0 } else { #o.len() / n_i };
                        for p in 0..vectors {
                            for i in 0..n_i {
                                let mut s = 0.0f64;
                                for j in 0..n_j {
                                    let coef = if j >= i { #r[j - i] } else { #c[i - j] };
                                    s += coef as f64 * #v[p * n_j + j] as f64;
                                }
                                #o[p * n_i + i] = s as #ty;
                            }
                        }
                    }
                }
            }
            Op::Loop {
                index,
                range,
                body,
                code,
                ..
            } => {
                let (start, end) = self.loop_bounds(*index, *range)?;
                if let LoopCode::Vector(v) = code {
                    if let Some(code) = self.vector_loop(*index, &start, &end, v, body)? {
                        return Ok(code);
                    }
                }
                let i = index_ident(*index);
                let inner = self.ops(body)?;
                match code {
                    LoopCode::Blocks(n) => {
                        let step = i64::from((*n).max(1));
                        quote! {
                            {
                                let end: i64 = #end;
                                let mut #i: i64 = #start;
                                while #i < end {
                                    #inner
                                    #i += #step;
                                }
                            }
                        }
                    }
                    _ => quote! {
                        for #i in (#start)..(#end) {
                            #inner
                        }
                    },
                }
            }
            Op::If { cond, then } => {
                let c = self.value(*cond, None)?;
                let then = self.ops(then)?;
                quote! {
                    if #c {
                        #then
                    }
                }
            }
            Op::Set { var, value } => {
                let Some(decl) = self.program.vars.get(var.0 as usize) else {
                    return Err(self.unsupported(*value, "an assignment to an undeclared variable"));
                };
                let x = self.value(*value, None)?;
                let x = self.convert(*value, x, self.k.ty(*value), decl.ty)?;
                let v = var_ident(var.0);
                quote!(#v = #x;)
            }
            Op::Store {
                tensor,
                index,
                value,
            } => {
                self.check_store(*tensor, index, *value)?;
                let x = self.value(*value, None)?;
                let t = tensor.0 as usize;
                let name = tensor_ident(t);
                let offset = self.store_offset(t, index, None);
                quote!(#name[#offset] = #x;)
            }
        })
    }

    /// `(start, end)` of a loop, clamped to `0..len(index)`, as `i64` expressions.
    pub fn loop_bounds(
        &self,
        index: ExtentId,
        range: Option<(Handle<Node>, Handle<Node>)>,
    ) -> Result<(TokenStream, TokenStream), AotError> {
        let len = extent_ident(index);
        Ok(match range {
            None => (quote!(0i64), quote!(#len)),
            Some((a, b)) => {
                let a = self.value(a, None)?;
                let b = self.value(b, None)?;
                (
                    quote!(::core::cmp::max(#a as i64, 0i64)),
                    quote!(::core::cmp::min(#b as i64, #len)),
                )
            }
        })
    }

    /// A store is in bounds when its subscripts are the written tensor's
    /// plain dimensions, and allowed when the tensor is not an input.
    pub fn check_store(
        &self,
        t: passfold_dsl::TensorId,
        index: &[ExtentId],
        value: Handle<Node>,
    ) -> Result<(), AotError> {
        let tensor = self.k.tensor(t);
        let plain = tensor.dims.len() == index.len()
            && tensor
                .dims
                .iter()
                .zip(index)
                .all(|(d, &e)| d.0.as_var() == Some(e));
        if !plain || tensor.kind == TensorKind::Input || self.k.ty(value) != tensor.ty {
            return Err(self.unsupported(
                value,
                &format!(
                    "a store to `{}` that is not at its own plain indices, to an input, or of another type",
                    tensor.name
                ),
            ));
        }
        Ok(())
    }

    /// The element offset of a store at plain indices (`last` replaces the
    /// last index's value, for chunk bases).
    pub fn store_offset(
        &self,
        t: usize,
        index: &[ExtentId],
        last: Option<&TokenStream>,
    ) -> TokenStream {
        let mut terms = Vec::new();
        for (d, &e) in index.iter().enumerate() {
            let (_, _, s) = layout_idents(t, d);
            let i = index_ident(e);
            let value = match last {
                Some(l) if d + 1 == index.len() => l.clone(),
                _ => quote!(#i),
            };
            terms.push(quote!(#value * #s));
        }
        if terms.is_empty() {
            quote!(0usize)
        } else {
            quote!(((#(#terms)+*) as usize))
        }
    }

    /// Converts a value assigned to a variable of another type.
    fn convert(
        &self,
        h: Handle<Node>,
        x: TokenStream,
        from: ScalarType,
        to: ScalarType,
    ) -> Result<TokenStream, AotError> {
        if from == to {
            return Ok(x);
        }
        let ty = rust_type(to);
        match (from, to) {
            (ScalarType::Bool, _) | (_, ScalarType::Bool) => {
                Err(self.unsupported(h, "a conversion of `bool`"))
            }
            // `as` saturates float to int and maps NaN to 0, as Cranelift's
            // `fcvt_to_sint_sat`.
            _ => Ok(quote!((#x as #ty))),
        }
    }

    /// The value of `root` as a block expression: the nodes it needs (not
    /// looking inside reductions, which evaluate their arguments in their
    /// own loops) in handle order. In a lane context, nodes that do not
    /// vary are the loop's hoisted `u{node}` locals.
    pub fn value(
        &self,
        root: Handle<Node>,
        lanes: Option<&LaneCx>,
    ) -> Result<TokenStream, AotError> {
        if let Some(l) = lanes {
            if !l.vary[root.index()] {
                let u = uniform_ident(root);
                return Ok(quote!(#u));
            }
        }
        let mut needed = Vec::new();
        let mut seen = vec![false; root.index() + 1];
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            if seen[h.index()] {
                continue;
            }
            seen[h.index()] = true;
            if lanes.is_some_and(|l| !l.vary[h.index()]) {
                continue;
            }
            needed.push(h);
            if !matches!(self.k.nodes[h], Node::Reduce { .. }) {
                stack.extend(self.k.nodes[h].operands());
            }
        }
        needed.sort_by_key(|h| h.index());
        let mut lets = TokenStream::new();
        for h in needed {
            let expr = self.node(h, lanes)?;
            let n = node_ident(h);
            let ty = rust_type(self.k.ty(h));
            lets.extend(quote!(let #n: #ty = #expr;));
        }
        let r = node_ident(root);
        Ok(quote!({ #lets #r }))
    }

    /// An operand: the node's local, or its hoisted value in a lane context.
    fn operand(&self, h: Handle<Node>, lanes: Option<&LaneCx>) -> TokenStream {
        match lanes {
            Some(l) if !l.vary[h.index()] => {
                let u = uniform_ident(h);
                quote!(#u)
            }
            _ => {
                let n = node_ident(h);
                quote!(#n)
            }
        }
    }

    fn node(&self, h: Handle<Node>, lanes: Option<&LaneCx>) -> Result<TokenStream, AotError> {
        let ty = self.k.ty(h);
        let op = |x: &Handle<Node>| self.operand(*x, lanes);
        Ok(match &self.k.nodes[h] {
            Node::ConstFloat(bits) => {
                let v = f64::from_bits(*bits);
                match ty {
                    // An `i32` max/min accumulator's initial ±inf saturates.
                    ScalarType::I32 => {
                        let i = v as i32;
                        quote!(#i)
                    }
                    ScalarType::Bool => {
                        return Err(self.unsupported(h, "a float constant of type `bool`"));
                    }
                    _ => float_lit(ty, v),
                }
            }
            Node::ConstInt(v) => match ty {
                ScalarType::I32 => {
                    let i = *v as i32;
                    quote!(#i)
                }
                ScalarType::Bool => quote!((#v != 0)),
                _ => float_lit(ty, *v as f64),
            },
            Node::Param(p) => {
                let p = format_ident!("p{}", p.0);
                quote!(#p)
            }
            Node::IndexValue(e) => {
                let i = index_ident(*e);
                quote!((#i as i32))
            }
            Node::ExtentLen(e) => {
                let e = extent_ident(*e);
                quote!((#e as i32))
            }
            Node::Var(v) => match lanes {
                Some(cx) if cx.flat => {
                    let lv = lane_var_ident(v.0);
                    quote!(#lv)
                }
                Some(_) => {
                    let lv = lane_var_ident(v.0);
                    quote!(#lv[l])
                }
                None => {
                    let v = var_ident(v.0);
                    quote!(#v)
                }
            },
            Node::Load { .. } if self.sliced.borrow().contains_key(&h.index()) => {
                self.sliced.borrow()[&h.index()].clone()
            }
            Node::Load { tensor, index } => match lanes.and_then(|l| l.chunk_of[h.index()]) {
                Some(c) => {
                    let c = format_ident!("c{}", c);
                    quote!(#c[l])
                }
                None if lanes.is_some() => {
                    return Err(self.unsupported(h, "a varying load without a chunk"));
                }
                None => self.load(h, *tensor, index)?,
            },
            Node::Unary(u, a) => self.unary(h, *u, op(a), ty)?,
            Node::Binary(b, x, y) => self.binary(h, *b, op(x), op(y), ty)?,
            Node::Cmp(c, x, y) => {
                let (x, y) = (op(x), op(y));
                match c {
                    CmpOp::Lt => quote!((#x < #y)),
                    CmpOp::Le => quote!((#x <= #y)),
                    CmpOp::Gt => quote!((#x > #y)),
                    CmpOp::Ge => quote!((#x >= #y)),
                    CmpOp::Eq => quote!((#x == #y)),
                    CmpOp::Ne => quote!((#x != #y)),
                }
            }
            Node::Select(c, a, b) => {
                let (c, a, b) = (op(c), op(a), op(b));
                quote!(rt::sel(#c, #a, #b))
            }
            Node::Powf(a, p) => {
                if !ty.is_float() {
                    return Err(self.unsupported(h, "`pow` of a non-float"));
                }
                let p = float_lit(ty, f64::from_bits(*p));
                let f = self.math(ty, "powf");
                let a = op(a);
                quote!(#f(#a, #p))
            }
            Node::Cast(to, a) => {
                let from = self.k.ty(*a);
                let x = op(a);
                let t = rust_type(*to);
                match (from, *to) {
                    (f, to) if f == to => x,
                    (ScalarType::I32, to) if to.is_float() => quote!((#x as #t)),
                    (ScalarType::F32, ScalarType::F64) | (ScalarType::F64, ScalarType::F32) => {
                        quote!((#x as #t))
                    }
                    _ => {
                        return Err(self.unsupported(h, &format!("a cast from `{from}` to `{to}`")));
                    }
                }
            }
            Node::Reduce { op: r, axes, arg } => {
                if lanes.is_some() {
                    return Err(self.unsupported(h, "a varying reduction in vector code"));
                }
                self.reduce(h, *r, axes, *arg, ty)?
            }
        })
    }

    fn unary(
        &self,
        h: Handle<Node>,
        op: UnOp,
        x: TokenStream,
        ty: ScalarType,
    ) -> Result<TokenStream, AotError> {
        match ty {
            ScalarType::I32 => {
                return match op {
                    UnOp::Neg => Ok(quote!(#x.wrapping_neg())),
                    UnOp::Abs => Ok(quote!(#x.wrapping_abs())),
                    _ => Err(self.unsupported(h, "this operation on `i32`")),
                };
            }
            ScalarType::Bool => {
                return match op {
                    UnOp::Not => Ok(quote!((!#x))),
                    _ => Err(self.unsupported(h, "this operation on `bool`")),
                };
            }
            _ => {}
        }
        let fma = |name: &str| {
            let f = self.math(ty, name);
            quote!(#f::<FMA>(#x))
        };
        let plain = |name: &str| {
            let f = self.math(ty, name);
            quote!(#f(#x))
        };
        Ok(match op {
            UnOp::Neg => quote!((-#x)),
            UnOp::Not => return Err(self.unsupported(h, "`!` on a number")),
            UnOp::Exp => fma("exp"),
            UnOp::ExpNonPos => fma("exp_nonpositive"),
            UnOp::Exp2 => fma("exp2"),
            UnOp::Log => fma("log"),
            UnOp::Log1p => fma("log1p"),
            UnOp::Expm1 => fma("expm1"),
            UnOp::Tanh => fma("tanh"),
            UnOp::Sigmoid => fma("sigmoid"),
            UnOp::Softplus => fma("softplus"),
            UnOp::Sqrt => quote!(#x.sqrt()),
            UnOp::Rsqrt => plain("rsqrt"),
            UnOp::Abs => plain("abs"),
            UnOp::Sign => plain("sign"),
            UnOp::Round => plain("round"),
        })
    }

    fn binary(
        &self,
        h: Handle<Node>,
        op: BinOp,
        x: TokenStream,
        y: TokenStream,
        ty: ScalarType,
    ) -> Result<TokenStream, AotError> {
        Ok(match (ty, op) {
            (ScalarType::Bool, BinOp::And) => quote!((#x & #y)),
            (ScalarType::Bool, BinOp::Or) => quote!((#x | #y)),
            (ScalarType::Bool, _) | (_, BinOp::And | BinOp::Or) => {
                return Err(self.unsupported(h, "this operation on these types"));
            }
            (ScalarType::I32, BinOp::Add) => quote!(#x.wrapping_add(#y)),
            (ScalarType::I32, BinOp::Sub) => quote!(#x.wrapping_sub(#y)),
            (ScalarType::I32, BinOp::Mul) => quote!(#x.wrapping_mul(#y)),
            (ScalarType::I32, BinOp::Min) => quote!(::core::cmp::min(#x, #y)),
            (ScalarType::I32, BinOp::Max | BinOp::MaxNum) => quote!(::core::cmp::max(#x, #y)),
            // 0 for a zero divisor or an overflowing quotient, as the JIT.
            (ScalarType::I32, BinOp::Div) => quote!(#x.checked_div(#y).unwrap_or(0)),
            (_, BinOp::Add) => quote!((#x + #y)),
            (_, BinOp::Sub) => quote!((#x - #y)),
            (_, BinOp::Mul) => quote!((#x * #y)),
            (_, BinOp::Div) => quote!((#x / #y)),
            (_, BinOp::Min) => {
                let f = self.math(ty, "min");
                quote!(#f(#x, #y))
            }
            (_, BinOp::Max) => {
                let f = self.math(ty, "max");
                quote!(#f(#x, #y))
            }
            // `x < y ? y : x`: one `vmaxps`.
            (_, BinOp::MaxNum) => quote!({
                let (x, y) = (#x, #y);
                if x < y { y } else { x }
            }),
        })
    }

    /// A tensor read in scalar code; see the module docs for the bounds policy.
    fn load(
        &self,
        h: Handle<Node>,
        tensor: passfold_dsl::TensorId,
        index: &[Index],
    ) -> Result<TokenStream, AotError> {
        let t = tensor.0 as usize;
        let tensor_info = self.k.tensor(tensor);
        let mut lets = TokenStream::new();
        let mut checks = Vec::new();
        let mut offset = Vec::new();
        for (d, idx) in index.iter().enumerate() {
            let (o, l, s) = layout_idents(t, d);
            let p = format_ident!("q{}", d);
            let (value, check) = match idx {
                Index::Affine(a) => {
                    // Checked: a padded tensor reads its pad outside; an
                    // unpadded one is read so only by a plan reading ahead
                    // (`passfold_dsl::jam`, kept in range), a failed call else.
                    let exact = *a == tensor_info.dims[d].0;
                    (affine_expr(a), !exact)
                }
                Index::Gather(g) => {
                    let g = node_ident(*g);
                    (quote!((#g as i64)), true)
                }
            };
            lets.extend(quote!(let #p: i64 = #value + #o;));
            if check && !self.prechecked.borrow().contains(&h.index()) {
                checks.push(quote!((#p >= 0 && #p < #l)));
            }
            offset.push(quote!(#p * #s));
        }
        let name = tensor_ident(t);
        let at = if offset.is_empty() {
            quote!(#name[0])
        } else {
            quote!(#name[(#(#offset)+*) as usize])
        };
        if checks.is_empty() {
            return Ok(quote!({ #lets #at }));
        }
        Ok(match tensor_info.pad {
            Some(pad) => {
                let pad = match tensor_info.ty {
                    ScalarType::I32 => {
                        let i = pad as i32;
                        quote!(#i)
                    }
                    ty => float_lit(ty, pad),
                };
                quote!({ #lets if #(#checks)&&* { #at } else { #pad } })
            }
            None => {
                let Some(site) = self.site_of[h.index()] else {
                    return Err(self.unsupported(h, "a gather that is not a gather site"));
                };
                let status = site as i32 + 1;
                quote!({ #lets if !(#(#checks)&&*) { return #status; } #at })
            }
        })
    }

    /// The loads under `root` (outside nested reductions) of unpadded
    /// tensors with checked subscripts, none gathered or moving with
    /// `axes`, each with its check (returning its site's status).
    fn invariant_checks(
        &self,
        root: Handle<Node>,
        axes: &[ExtentId],
    ) -> Vec<(Handle<Node>, TokenStream)> {
        let mut out = Vec::new();
        for h in self.nodes_under(root) {
            match &self.k.nodes[h] {
                Node::Load { tensor, index } => {
                    let info = self.k.tensor(*tensor);
                    let Some(site) = self.site_of[h.index()] else {
                        continue;
                    };
                    if info.pad.is_some() {
                        continue;
                    }
                    let t = tensor.0 as usize;
                    let mut checks = Vec::new();
                    let mut fixed = true;
                    for (d, idx) in index.iter().enumerate() {
                        match idx {
                            Index::Affine(a) if *a != info.dims[d].0 => {
                                if a.terms.iter().any(|(v, _)| axes.contains(v)) {
                                    fixed = false;
                                }
                                let (o, l, _) = layout_idents(t, d);
                                let value = affine_expr(a);
                                checks.push(quote!({
                                    let q: i64 = #value + #o;
                                    q >= 0 && q < #l
                                }));
                            }
                            Index::Affine(_) => {}
                            Index::Gather(_) => fixed = false,
                        }
                    }
                    if fixed && !checks.is_empty() {
                        let status = site as i32 + 1;
                        out.push((h, quote!(if !(#(#checks)&&*) { return #status; })));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The nodes under `root`, each once: a nested reduction is listed but
    /// not entered, nor are a load's gathered subscripts.
    fn nodes_under(&self, root: Handle<Node>) -> Vec<Handle<Node>> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            if !seen.insert(h.index()) {
                continue;
            }
            out.push(h);
            let node = &self.k.nodes[h];
            if !matches!(node, Node::Reduce { .. } | Node::Load { .. }) {
                stack.extend(node.operands());
            }
        }
        out
    }

    /// The loads under `root` (outside nested reductions) that a reduction
    /// over `axis` can read from row slices: contiguous along `axis` (their
    /// last subscript, exactly the dimension's), every other subscript fixed
    /// over the reduction and needing no check (or checked before it), no
    /// gathers; `None` when `root` reads anything else that moves with
    /// `axis`. Each load with the statement that takes its row:
    /// `let rowN: &[T] = &tN[start..start + len];`.
    fn row_slices(
        &self,
        root: Handle<Node>,
        axis: ExtentId,
    ) -> Option<Vec<(Handle<Node>, proc_macro2::Ident, TokenStream)>> {
        let mut out = Vec::new();
        for h in self.nodes_under(root) {
            match &self.k.nodes[h] {
                Node::IndexValue(e) if *e == axis => return None,
                Node::Reduce { arg, .. } => {
                    if self.free_of(*arg, axis) {
                        continue;
                    }
                    return None;
                }
                Node::Load { tensor, index } => {
                    let info = self.k.tensor(*tensor);
                    let moves = index.iter().any(|i| match i {
                        Index::Affine(a) => a.terms.iter().any(|(v, _)| *v == axis),
                        Index::Gather(_) => true,
                    });
                    if !moves {
                        continue;
                    }
                    let (last, outer) = index.split_last()?;
                    let d_last = index.len() - 1;
                    let Index::Affine(a) = last else { return None };
                    if a.as_var() != Some(axis) || *a != info.dims[d_last].0 {
                        return None;
                    }
                    let t = tensor.0 as usize;
                    let mut offset = Vec::new();
                    for (d, idx) in outer.iter().enumerate() {
                        let Index::Affine(a) = idx else { return None };
                        if a.terms.iter().any(|(v, _)| *v == axis) {
                            return None;
                        }
                        let exact = *a == info.dims[d].0;
                        if !exact
                            && (info.pad.is_some()
                                || !self.prechecked.borrow().contains(&h.index()))
                        {
                            return None;
                        }
                        let (o, _, st) = layout_idents(t, d);
                        let value = affine_expr(a);
                        offset.push(quote!((#value + #o) * #st));
                    }
                    // The row starts at `axis = 0` (the last stride is 1).
                    let (o, l, _) = layout_idents(t, d_last);
                    let name = tensor_ident(t);
                    let row = format_ident!("row{}", h.index());
                    let start = quote!((#(#offset +)* #o) as usize);
                    out.push((
                        h,
                        row.clone(),
                        quote!(let #row = &#name[#start..#start + (#l as usize)];),
                    ));
                }
                _ => {}
            }
        }
        Some(out)
    }

    /// Whether `root` does not depend on the index `axis`.
    fn free_of(&self, root: Handle<Node>, axis: ExtentId) -> bool {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            match &self.k.nodes[h] {
                Node::IndexValue(e) if *e == axis => return false,
                Node::Load { index, .. } => {
                    for i in index {
                        match i {
                            Index::Affine(a) if a.terms.iter().any(|(v, _)| *v == axis) => {
                                return false;
                            }
                            Index::Affine(_) => {}
                            Index::Gather(g) => stack.push(*g),
                        }
                    }
                }
                n => stack.extend(n.operands()),
            }
        }
        true
    }

    fn reduce(
        &self,
        h: Handle<Node>,
        op: ReduceOp,
        axes: &[ExtentId],
        arg: Handle<Node>,
        ty: ScalarType,
    ) -> Result<TokenStream, AotError> {
        // Checked reads whose subscripts stay fixed over the reduction (a
        // later key's row, `passfold_dsl::jam`) are checked once, before it:
        // a check inside would keep LLVM from vectorizing the loop.
        let hoisted = self.invariant_checks(arg, axes);
        let mut prechecks = TokenStream::new();
        for (load, check) in &hoisted {
            self.prechecked.borrow_mut().insert(load.index());
            prechecks.extend(check.clone());
        }
        let total = self.reduce_checked(h, op, axes, arg, ty);
        for (load, _) in &hoisted {
            self.prechecked.borrow_mut().remove(&load.index());
        }
        let total = total?;
        Ok(quote!({ #prechecks #total }))
    }

    /// Merges the `w` lanes of a reduction's accumulators `accs` pairwise
    /// (lane `l + half` into lane `l`) and starts `acc` at the result.
    fn lane_merge(&self, op: ReduceOp, ty: ScalarType, w: usize) -> TokenStream {
        let combine = match op {
            ReduceOp::Max | ReduceOp::Min => {
                let f = self.math(ty, if op == ReduceOp::Max { "max" } else { "min" });
                quote!(#f(accs[l], accs[l + half]))
            }
            _ => quote!(accs[l] + accs[l + half]),
        };
        let t = rust_type(ty);
        quote! {
            let mut half = #w / 2;
            while half > 0 {
                for l in 0..half {
                    accs[l] = #combine;
                }
                half /= 2;
            }
            let mut acc: #t = accs[0];
        }
    }

    /// [`Body::reduce`] with its fixed reads checked already.
    fn reduce_checked(
        &self,
        h: Handle<Node>,
        op: ReduceOp,
        axes: &[ExtentId],
        arg: Handle<Node>,
        ty: ScalarType,
    ) -> Result<TokenStream, AotError> {
        let x = self.value(arg, None)?;
        let wrap = |inner: TokenStream| {
            axes.iter().rev().fold(inner, |inner, &e| {
                let i = index_ident(e);
                let len = extent_ident(e);
                quote!(for #i in 0..#len { #inner })
            })
        };
        if let ReduceOp::TopK(k) = op {
            if k > 4096 || !ty.is_float() {
                return Err(self.unsupported(h, "a top-k of more than 4096 values or of `i32`"));
            }
            let k = k as usize;
            let t = rust_type(ty);
            let body = wrap(quote!(topk.push(#x as f64);));
            return Ok(quote!({
                let mut topk = rt::TopK::<#k>::new();
                #body
                topk.result() as #t
            }));
        }
        let is_int = ty == ScalarType::I32;
        if (is_int && op == ReduceOp::Mean) || !(is_int || ty.is_float()) {
            return Err(self.unsupported(h, &format!("this reduction of `{ty}`")));
        }
        let init = match (op, is_int) {
            (ReduceOp::Max, true) => quote!(i32::MIN),
            (ReduceOp::Min, true) => quote!(i32::MAX),
            (_, true) => quote!(0i32),
            (ReduceOp::Max, false) => float_lit(ty, f64::NEG_INFINITY),
            (ReduceOp::Min, false) => float_lit(ty, f64::INFINITY),
            _ => float_lit(ty, 0.0),
        };
        let combine = match (op, is_int) {
            (ReduceOp::Max, true) => quote!(::core::cmp::max(acc, x)),
            (ReduceOp::Min, true) => quote!(::core::cmp::min(acc, x)),
            (_, true) => quote!(acc.wrapping_add(x)),
            (ReduceOp::Max, false) => {
                let f = self.math(ty, "max");
                quote!(#f(acc, x))
            }
            (ReduceOp::Min, false) => {
                let f = self.math(ty, "min");
                quote!(#f(acc, x))
            }
            _ => quote!(acc + x),
        };
        let t = rust_type(ty);
        let body = wrap(quote!(let x: #t = #x; acc = #combine;));
        let rows = match (axes, is_int, self.scalar) {
            ([e], false, false) => self.row_slices(arg, *e).filter(|r| !r.is_empty()),
            _ => None,
        };
        let total = if let (Some(rows), [e]) = (rows, axes) {
            // Rows taken once, read in fixed-width chunks: no bounds check
            // per element, so LLVM vectorizes the lanes.
            let w = self.lanes(ty);
            let len = extent_ident(*e);
            let row_lets = rows.iter().map(|r| &r.2);
            let chunk_lets = rows.iter().map(|(h, row, _)| {
                let c = format_ident!("chunk{}", h.index());
                quote!(let #c = &#row[base..base + #w];)
            });
            let emit_with = |read: &dyn Fn(Handle<Node>, &proc_macro2::Ident) -> TokenStream| {
                for (h, row, _) in &rows {
                    self.sliced.borrow_mut().insert(h.index(), read(*h, row));
                }
                let x = self.value(arg, None);
                for (h, _, _) in &rows {
                    self.sliced.borrow_mut().remove(&h.index());
                }
                x
            };
            let x_lane = emit_with(&|h, _| {
                let c = format_ident!("chunk{}", h.index());
                quote!(#c[l])
            })?;
            let x_tail = emit_with(&|_, row| quote!(#row[r]))?;
            let lane_merge = self.lane_merge(op, ty, w);
            quote!({
                let n: usize = (#len).max(0) as usize;
                #(#row_lets)*
                let full: usize = n - n % #w;
                let mut accs: [#t; #w] = [#init; #w];
                let mut base: usize = 0;
                while base < full {
                    #(#chunk_lets)*
                    for l in 0..#w {
                        let x: #t = #x_lane;
                        let acc = accs[l];
                        accs[l] = #combine;
                    }
                    base += #w;
                }
                #lane_merge
                for r in full..n {
                    let x: #t = #x_tail;
                    acc = #combine;
                }
                acc
            })
        } else if let ([e], false, false) = (axes, is_int, self.scalar) {
            // One accumulator per lane over chunks of the index, merged
            // pairwise, then the tail: independent chains LLVM can keep in
            // flight (or vectorize) where one `acc + x` chain cannot be
            // reordered without fast-math.
            let w = self.lanes(ty);
            let i = index_ident(*e);
            let len = extent_ident(*e);
            let lane_merge = self.lane_merge(op, ty, w);
            quote!({
                let n: i64 = #len;
                let full: i64 = n - n % (#w as i64);
                let mut accs: [#t; #w] = [#init; #w];
                let mut base: i64 = 0;
                while base < full {
                    for l in 0..#w {
                        let #i: i64 = base + l as i64;
                        let x: #t = #x;
                        let acc = accs[l];
                        accs[l] = #combine;
                    }
                    base += #w as i64;
                }
                #lane_merge
                for #i in full..n {
                    let x: #t = #x;
                    acc = #combine;
                }
                acc
            })
        } else {
            quote!({
                let mut acc: #t = #init;
                #body
                acc
            })
        };
        if op != ReduceOp::Mean {
            return Ok(total);
        }
        // The interpreter divides in f64 by the exact count and rounds once.
        let lens = axes.iter().map(|&e| extent_ident(e));
        Ok(quote!({
            let count: f64 = 1.0f64 #(* (#lens as f64))*;
            ((#total as f64) / count) as #t
        }))
    }
}
