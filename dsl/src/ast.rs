//! The syntax tree of a kernel, as the parser reads it.
//!
//! The tree keeps names as strings and every node's [`Span`]; meaning
//! (extents, types, scopes) is given by [`crate::lower()`].

use crate::diag::Span;

/// A name with its place in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// The identifier.
    pub text: String,
    /// Where it is.
    pub span: Span,
}

/// A whole kernel: `kernel NAME(ARGS) -> (OUTPUTS) { STATEMENTS }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ast {
    /// The kernel's name.
    pub name: Name,
    /// The arguments in parentheses.
    pub args: Vec<ArgDecl>,
    /// The outputs after `->`.
    pub outputs: Vec<ArgDecl>,
    /// The body.
    pub body: Vec<AstStmt>,
}

/// One declared argument or output.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgDecl {
    /// `x: f32[b, i]`, `w: mut f32[i]`, `r: f32[j - i] pad 0.0`.
    Tensor {
        /// The name.
        name: Name,
        /// `mut`: updated in place.
        mutable: bool,
        /// The element type name.
        ty: Name,
        /// The dimensions, each an expression over extent names.
        dims: Vec<Expr>,
        /// `pad VALUE`.
        pad: Option<Expr>,
        /// The whole declaration.
        span: Span,
    },
    /// `tau: f32`.
    Scalar {
        /// The name.
        name: Name,
        /// The type name.
        ty: Name,
    },
    /// `const k: i32` or `const k: i32 = 4`.
    Const {
        /// The name.
        name: Name,
        /// The type name.
        ty: Name,
        /// The default value.
        default: Option<Expr>,
    },
}

impl ArgDecl {
    /// The declared name.
    pub fn name(&self) -> &Name {
        match self {
            ArgDecl::Tensor { name, .. }
            | ArgDecl::Scalar { name, .. }
            | ArgDecl::Const { name, .. } => name,
        }
    }
}

/// `target[indices] = value;`
#[derive(Debug, Clone, PartialEq)]
pub struct AstStmt {
    /// The tensor defined or written.
    pub target: Name,
    /// Its index variables (empty for a scalar).
    pub indices: Vec<Name>,
    /// The right-hand side.
    pub value: Expr,
    /// The whole statement.
    pub span: Span,
}

/// Binary operators of the surface syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum AstBinOp {
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl AstBinOp {
    /// The operator's spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            AstBinOp::Add => "+",
            AstBinOp::Sub => "-",
            AstBinOp::Mul => "*",
            AstBinOp::Div => "/",
            AstBinOp::Lt => "<",
            AstBinOp::Le => "<=",
            AstBinOp::Gt => ">",
            AstBinOp::Ge => ">=",
            AstBinOp::Eq => "==",
            AstBinOp::Ne => "!=",
            AstBinOp::And => "&&",
            AstBinOp::Or => "||",
        }
    }
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
}

/// The forms of an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// A name: parameter, constant, index variable, scalar tensor, `inf`, `nan`.
    Name(Name),
    /// `x[i, j - 1]`.
    Index(Name, Vec<Expr>),
    /// `exp(x)`, `max(a, b)`, `select(c, a, b)`.
    Call(Name, Vec<Expr>),
    /// `sum[i, j](x)`.
    Reduce(Name, Vec<Name>, Vec<Expr>),
    /// `-x`.
    Neg(Box<Expr>),
    /// `!c`.
    Not(Box<Expr>),
    /// `a op b`.
    Binary(AstBinOp, Box<Expr>, Box<Expr>),
}
