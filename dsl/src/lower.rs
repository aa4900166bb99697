//! The checker: [`Ast`] → [`Kernel`].
//!
//! Assumes: a syntax tree from [`crate::parse()`]. Guarantees: either a kernel
//! that satisfies every invariant of [`crate::ir`] (names resolved, types
//! checked, every subscript in range or padded, every index bound), or
//! diagnostics with spans. Never panics.
//!
//! Typing: literals and `const` parameters are folded in `f64` and take the
//! type their context gives them; an `i32` meeting a float is converted to
//! that float; `f32` meeting `f64` is an error.

use crate::arena::Handle;
use crate::ast::*;
use crate::diag::{Diagnostic, Diagnostics, Span};
use crate::ir::*;

/// Choices made when lowering a kernel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LowerOptions {
    /// Values for `const` parameters, overriding their defaults.
    pub consts: Vec<(String, i64)>,
    /// Compile every `f32` of the kernel as this float type (`f64`), so one
    /// catalogue file serves both precisions.
    pub float: Option<ScalarType>,
}

/// The most extents (and index variables) a kernel may have.
pub const MAX_EXTENTS: usize = 64;

/// Checks a syntax tree and lowers it to a [`Kernel`].
pub fn lower(ast: &Ast, opts: &LowerOptions) -> Result<Kernel, Diagnostics> {
    let mut cx = Lowerer {
        opts,
        extents: Vec::new(),
        tensors: Vec::new(),
        tensor_spans: Vec::new(),
        written: Vec::new(),
        params: Vec::new(),
        consts: Vec::new(),
        nodes: NodeBuilder::default(),
        stmts: Vec::new(),
        default_float: ScalarType::F32,
        gathers: 0,
        failed: Vec::new(),
    };
    cx.declare(ast).map_err(Diagnostics::from)?;
    let mut errors = Vec::new();
    for stmt in &ast.body {
        if let Err(d) = cx.statement(stmt) {
            errors.push(d);
            // A failed statement still counts as writing its target, so one
            // mistake does not also report "never written".
            match cx.tensor_by_name(&stmt.target.text) {
                Some(id) => cx.written[id.0 as usize] = true,
                None => cx.failed.push(stmt.target.text.clone()),
            }
        }
    }
    for (idx, t) in cx.tensors.iter().enumerate() {
        if t.kind == TensorKind::Output && !cx.written[idx] {
            errors.push(Diagnostic::new(
                format!("output `{}` is never written", t.name),
                cx.tensor_spans[idx],
                "declared here",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    let (nodes, node_types, node_spans) = cx.nodes.finish();
    let kernel = Kernel {
        name: ast.name.text.clone(),
        extents: cx.extents,
        tensors: cx.tensors,
        params: cx.params,
        consts: cx.consts,
        nodes,
        node_types,
        node_spans,
        stmts: cx.stmts,
    };
    crate::verify::verify(&kernel);
    Ok(kernel)
}

type Res<T> = Result<T, Diagnostic>;

struct Lowerer<'a> {
    opts: &'a LowerOptions,
    extents: Vec<Extent>,
    tensors: Vec<Tensor>,
    tensor_spans: Vec<Span>,
    written: Vec<bool>,
    params: Vec<Param>,
    consts: Vec<ConstParam>,
    nodes: NodeBuilder,
    stmts: Vec<Stmt>,
    default_float: ScalarType,
    gathers: usize,
    /// Temporaries whose statement failed: reading them reports once, quietly.
    failed: Vec<String>,
}

/// A lowered expression: a node, or a number not yet given a type.
#[derive(Clone, Copy, Debug)]
enum Val {
    Node(Handle<Node>),
    Num {
        value: f64,
        is_int: bool,
        span: Span,
    },
}

/// The index variables bound at a point of an expression.
#[derive(Clone, Copy, Default)]
struct Scope(u64);

impl Scope {
    fn has(self, e: ExtentId) -> bool {
        self.0 & (1 << e.0) != 0
    }
    fn with(self, e: ExtentId) -> Scope {
        Scope(self.0 | (1 << e.0))
    }
}

/// What the statement being lowered writes, for the in-place rule.
#[derive(Clone, Copy)]
struct Target<'s> {
    tensor: TensorId,
    indices: &'s [ExtentId],
}

const FUNCTIONS: &[(&str, usize)] = &[
    ("exp", 1),
    ("log", 1),
    ("log1p", 1),
    ("expm1", 1),
    ("sqrt", 1),
    ("rsqrt", 1),
    ("abs", 1),
    ("tanh", 1),
    ("sigmoid", 1),
    ("softplus", 1),
    ("sign", 1),
    ("min", 2),
    ("max", 2),
    ("select", 3),
    ("pow", 2),
    ("len", 1),
];

fn parse_type(name: &Name, float: Option<ScalarType>) -> Res<ScalarType> {
    match name.text.as_str() {
        "f32" => Ok(float.unwrap_or(ScalarType::F32)),
        "f64" => Ok(ScalarType::F64),
        "i32" => Ok(ScalarType::I32),
        other => Err(Diagnostic::new(
            format!("unknown element type `{other}`"),
            name.span,
            "expected `f32`, `f64` or `i32`",
        )),
    }
}

impl Lowerer<'_> {
    fn extent_by_name(&self, name: &str) -> Option<ExtentId> {
        self.extents
            .iter()
            .position(|e| e.name == name)
            .map(|i| ExtentId(i as u32))
    }

    fn tensor_by_name(&self, name: &str) -> Option<TensorId> {
        self.tensors
            .iter()
            .position(|t| t.name == name)
            .map(|i| TensorId(i as u32))
    }

    fn extent_or_new(&mut self, name: &Name) -> Res<ExtentId> {
        if let Some(e) = self.extent_by_name(&name.text) {
            return Ok(e);
        }
        if self.extents.len() == MAX_EXTENTS {
            return Err(Diagnostic::new(
                format!("too many extents (at most {MAX_EXTENTS})"),
                name.span,
                "one too many",
            ));
        }
        self.extents.push(Extent {
            name: name.text.clone(),
        });
        Ok(ExtentId(self.extents.len() as u32 - 1))
    }

    /// Reads an affine form; `var` resolves (or creates) each name.
    fn affine(
        &mut self,
        e: &Expr,
        var: &mut dyn FnMut(&mut Self, &Name) -> Res<Option<Affine>>,
    ) -> Res<Option<Affine>> {
        let overflow = || Diagnostic::new("index arithmetic overflows", e.span, "here");
        Ok(match &e.kind {
            ExprKind::Int(v) => Some(Affine::constant(*v)),
            ExprKind::Name(n) => var(self, n)?,
            ExprKind::Neg(a) => match self.affine(a, var)? {
                Some(a) => Some(a.scaled(-1).ok_or_else(overflow)?),
                None => None,
            },
            ExprKind::Binary(op @ (AstBinOp::Add | AstBinOp::Sub), a, b) => {
                let (Some(a), Some(b)) = (self.affine(a, var)?, self.affine(b, var)?) else {
                    return Ok(None);
                };
                let sign = if *op == AstBinOp::Add { 1 } else { -1 };
                Some(a.add_scaled(&b, sign).ok_or_else(overflow)?)
            }
            ExprKind::Binary(AstBinOp::Mul, a, b) => {
                let (Some(a), Some(b)) = (self.affine(a, var)?, self.affine(b, var)?) else {
                    return Ok(None);
                };
                if a.terms.is_empty() {
                    Some(b.scaled(a.constant).ok_or_else(overflow)?)
                } else if b.terms.is_empty() {
                    Some(a.scaled(b.constant).ok_or_else(overflow)?)
                } else {
                    None
                }
            }
            _ => None,
        })
    }

    fn check_fresh_name(&self, name: &Name) -> Res<()> {
        let taken = self.tensor_by_name(&name.text).is_some()
            || self.params.iter().any(|p| p.name == name.text)
            || self.consts.iter().any(|c| c.name == name.text);
        if taken {
            return Err(Diagnostic::new(
                format!("`{}` is declared twice", name.text),
                name.span,
                "second declaration",
            ));
        }
        if matches!(name.text.as_str(), "inf" | "nan") || FUNCTIONS.iter().any(|f| f.0 == name.text)
        {
            return Err(Diagnostic::new(
                format!("`{}` is a built-in name and cannot be declared", name.text),
                name.span,
                "reserved",
            ));
        }
        Ok(())
    }

    fn declare(&mut self, ast: &Ast) -> Res<()> {
        let decls = ast
            .args
            .iter()
            .map(|a| (a, false))
            .chain(ast.outputs.iter().map(|a| (a, true)));
        for (decl, is_output) in decls {
            self.check_fresh_name(decl.name())?;
            match decl {
                ArgDecl::Tensor {
                    name,
                    mutable,
                    ty,
                    dims,
                    pad,
                    span,
                } => {
                    if *mutable && is_output {
                        return Err(Diagnostic::new(
                            "`mut` belongs on an argument, not an output",
                            name.span,
                            "an in-place tensor is declared once, among the arguments",
                        ));
                    }
                    let ty = parse_type(ty, self.opts.float)?;
                    let mut ir_dims = Vec::new();
                    for d in dims {
                        let form = self
                            .affine(d, &mut |cx, n| cx.extent_or_new(n).map(|e| Some(Affine::var(e))))?
                            .ok_or_else(|| {
                                Diagnostic::new(
                                    "a dimension must be an extent name or an affine form of them (`i`, `j - i`)",
                                    d.span,
                                    "not an affine form of extents",
                                )
                            })?;
                        if form.terms.is_empty() {
                            return Err(Diagnostic::new(
                                "a dimension must name an extent",
                                d.span,
                                "a constant",
                            ));
                        }
                        if is_output && form.as_var().is_none() {
                            return Err(Diagnostic::new(
                                "an output's dimensions must be plain extents",
                                d.span,
                                "not a single extent",
                            ));
                        }
                        ir_dims.push(Dim(form));
                    }
                    let pad = match pad {
                        None => None,
                        Some(p) => Some(self.const_value(p)?),
                    };
                    let kind = match (is_output, mutable) {
                        (true, _) => TensorKind::Output,
                        (false, true) => TensorKind::InOut,
                        (false, false) => TensorKind::Input,
                    };
                    if ty.is_float() && self.tensors.iter().all(|t| !t.ty.is_float()) {
                        self.default_float = ty;
                    }
                    self.tensors.push(Tensor {
                        name: name.text.clone(),
                        kind,
                        ty,
                        dims: ir_dims,
                        pad,
                    });
                    self.tensor_spans.push(*span);
                    self.written.push(false);
                }
                ArgDecl::Scalar { name, ty } => {
                    if is_output {
                        return Err(Diagnostic::new(
                            "an output must be a tensor; write a one-element result as `y[b]`",
                            name.span,
                            "scalar output",
                        ));
                    }
                    let ty = parse_type(ty, self.opts.float)?;
                    self.params.push(Param {
                        name: name.text.clone(),
                        ty,
                    });
                }
                ArgDecl::Const { name, ty, default } => {
                    if parse_type(ty, None)? != ScalarType::I32 {
                        return Err(Diagnostic::new(
                            "a `const` parameter must be `i32`",
                            ty.span,
                            "not `i32`",
                        ));
                    }
                    let given = self
                        .opts
                        .consts
                        .iter()
                        .find(|(n, _)| *n == name.text)
                        .map(|c| c.1);
                    let value = match (given, default) {
                        (Some(v), _) => v,
                        (None, Some(d)) => {
                            let v = self.const_value(d)?;
                            if v.fract() != 0.0 || v.abs() > i32::MAX as f64 {
                                return Err(Diagnostic::new(
                                    "a `const` value must be an integer",
                                    d.span,
                                    "not an integer",
                                ));
                            }
                            v as i64
                        }
                        (None, None) => {
                            return Err(Diagnostic::new(
                                format!("`const {}` has no value", name.text),
                                name.span,
                                "give it a default (`= 4`) or a value when compiling",
                            ));
                        }
                    };
                    self.consts.push(ConstParam {
                        name: name.text.clone(),
                        value,
                    });
                }
            }
        }
        // Scalars may not shadow index variables; extents are known only now.
        for decl in ast.args.iter().chain(&ast.outputs) {
            let n = decl.name();
            if self.extent_by_name(&n.text).is_some() {
                return Err(Diagnostic::new(
                    format!("`{}` names both an argument and an extent", n.text),
                    n.span,
                    "rename the argument or the index",
                ));
            }
        }
        if self.params.iter().any(|p| p.ty.is_float())
            && self.tensors.iter().all(|t| !t.ty.is_float())
        {
            self.default_float = self
                .params
                .iter()
                .find(|p| p.ty.is_float())
                .map_or(ScalarType::F32, |p| p.ty);
        }
        Ok(())
    }

    /// Evaluates a constant expression (a pad value or a default).
    fn const_value(&self, e: &Expr) -> Res<f64> {
        match &e.kind {
            ExprKind::Int(v) => Ok(*v as f64),
            ExprKind::Float(v) => Ok(*v),
            ExprKind::Neg(a) => Ok(-self.const_value(a)?),
            ExprKind::Name(n) if n.text == "inf" => Ok(f64::INFINITY),
            ExprKind::Name(n) if n.text == "nan" => Ok(f64::NAN),
            _ => Err(Diagnostic::new(
                "expected a constant number",
                e.span,
                "not a constant",
            )),
        }
    }

    fn statement(&mut self, stmt: &AstStmt) -> Res<()> {
        let mut indices = Vec::new();
        let mut scope = Scope::default();
        for n in &stmt.indices {
            let Some(e) = self.extent_by_name(&n.text) else {
                return Err(Diagnostic::new(
                    format!("`{}` is not an extent", n.text),
                    n.span,
                    "no argument has a dimension of this name",
                ));
            };
            if scope.has(e) {
                return Err(Diagnostic::new(
                    format!("index `{}` appears twice", n.text),
                    n.span,
                    "repeated",
                ));
            }
            scope = scope.with(e);
            indices.push(e);
        }
        let existing = self.tensor_by_name(&stmt.target.text);
        let target_id = match existing {
            Some(id) => {
                let t = &self.tensors[id.0 as usize];
                match t.kind {
                    TensorKind::Input => {
                        return Err(Diagnostic::new(
                            format!("cannot write input `{}`", t.name),
                            stmt.target.span,
                            "an input is read-only",
                        )
                        .with_label(self.tensor_spans[id.0 as usize], "declared here")
                        .with_note(format!(
                            "declare it `{}: mut {}[...]` to update it in place",
                            t.name, t.ty
                        )));
                    }
                    _ if self.written[id.0 as usize] => {
                        return Err(Diagnostic::new(
                            format!("`{}` is written twice", t.name),
                            stmt.target.span,
                            "second write",
                        ));
                    }
                    _ => {}
                }
                let dims_match = t.dims.len() == indices.len()
                    && t.dims
                        .iter()
                        .zip(&indices)
                        .all(|(d, e)| d.0.as_var() == Some(*e));
                if !dims_match {
                    let want: Vec<String> = t
                        .dims
                        .iter()
                        .map(|d| affine_text(&d.0, &self.extents))
                        .collect();
                    return Err(Diagnostic::new(
                        format!(
                            "`{}` is declared `[{}]` but written with other indices",
                            t.name,
                            want.join(", ")
                        ),
                        stmt.target
                            .span
                            .join(stmt.indices.last().map_or(stmt.target.span, |n| n.span)),
                        format!("expected `{}[{}]`", t.name, want.join(", ")),
                    ));
                }
                Some(id)
            }
            None => {
                if self.params.iter().any(|p| p.name == stmt.target.text)
                    || self.consts.iter().any(|c| c.name == stmt.target.text)
                {
                    return Err(Diagnostic::new(
                        format!("cannot assign to scalar parameter `{}`", stmt.target.text),
                        stmt.target.span,
                        "a parameter is read-only",
                    ));
                }
                if self.extent_by_name(&stmt.target.text).is_some() {
                    return Err(Diagnostic::new(
                        format!("`{}` is an extent and cannot be assigned", stmt.target.text),
                        stmt.target.span,
                        "an index name",
                    ));
                }
                None
            }
        };
        let target = target_id.map(|tensor| Target {
            tensor,
            indices: &indices,
        });
        let value = self.expr(&stmt.value, scope, target)?;
        let want = target_id.map(|id| self.tensors[id.0 as usize].ty);
        let value = match (value, want) {
            (v, Some(ty)) => self.coerce(v, ty)?,
            (Val::Node(h), None) => h,
            (v @ Val::Num { is_int, .. }, None) => {
                let ty = if is_int {
                    ScalarType::I32
                } else {
                    self.default_float
                };
                self.coerce(v, ty)?
            }
        };
        let ty = self.nodes.ty(value);
        if ty == ScalarType::Bool {
            return Err(Diagnostic::new(
                "a tensor cannot hold a comparison; use `select(cond, a, b)`",
                stmt.value.span,
                "this is a `bool`",
            ));
        }
        let id = match target_id {
            Some(id) => id,
            None => {
                self.tensors.push(Tensor {
                    name: stmt.target.text.clone(),
                    kind: TensorKind::Temp,
                    ty,
                    dims: indices.iter().map(|e| Dim(Affine::var(*e))).collect(),
                    pad: None,
                });
                self.tensor_spans.push(stmt.target.span);
                self.written.push(false);
                TensorId(self.tensors.len() as u32 - 1)
            }
        };
        self.written[id.0 as usize] = true;
        self.stmts.push(Stmt {
            tensor: id,
            indices,
            value,
            span: stmt.span,
        });
        Ok(())
    }

    fn num_node(
        &mut self,
        value: f64,
        is_int: bool,
        span: Span,
        ty: ScalarType,
    ) -> Res<Handle<Node>> {
        match ty {
            ScalarType::F32 | ScalarType::F64 => {
                Ok(self.nodes.add(Node::ConstFloat(value.to_bits()), ty, span))
            }
            ScalarType::I32 => {
                if !is_int || value.fract() != 0.0 || value.abs() > i32::MAX as f64 {
                    return Err(Diagnostic::new(
                        "expected an `i32` value",
                        span,
                        "not an integer",
                    ));
                }
                Ok(self.nodes.add(Node::ConstInt(value as i64), ty, span))
            }
            ScalarType::Bool => Err(Diagnostic::new(
                "expected a comparison, found a number",
                span,
                "a number",
            )),
        }
    }

    /// Gives `v` the type `ty`: numbers take it, `i32` converts to a float.
    fn coerce(&mut self, v: Val, ty: ScalarType) -> Res<Handle<Node>> {
        match v {
            Val::Num {
                value,
                is_int,
                span,
            } => self.num_node(value, is_int, span, ty),
            Val::Node(h) => {
                let have = self.nodes.ty(h);
                if have == ty {
                    return Ok(h);
                }
                if have == ScalarType::I32 && ty.is_float() {
                    let span = self.span_of(h);
                    return Ok(self.nodes.add(Node::Cast(ty, h), ty, span));
                }
                Err(Diagnostic::new(
                    format!("mismatched types: expected `{ty}`, found `{have}`"),
                    self.span_of(h),
                    format!("this is `{have}`"),
                ))
            }
        }
    }

    fn span_of(&self, h: Handle<Node>) -> Span {
        // The builder keeps spans; NodeBuilder exposes them through finish only,
        // so look them up via a clone-free accessor.
        self.nodes.span(h)
    }

    fn val_span(&self, v: Val) -> Span {
        match v {
            Val::Node(h) => self.span_of(h),
            Val::Num { span, .. } => span,
        }
    }

    fn val_ty(&self, v: Val) -> Option<ScalarType> {
        match v {
            Val::Node(h) => Some(self.nodes.ty(h)),
            Val::Num { .. } => None,
        }
    }

    /// Brings two operands to one numeric type.
    fn unify(
        &mut self,
        a: Val,
        b: Val,
        what: &str,
        span: Span,
    ) -> Res<(Handle<Node>, Handle<Node>, ScalarType)> {
        let ty = match (self.val_ty(a), self.val_ty(b)) {
            (None, None) => unreachable_num(span)?,
            (Some(t), None) | (None, Some(t)) => {
                // A float number meeting an i32 makes the operation a float one.
                let other_num_is_float = matches!(a, Val::Num { is_int: false, .. })
                    || matches!(b, Val::Num { is_int: false, .. });
                if t == ScalarType::I32 && other_num_is_float {
                    self.default_float
                } else {
                    t
                }
            }
            (Some(x), Some(y)) if x == y => x,
            (Some(ScalarType::I32), Some(f)) | (Some(f), Some(ScalarType::I32)) if f.is_float() => {
                f
            }
            (Some(x), Some(y)) => {
                return Err(Diagnostic::new(
                    format!("mismatched types in {what}: `{x}` and `{y}`"),
                    span,
                    "operands of different types",
                )
                .with_label(self.val_span(a), format!("`{x}`"))
                .with_label(self.val_span(b), format!("`{y}`")));
            }
        };
        if ty == ScalarType::Bool {
            return Err(Diagnostic::new(
                format!("{what} needs numbers, found a comparison"),
                span,
                "a `bool`",
            ));
        }
        Ok((self.coerce(a, ty)?, self.coerce(b, ty)?, ty))
    }

    fn float_arg(&mut self, v: Val, span: Span) -> Res<(Handle<Node>, ScalarType)> {
        let ty = match self.val_ty(v) {
            Some(t) if t.is_float() => t,
            Some(ScalarType::Bool) => {
                return Err(Diagnostic::new(
                    "expected a number, found a comparison",
                    span,
                    "a `bool`",
                ));
            }
            _ => self.default_float,
        };
        Ok((self.coerce(v, ty)?, ty))
    }

    fn bool_arg(&mut self, v: Val, span: Span) -> Res<Handle<Node>> {
        match v {
            Val::Node(h) if self.nodes.ty(h) == ScalarType::Bool => Ok(h),
            _ => Err(Diagnostic::new(
                "expected a comparison (`bool`)",
                span,
                "not a `bool`",
            )),
        }
    }

    fn expr(&mut self, e: &Expr, scope: Scope, target: Option<Target>) -> Res<Val> {
        let span = e.span;
        match &e.kind {
            ExprKind::Int(v) => Ok(Val::Num {
                value: *v as f64,
                is_int: true,
                span,
            }),
            ExprKind::Float(v) => Ok(Val::Num {
                value: *v,
                is_int: false,
                span,
            }),
            ExprKind::Name(n) => self.name(n, scope, target),
            ExprKind::Neg(a) => {
                let a = self.expr(a, scope, target)?;
                match a {
                    Val::Num { value, is_int, .. } => Ok(Val::Num {
                        value: -value,
                        is_int,
                        span,
                    }),
                    Val::Node(h) => {
                        let ty = self.nodes.ty(h);
                        if ty == ScalarType::Bool {
                            return Err(Diagnostic::new(
                                "cannot negate a comparison; use `!`",
                                span,
                                "a `bool`",
                            ));
                        }
                        Ok(Val::Node(self.nodes.add(
                            Node::Unary(UnOp::Neg, h),
                            ty,
                            span,
                        )))
                    }
                }
            }
            ExprKind::Not(a) => {
                let a = self.expr(a, scope, target)?;
                let h = self.bool_arg(a, span)?;
                Ok(Val::Node(self.nodes.add(
                    Node::Unary(UnOp::Not, h),
                    ScalarType::Bool,
                    span,
                )))
            }
            ExprKind::Binary(op, a, b) => {
                let a = self.expr(a, scope, target)?;
                let b = self.expr(b, scope, target)?;
                self.binary(*op, a, b, span)
            }
            ExprKind::Index(n, subs) => self.load(n, subs, scope, target, span),
            ExprKind::Call(n, args) => self.call(n, args, scope, target, span),
            ExprKind::Reduce(n, axes, args) => self.reduce(n, axes, args, scope, target, span),
        }
    }

    fn binary(&mut self, op: AstBinOp, a: Val, b: Val, span: Span) -> Res<Val> {
        if let (
            Val::Num {
                value: x,
                is_int: xi,
                ..
            },
            Val::Num {
                value: y,
                is_int: yi,
                ..
            },
        ) = (a, b)
        {
            let is_int = xi && yi;
            let value = match op {
                AstBinOp::Add => x + y,
                AstBinOp::Sub => x - y,
                AstBinOp::Mul => x * y,
                AstBinOp::Div => {
                    return Ok(Val::Num {
                        value: x / y,
                        is_int: false,
                        span,
                    });
                }
                _ => {
                    return Err(Diagnostic::new(
                        format!(
                            "`{}` between two constants; write the result instead",
                            op.symbol()
                        ),
                        span,
                        "constant comparison",
                    ));
                }
            };
            return Ok(Val::Num {
                value,
                is_int,
                span,
            });
        }
        match op {
            AstBinOp::And | AstBinOp::Or => {
                let a = self.bool_arg(a, span)?;
                let b = self.bool_arg(b, span)?;
                let op = if op == AstBinOp::And {
                    BinOp::And
                } else {
                    BinOp::Or
                };
                Ok(Val::Node(self.nodes.add(
                    Node::Binary(op, a, b),
                    ScalarType::Bool,
                    span,
                )))
            }
            AstBinOp::Lt
            | AstBinOp::Le
            | AstBinOp::Gt
            | AstBinOp::Ge
            | AstBinOp::Eq
            | AstBinOp::Ne => {
                let (a, b, _) = self.unify(a, b, "a comparison", span)?;
                let cmp = match op {
                    AstBinOp::Lt => CmpOp::Lt,
                    AstBinOp::Le => CmpOp::Le,
                    AstBinOp::Gt => CmpOp::Gt,
                    AstBinOp::Ge => CmpOp::Ge,
                    AstBinOp::Eq => CmpOp::Eq,
                    _ => CmpOp::Ne,
                };
                Ok(Val::Node(self.nodes.add(
                    Node::Cmp(cmp, a, b),
                    ScalarType::Bool,
                    span,
                )))
            }
            _ => {
                let what = format!("`{}`", op.symbol());
                let (a, b, ty) = self.unify(a, b, &what, span)?;
                if op == AstBinOp::Div && ty == ScalarType::I32 {
                    return Err(Diagnostic::new(
                        "integer division is not supported",
                        span,
                        "both operands are `i32`",
                    )
                    .with_note("make one operand a float, e.g. `(i - j) / 2.0`"));
                }
                let bin = match op {
                    AstBinOp::Add => BinOp::Add,
                    AstBinOp::Sub => BinOp::Sub,
                    AstBinOp::Mul => BinOp::Mul,
                    _ => BinOp::Div,
                };
                Ok(Val::Node(self.nodes.add(Node::Binary(bin, a, b), ty, span)))
            }
        }
    }

    fn name(&mut self, n: &Name, scope: Scope, target: Option<Target>) -> Res<Val> {
        let span = n.span;
        if let Some(e) = self.extent_by_name(&n.text) {
            if !scope.has(e) {
                return Err(unbound(n));
            }
            return Ok(Val::Node(self.nodes.add(
                Node::IndexValue(e),
                ScalarType::I32,
                span,
            )));
        }
        if let Some(i) = self.params.iter().position(|p| p.name == n.text) {
            let ty = self.params[i].ty;
            return Ok(Val::Node(self.nodes.add(
                Node::Param(ParamId(i as u32)),
                ty,
                span,
            )));
        }
        if let Some(c) = self.consts.iter().find(|c| c.name == n.text) {
            return Ok(Val::Num {
                value: c.value as f64,
                is_int: true,
                span,
            });
        }
        match n.text.as_str() {
            "inf" => {
                return Ok(Val::Num {
                    value: f64::INFINITY,
                    is_int: false,
                    span,
                });
            }
            "nan" => {
                return Ok(Val::Num {
                    value: f64::NAN,
                    is_int: false,
                    span,
                });
            }
            _ => {}
        }
        if self.tensor_by_name(&n.text).is_some() {
            return self.load(n, &[], scope, target, span);
        }
        Err(Diagnostic::new(
            format!("unknown name `{}`", n.text),
            span,
            "not declared",
        ))
    }

    fn readable_tensor(&self, n: &Name, target: Option<Target>) -> Res<TensorId> {
        let Some(id) = self.tensor_by_name(&n.text) else {
            if self.failed.contains(&n.text) {
                return Err(Diagnostic::new(
                    format!(
                        "`{}` is unusable because its statement has an error",
                        n.text
                    ),
                    n.span,
                    "see the error above",
                ));
            }
            return Err(Diagnostic::new(
                format!("unknown tensor `{}`", n.text),
                n.span,
                "not declared",
            ));
        };
        let t = &self.tensors[id.0 as usize];
        let written = self.written[id.0 as usize];
        if t.kind == TensorKind::Output && !written {
            return Err(Diagnostic::new(
                format!("output `{}` is read before it is written", n.text),
                n.span,
                "read here",
            ));
        }
        let _ = target;
        Ok(id)
    }

    fn load(
        &mut self,
        n: &Name,
        subs: &[Expr],
        scope: Scope,
        target: Option<Target>,
        span: Span,
    ) -> Res<Val> {
        if self.extent_by_name(&n.text).is_some() || self.params.iter().any(|p| p.name == n.text) {
            return Err(Diagnostic::new(
                format!("`{}` is not a tensor and cannot be indexed", n.text),
                n.span,
                "a scalar",
            ));
        }
        let id = self.readable_tensor(n, target)?;
        let tensor = self.tensors[id.0 as usize].clone();
        if subs.len() != tensor.dims.len() {
            return Err(Diagnostic::new(
                format!(
                    "`{}` has {} dimension(s) but is indexed with {}",
                    n.text,
                    tensor.dims.len(),
                    subs.len()
                ),
                span,
                "wrong number of subscripts",
            ));
        }
        let mut index = Vec::new();
        for (d, (sub, dim)) in subs.iter().zip(&tensor.dims).enumerate() {
            let form = self.affine(sub, &mut |cx, name| {
                if let Some(e) = cx.extent_by_name(&name.text) {
                    if !scope.has(e) {
                        return Err(unbound(name));
                    }
                    return Ok(Some(Affine::var(e)));
                }
                if let Some(c) = cx.consts.iter().find(|c| c.name == name.text) {
                    return Ok(Some(Affine::constant(c.value)));
                }
                Ok(None)
            })?;
            match form {
                Some(form) => {
                    if form != dim.0 && tensor.pad.is_none() {
                        let dim_text = affine_text(&dim.0, &self.extents);
                        let sub_text = affine_text(&form, &self.extents);
                        let diag = match (form.as_var(), dim.0.as_var()) {
                            (Some(_), Some(_)) => Diagnostic::new(
                                format!(
                                    "extent mismatch: dimension {d} of `{}` has extent `{dim_text}`, indexed by `{sub_text}`",
                                    n.text
                                ),
                                sub.span,
                                format!("ranges over `{sub_text}`, not `{dim_text}`"),
                            ),
                            _ => Diagnostic::new(
                                format!(
                                    "subscript `{sub_text}` may fall outside dimension {d} of `{}` (`{dim_text}`)",
                                    n.text
                                ),
                                sub.span,
                                "may be out of range",
                            )
                            .with_note(format!(
                                "declare what an out-of-range read gives, e.g. `{}: {}[...] pad 0.0`",
                                n.text, tensor.ty
                            )),
                        };
                        return Err(diag);
                    }
                    index.push(Index::Affine(form));
                }
                None => {
                    let v = self.expr(sub, scope, target)?;
                    let h = match v {
                        Val::Node(h) if self.nodes.ty(h) == ScalarType::I32 => h,
                        _ => {
                            return Err(Diagnostic::new(
                                "a subscript must be an affine form of indices or an `i32` value",
                                sub.span,
                                "not an index",
                            ));
                        }
                    };
                    self.gathers += 1;
                    index.push(Index::Gather(h));
                }
            }
        }
        if let Some(t) = target
            && t.tensor == id
        {
            let same = index.len() == t.indices.len()
                && index
                    .iter()
                    .zip(t.indices)
                    .all(|(i, e)| *i == Index::Affine(Affine::var(*e)));
            if !same {
                return Err(Diagnostic::new(
                    format!(
                        "the statement updating `{}` in place may read it only at the element it writes",
                        n.text
                    ),
                    span,
                    "reads another element",
                ));
            }
        }
        let ty = tensor.ty;
        Ok(Val::Node(self.nodes.add(
            Node::Load { tensor: id, index },
            ty,
            span,
        )))
    }

    fn call(
        &mut self,
        n: &Name,
        args: &[Expr],
        scope: Scope,
        target: Option<Target>,
        span: Span,
    ) -> Res<Val> {
        let Some(&(_, arity)) = FUNCTIONS.iter().find(|f| f.0 == n.text) else {
            let mut d = Diagnostic::new(
                format!("unknown function `{}`", n.text),
                n.span,
                "not a built-in function",
            );
            if crate::parse::REDUCTIONS.contains(&n.text.as_str()) {
                d = d.with_note(format!(
                    "a reduction names its indices: `{}[i](...)`",
                    n.text
                ));
            } else {
                let names: Vec<&str> = FUNCTIONS.iter().map(|f| f.0).collect();
                d = d.with_note(format!("the functions are: {}", names.join(", ")));
            }
            return Err(d);
        };
        if args.len() != arity {
            return Err(Diagnostic::new(
                format!(
                    "`{}` takes {arity} argument(s), found {}",
                    n.text,
                    args.len()
                ),
                span,
                "wrong number of arguments",
            ));
        }
        if n.text == "len" {
            let ExprKind::Name(e) = &args[0].kind else {
                return Err(Diagnostic::new(
                    "`len` takes an extent name",
                    args[0].span,
                    "not a name",
                ));
            };
            let Some(id) = self.extent_by_name(&e.text) else {
                return Err(Diagnostic::new(
                    format!("`{}` is not an extent", e.text),
                    e.span,
                    "not an extent",
                ));
            };
            return Ok(Val::Node(self.nodes.add(
                Node::ExtentLen(id),
                ScalarType::I32,
                span,
            )));
        }
        if n.text == "pow" {
            let base = self.expr(&args[0], scope, target)?;
            let exponent = match self.expr(&args[1], scope, target)? {
                Val::Num { value, .. } => value,
                _ => {
                    return Err(Diagnostic::new(
                        "`pow` needs a constant exponent",
                        args[1].span,
                        "not a constant",
                    ));
                }
            };
            let (b, ty) = self.float_arg(base, args[0].span)?;
            return Ok(Val::Node(self.nodes.add(
                Node::Powf(b, exponent.to_bits()),
                ty,
                span,
            )));
        }
        let mut vals = Vec::new();
        for a in args {
            vals.push(self.expr(a, scope, target)?);
        }
        match n.text.as_str() {
            "select" => {
                let c = self.bool_arg(vals[0], args[0].span)?;
                let (a, b, ty) = match (vals[1], vals[2]) {
                    (Val::Num { .. }, Val::Num { is_int, .. }) => {
                        let ty = if is_int && matches!(vals[1], Val::Num { is_int: true, .. }) {
                            ScalarType::I32
                        } else {
                            self.default_float
                        };
                        (self.coerce(vals[1], ty)?, self.coerce(vals[2], ty)?, ty)
                    }
                    (x, y) => self.unify(x, y, "`select`", span)?,
                };
                Ok(Val::Node(self.nodes.add(Node::Select(c, a, b), ty, span)))
            }
            "min" | "max" => {
                let op = if n.text == "min" {
                    BinOp::Min
                } else {
                    BinOp::Max
                };
                if let (
                    Val::Num {
                        value: x,
                        is_int: xi,
                        ..
                    },
                    Val::Num {
                        value: y,
                        is_int: yi,
                        ..
                    },
                ) = (vals[0], vals[1])
                {
                    let value = if op == BinOp::Min {
                        nan_min(x, y)
                    } else {
                        nan_max(x, y)
                    };
                    return Ok(Val::Num {
                        value,
                        is_int: xi && yi,
                        span,
                    });
                }
                let (a, b, ty) = self.unify(vals[0], vals[1], &format!("`{}`", n.text), span)?;
                Ok(Val::Node(self.nodes.add(Node::Binary(op, a, b), ty, span)))
            }
            f => {
                let op = match f {
                    "exp" => UnOp::Exp,
                    "log" => UnOp::Log,
                    "log1p" => UnOp::Log1p,
                    "expm1" => UnOp::Expm1,
                    "sqrt" => UnOp::Sqrt,
                    "rsqrt" => UnOp::Rsqrt,
                    "abs" => UnOp::Abs,
                    "tanh" => UnOp::Tanh,
                    "sigmoid" => UnOp::Sigmoid,
                    "softplus" => UnOp::Softplus,
                    _ => UnOp::Sign,
                };
                let (a, ty) = self.float_arg(vals[0], args[0].span)?;
                Ok(Val::Node(self.nodes.add(Node::Unary(op, a), ty, span)))
            }
        }
    }

    fn reduce(
        &mut self,
        n: &Name,
        axes: &[Name],
        args: &[Expr],
        scope: Scope,
        target: Option<Target>,
        span: Span,
    ) -> Res<Val> {
        let op_name = n.text.as_str();
        let want_args = if op_name == "topk" { 2 } else { 1 };
        if args.len() != want_args {
            let form = if op_name == "topk" {
                "`topk[i](value, k)`"
            } else {
                "one argument"
            };
            return Err(Diagnostic::new(
                format!(
                    "`{op_name}[...]` takes {form}, found {} argument(s)",
                    args.len()
                ),
                span,
                "wrong number of arguments",
            ));
        }
        if axes.is_empty() {
            return Err(Diagnostic::new(
                "a reduction needs at least one index",
                n.span,
                "no index",
            ));
        }
        let mut inner = scope;
        let mut axis_ids = Vec::new();
        for a in axes {
            let Some(e) = self.extent_by_name(&a.text) else {
                return Err(Diagnostic::new(
                    format!("`{}` is not an extent", a.text),
                    a.span,
                    "no argument has a dimension of this name",
                ));
            };
            if inner.has(e) {
                return Err(Diagnostic::new(
                    format!("index `{}` is already bound here", a.text),
                    a.span,
                    "a reduction must range over a fresh index",
                ));
            }
            inner = inner.with(e);
            axis_ids.push(e);
        }
        let arg = self.expr(&args[0], inner, target)?;
        let op = match op_name {
            "sum" => ReduceOp::Sum,
            "max" => ReduceOp::Max,
            "min" => ReduceOp::Min,
            "mean" => ReduceOp::Mean,
            _ => {
                let k = match self.expr(&args[1], scope, target)? {
                    Val::Num {
                        value,
                        is_int: true,
                        ..
                    } if value >= 1.0 && value <= u32::MAX as f64 => value as u32,
                    _ => {
                        return Err(Diagnostic::new(
                            "`topk` needs a positive integer constant `k`",
                            args[1].span,
                            "not a positive constant",
                        ));
                    }
                };
                ReduceOp::TopK(k)
            }
        };
        let (arg, ty) = match (op, arg) {
            (ReduceOp::Mean | ReduceOp::TopK(_), v) => self.float_arg(v, args[0].span)?,
            (_, Val::Num { .. }) => self.float_arg(arg, args[0].span)?,
            (_, Val::Node(h)) => {
                let ty = self.nodes.ty(h);
                if ty == ScalarType::Bool {
                    return Err(Diagnostic::new(
                        "cannot reduce a comparison",
                        args[0].span,
                        "a `bool`",
                    ));
                }
                (h, ty)
            }
        };
        let free = self.free_of(arg);
        for (a, e) in axes.iter().zip(&axis_ids) {
            if free & (1 << e.0) == 0 {
                return Err(Diagnostic::new(
                    format!(
                        "the reduction is over `{}`, which its argument does not use",
                        a.text
                    ),
                    a.span,
                    "unused index",
                )
                .with_label(args[0].span, format!("does not depend on `{}`", a.text)));
            }
        }
        Ok(Val::Node(self.nodes.add(
            Node::Reduce {
                op,
                axes: axis_ids,
                arg,
            },
            ty,
            span,
        )))
    }

    /// Free index variables of a node built so far.
    fn free_of(&self, h: Handle<Node>) -> u64 {
        let mut stack = vec![h];
        let mut set = 0u64;
        let mut bound_cache: Vec<(Handle<Node>, u64)> = Vec::new();
        // Small expressions: a direct recursive walk with an explicit stack.
        fn walk(b: &NodeBuilder, h: Handle<Node>, cache: &mut Vec<(Handle<Node>, u64)>) -> u64 {
            if let Some(&(_, s)) = cache.iter().find(|(k, _)| *k == h) {
                return s;
            }
            let s = match b.node(h) {
                Node::IndexValue(e) => 1 << e.0,
                Node::Load { index, .. } => index.iter().fold(0, |acc, i| match i {
                    Index::Affine(a) => a.terms.iter().fold(acc, |acc, (v, _)| acc | 1 << v.0),
                    Index::Gather(g) => acc | walk(b, *g, cache),
                }),
                Node::Reduce { axes, arg, .. } => axes
                    .iter()
                    .fold(walk(b, *arg, cache), |acc, a| acc & !(1 << a.0)),
                other => other
                    .operands()
                    .into_iter()
                    .fold(0, |acc, o| acc | walk(b, o, cache)),
            };
            cache.push((h, s));
            s
        }
        while let Some(h) = stack.pop() {
            set |= walk(&self.nodes, h, &mut bound_cache);
        }
        set
    }
}

fn unreachable_num(span: Span) -> Res<ScalarType> {
    Err(Diagnostic::new(
        "an operation between two constants needs a typed operand",
        span,
        "here",
    ))
}

fn unbound(n: &Name) -> Diagnostic {
    Diagnostic::new(
        format!("index `{}` is not bound here", n.text),
        n.span,
        "neither on the left-hand side nor reduced over",
    )
    .with_note(format!(
        "add `{0}` to the left-hand side, or reduce over it: `sum[{0}](...)`",
        n.text
    ))
}

/// NaN-propagating maximum with `max(-0, +0) = +0`: the semantics of `max`.
pub fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a > b {
        a
    } else if b > a {
        b
    } else if a.is_sign_negative() {
        b
    } else {
        a
    }
}

/// NaN-propagating minimum with `min(-0, +0) = -0`: the semantics of `min`.
pub fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a < b {
        a
    } else if b < a {
        b
    } else if a.is_sign_negative() {
        a
    } else {
        b
    }
}

/// An affine form as DSL text.
pub fn affine_text(a: &Affine, extents: &[Extent]) -> String {
    let mut s = String::new();
    let _ = a.write(&mut s, extents);
    s
}
