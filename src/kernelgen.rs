//! A random kernel generator (a csmith for passfold) and the differential
//! check that runs what it generates.
//!
//! [`Spec`] is a small, well-typed kernel model: statements over the indices
//! `b` (rows), `i` and `j`, each an [`Expr`] tree of element-wise operations,
//! reductions (nested, over one or two fresh indices), loads of a fixed menu
//! of inputs ([`Input`]: plain, padded with affine subscripts, gathered
//! through `t[b]`, relative `r[j - i]`), parameters, constants and index
//! values. Its `Display` is kernel text. [`generate`] builds one from any
//! [`Choices`] source (a seeded RNG, or a fuzzer's bytes), mixing random
//! statements with the dependent-reduction shapes the planner fuses
//! (max then sum of `exp(e - m)`, mean then mean of `(e - mu)^2`, shift,
//! linearity) and shapes it must not fuse.
//!
//! Guarantees: every generated spec checks; values stay in safe domains
//! by construction most of the time (`log(abs(e) + 0.5)`, `e / (abs(d) + 0.5)`),
//! and otherwise NaN is accepted consistently (see [`check`]). A [`Case`]
//! is a spec with extents and inputs; [`shrink_candidates`] lists simpler
//! cases (fewer statements, smaller expressions, smaller extents), which
//! [`minimize`] and the proptest value tree use to find a minimal failure.

pub mod check;
mod shrink;
mod text;

pub use check::{Outcome, check_case, check_kernel_text};
pub use shrink::{minimize, shrink_candidates};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A source of random choices: a seeded RNG, or a fuzzer's bytes.
pub trait Choices {
    /// A value in `0..n` (`n >= 1`).
    fn below(&mut self, n: u32) -> u32;

    /// True with probability `p` percent.
    fn percent(&mut self, p: u32) -> bool {
        self.below(100) < p
    }

    /// One of `items`.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u32) as usize]
    }
}

impl Choices for SmallRng {
    fn below(&mut self, n: u32) -> u32 {
        self.random_range(0..n.max(1))
    }
}

/// An index variable (and its extent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ix {
    /// `b`, the row index.
    B,
    /// `i`.
    I,
    /// `j`.
    J,
}

const ALL_IX: [Ix; 3] = [Ix::B, Ix::I, Ix::J];

impl Ix {
    fn bit(self) -> u8 {
        1 << self as u8
    }
    fn name(self) -> &'static str {
        ["b", "i", "j"][self as usize]
    }
}

/// The inputs a generated kernel may read, declared only when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    /// `x: f32[b, i]`.
    X,
    /// `w: f32[b, i]`.
    W,
    /// `u: f32[i]`.
    U,
    /// `v: f32[j]`.
    V,
    /// `z: f32[b, i, j]`.
    Z,
    /// `p: f32[b, i] pad 0.0`, read at affine subscripts.
    P,
    /// `r: f32[j - i]`, one value per offset.
    R,
    /// `t: i32[b]`, a gather target into `i`.
    T,
}

const ALL_INPUTS: [Input; 8] = [
    Input::X,
    Input::W,
    Input::U,
    Input::V,
    Input::Z,
    Input::P,
    Input::R,
    Input::T,
];

impl Input {
    fn decl(self, float: &str) -> String {
        match self {
            Input::X => format!("x: {float}[b, i]"),
            Input::W => format!("w: {float}[b, i]"),
            Input::U => format!("u: {float}[i]"),
            Input::V => format!("v: {float}[j]"),
            Input::Z => format!("z: {float}[b, i, j]"),
            Input::P => format!("p: {float}[b, i] pad 0.0"),
            Input::R => format!("r: {float}[j - i]"),
            Input::T => "t: i32[b]".to_string(),
        }
    }
    fn name(self) -> &'static str {
        ["x", "w", "u", "v", "z", "p", "r", "t"][self as usize]
    }
    /// The indices a read needs in scope.
    fn needs(self) -> u8 {
        match self {
            Input::X | Input::W | Input::P => Ix::B.bit() | Ix::I.bit(),
            Input::U => Ix::I.bit(),
            Input::V => Ix::J.bit(),
            Input::Z => 7,
            Input::R => Ix::I.bit() | Ix::J.bit(),
            Input::T => Ix::B.bit(),
        }
    }
    /// The extents declared as plain dimensions.
    fn plain(self) -> u8 {
        match self {
            Input::R => 0,
            other => other.needs(),
        }
    }
}

/// A subscript of a load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sub {
    /// `i`.
    Ix(Ix),
    /// `k·i + c` (only on padded `p`).
    Affine(Ix, i64, i64),
    /// `t[b]` (a gather).
    Gather,
    /// `j - i` (only on `r`).
    Rel,
}

/// Element-wise functions of one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Fn1 {
    Neg,
    Exp,
    Log,
    Log1p,
    Expm1,
    Sqrt,
    Rsqrt,
    Abs,
    Tanh,
    Sigmoid,
    Softplus,
    Sign,
}

const FN1: [Fn1; 12] = [
    Fn1::Neg,
    Fn1::Exp,
    Fn1::Log,
    Fn1::Log1p,
    Fn1::Expm1,
    Fn1::Sqrt,
    Fn1::Rsqrt,
    Fn1::Abs,
    Fn1::Tanh,
    Fn1::Sigmoid,
    Fn1::Softplus,
    Fn1::Sign,
];

impl Fn1 {
    fn name(self) -> &'static str {
        [
            "-", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "abs", "tanh", "sigmoid",
            "softplus", "sign",
        ][self as usize]
    }
}

/// Binary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op2 {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

/// Comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Cmp {
    fn symbol(self) -> &'static str {
        ["<", "<=", ">", ">=", "==", "!="][self as usize]
    }
}

/// Reductions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Red {
    Sum,
    Max,
    Min,
    Mean,
    TopK(u32),
}

/// A condition of `select`.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `a op b`.
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    /// `!c`.
    Not(Box<Cond>),
    /// `a && b`.
    And(Box<Cond>, Box<Cond>),
    /// `a || b`.
    Or(Box<Cond>, Box<Cond>),
}

/// An expression of a generated kernel.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A float literal (may be ±inf).
    Num(f64),
    /// Scalar parameter `a{n}`.
    Param(u8),
    /// A read of an input.
    Load(Input, Vec<Sub>),
    /// A read of an earlier statement's tensor at its own indices.
    Temp(usize),
    /// An index value (an `i32`).
    Index(Ix),
    /// `len(i)` (an `i32`).
    Len(Ix),
    /// `f(e)`.
    Unary(Fn1, Box<Expr>),
    /// `a op b`, `min(a, b)`, `max(a, b)`.
    Binary(Op2, Box<Expr>, Box<Expr>),
    /// `select(c, a, b)`.
    Select(Box<Cond>, Box<Expr>, Box<Expr>),
    /// `pow(e, n)`.
    Pow(Box<Expr>, i32),
    /// `op[axes](e)`.
    Reduce(Red, Vec<Ix>, Box<Expr>),
}

/// One statement: `name[indices] = value;`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    /// Its indices, in order.
    pub indices: Vec<Ix>,
    /// The right-hand side.
    pub value: Expr,
    /// Whether it defines an output (`y{n}`) rather than a temporary (`q{n}`).
    pub output: bool,
}

/// A generated kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Statements in order; an expression reads only earlier ones.
    pub stmts: Vec<Stmt>,
}

/// A spec with the extents and inputs to run it on.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The kernel.
    pub spec: Spec,
    /// Lengths of `b`, `i`, `j` (only those the kernel declares are used).
    pub extents: [i64; 3],
    /// Seed of the input values.
    pub input_seed: u64,
    /// The input distribution.
    pub fill: Fill,
    /// Also compile and check the kernel with `f32` as `f64`.
    pub also_f64: bool,
}

/// How float inputs are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// Uniform in `[-s, s)`, rounded to `f32`.
    Uniform(f64),
    /// Uniform in `[-3, 3)`, with one value in eight a special
    /// (NaN, ±inf, ±0, ±1e38, a denormal).
    Specials,
}

// ---------------------------------------------------------------------------
// Generation.

struct Gen<'c, C: Choices> {
    ch: &'c mut C,
    stmts: Vec<Stmt>,
}

/// Generates a case from a seed.
pub fn generate_case(seed: u64) -> Case {
    let mut rng = SmallRng::seed_from_u64(seed);
    generate_case_with(&mut rng)
}

/// Generates a case from any choice source.
pub fn generate_case_with(ch: &mut impl Choices) -> Case {
    let spec = generate(ch);
    let extents = [
        *ch.pick(&[1, 2, 3, 1, 2, 0]),
        *ch.pick(&[1, 2, 3, 4, 5, 7, 8, 16, 17, 33, 0]),
        *ch.pick(&[1, 2, 3, 4, 5, 0]),
    ];
    let fill = match ch.below(10) {
        0..=5 => Fill::Uniform(3.0),
        6 => Fill::Uniform(0.5),
        7 => Fill::Uniform(40.0),
        _ => Fill::Specials,
    };
    Case {
        spec,
        extents,
        input_seed: ch.below(u32::MAX) as u64,
        fill,
        also_f64: ch.percent(30),
    }
}

/// Generates a well-typed kernel. The generator is built to produce only
/// kernels that check; should one not, it draws again (a few times, then
/// falls back to a fixed kernel), so fuzzers always get a valid one.
pub fn generate(ch: &mut impl Choices) -> Spec {
    for _ in 0..8 {
        let spec = generate_once(ch);
        let src = spec.to_string();
        if passfold_dsl::check(&src, &passfold_dsl::LowerOptions::default()).is_ok() {
            return spec;
        }
        debug_assert!(
            false,
            "the generator made a kernel that does not check:\n{src}"
        );
    }
    Spec {
        stmts: vec![Stmt {
            indices: vec![Ix::B],
            value: red(
                Red::Sum,
                &[Ix::I],
                Expr::Load(Input::X, vec![Sub::Ix(Ix::B), Sub::Ix(Ix::I)]),
            ),
            output: true,
        }],
    }
}

fn generate_once(ch: &mut impl Choices) -> Spec {
    let mut g = Gen {
        ch,
        stmts: Vec::new(),
    };
    let n_groups = 1 + g.ch.below(3);
    for _ in 0..n_groups {
        match g.ch.below(12) {
            0..=3 => g.random_stmt(false),
            4 => g.template_exp_shift(),
            5 => g.template_moments(),
            6 => g.template_shift(),
            7 => g.template_linear(),
            8 => g.template_not_fusable(),
            9 => g.template_masked(),
            10 => g.template_mismatched_shift(),
            _ => g.elementwise_temp(),
        }
    }
    // One or two outputs, reading what came before.
    let n_out = 1 + g.ch.below(2);
    for _ in 0..n_out {
        g.random_stmt(true);
    }
    Spec { stmts: g.stmts }
}

fn bx(e: Expr) -> Box<Expr> {
    Box::new(e)
}

fn bin(op: Op2, a: Expr, b: Expr) -> Expr {
    Expr::Binary(op, bx(a), bx(b))
}

fn un(f: Fn1, a: Expr) -> Expr {
    Expr::Unary(f, bx(a))
}

fn red(op: Red, axes: &[Ix], a: Expr) -> Expr {
    Expr::Reduce(op, axes.to_vec(), bx(a))
}

const NUMS: [f64; 12] = [
    0.0, 0.5, 1.0, 2.0, -1.0, 3.0, 0.1, 1e-3, 10.0, -0.25, 1.5, 0.75,
];

impl<C: Choices> Gen<'_, C> {
    fn push(&mut self, indices: Vec<Ix>, value: Expr, output: bool) -> usize {
        self.stmts.push(Stmt {
            indices,
            value,
            output,
        });
        self.stmts.len() - 1
    }

    fn mask(indices: &[Ix]) -> u8 {
        indices.iter().fold(0, |m, i| m | i.bit())
    }

    /// A random statement; outputs get at least one index.
    fn random_stmt(&mut self, output: bool) {
        let indices = self.random_indices(output);
        let scope = Self::mask(&indices);
        let value = if self.ch.percent(60) && scope != 7 {
            self.reduction(scope, 3)
        } else {
            self.expr(scope, 3)
        };
        self.push(indices, value, output);
    }

    fn random_indices(&mut self, output: bool) -> Vec<Ix> {
        let sets: &[&[Ix]] = &[
            &[Ix::B],
            &[Ix::B],
            &[Ix::B, Ix::I],
            &[Ix::B, Ix::I],
            &[Ix::I],
            &[Ix::I, Ix::B],
            &[Ix::B, Ix::J],
            &[Ix::I, Ix::J],
            &[Ix::B, Ix::I, Ix::J],
            &[],
        ];
        loop {
            let s = *self.ch.pick(sets);
            if !(output && s.is_empty()) {
                return s.to_vec();
            }
        }
    }

    /// A row expression over `b, i` (the `E` of the templates).
    fn row_expr(&mut self) -> Expr {
        let e = self.expr(Ix::B.bit() | Ix::I.bit(), 2);
        self.anchor(e, Ix::B.bit() | Ix::I.bit(), Ix::I.bit())
    }

    fn temp(&mut self, indices: &[Ix], value: Expr) -> Expr {
        let k = self.push(indices.to_vec(), value, false);
        Expr::Temp(k)
    }

    /// `m = max(E); s = sum(exp(E - m)); [out = m + log s]`.
    fn template_exp_shift(&mut self) {
        let e = self.row_expr();
        let m = self.temp(&[Ix::B], red(Red::Max, &[Ix::I], e.clone()));
        let term = un(Fn1::Exp, bin(Op2::Sub, e.clone(), m.clone()));
        let term = if self.ch.percent(30) {
            let w = un(Fn1::Abs, self.leaf(Ix::B.bit() | Ix::I.bit()));
            bin(Op2::Mul, w, term)
        } else {
            term
        };
        let s = self.temp(&[Ix::B], red(Red::Sum, &[Ix::I], term));
        match self.ch.below(3) {
            0 => {
                self.temp(&[Ix::B], bin(Op2::Add, m, un(Fn1::Log, s)));
            }
            1 => {
                let y = bin(Op2::Div, un(Fn1::Exp, bin(Op2::Sub, e, m)), s);
                self.temp(&[Ix::B, Ix::I], y);
            }
            _ => {}
        }
    }

    /// `mu = mean(E); var = mean((E - mu)^2)`.
    fn template_moments(&mut self) {
        let e = self.row_expr();
        let mu = self.temp(&[Ix::B], red(Red::Mean, &[Ix::I], e.clone()));
        let dev = bin(Op2::Sub, e, mu);
        let sq = if self.ch.percent(50) {
            Expr::Pow(bx(dev), 2)
        } else {
            bin(Op2::Mul, dev.clone(), dev)
        };
        let op = *self.ch.pick(&[Red::Mean, Red::Sum]);
        let var = self.temp(&[Ix::B], red(op, &[Ix::I], sq));
        if self.ch.percent(50) {
            self.temp(&[Ix::B], un(Fn1::Sqrt, bin(Op2::Add, var, Expr::Num(0.1))));
        }
    }

    /// `mu = mean(E); y = max(E - mu)` (the shift rule).
    fn template_shift(&mut self) {
        let e = self.row_expr();
        let op = *self.ch.pick(&[Red::Mean, Red::Max, Red::Min, Red::Sum]);
        let c = self.temp(&[Ix::B], red(op, &[Ix::I], e.clone()));
        let op2 = *self.ch.pick(&[Red::Max, Red::Min]);
        self.temp(&[Ix::B], red(op2, &[Ix::I], bin(Op2::Sub, e, c)));
    }

    /// `m = max(E); y = sum(k·E + m)` (linearity).
    fn template_linear(&mut self) {
        let e = self.row_expr();
        let m = self.temp(&[Ix::B], red(Red::Max, &[Ix::I], e.clone()));
        let k = Expr::Num(*self.ch.pick(&NUMS));
        let op = *self.ch.pick(&[Red::Sum, Red::Mean]);
        self.temp(
            &[Ix::B],
            red(op, &[Ix::I], bin(Op2::Add, bin(Op2::Mul, k, e), m)),
        );
    }

    /// Dependent reductions no rule may fuse: `max(abs(E - mu))`, `sum(sqrt(abs(E - m)))`.
    fn template_not_fusable(&mut self) {
        let e = self.row_expr();
        let op = *self.ch.pick(&[Red::Mean, Red::Max]);
        let c = self.temp(&[Ix::B], red(op, &[Ix::I], e.clone()));
        let f = *self
            .ch
            .pick(&[Fn1::Abs, Fn1::Tanh, Fn1::Sigmoid, Fn1::Sign]);
        let inner = un(f, bin(Op2::Sub, e, c));
        let inner = if self.ch.percent(50) {
            un(Fn1::Sqrt, un(Fn1::Abs, inner))
        } else {
            inner
        };
        let op2 = *self.ch.pick(&[Red::Sum, Red::Max, Red::Mean]);
        self.temp(&[Ix::B], red(op2, &[Ix::I], inner));
    }

    /// A causal mask over `j <= i`: `m[b, i] = max[j](select(j <= i, E, -inf))`, then the exp-shifted sum.
    fn template_masked(&mut self) {
        let scope = 7;
        let e = self.expr(scope, 2);
        let e = self.anchor(e, scope, Ix::J.bit());
        let masked = Expr::Select(
            Box::new(Cond::Cmp(
                Cmp::Le,
                bx(Expr::Index(Ix::J)),
                bx(Expr::Index(Ix::I)),
            )),
            bx(e),
            bx(Expr::Num(f64::NEG_INFINITY)),
        );
        let s = self.temp(&[Ix::B, Ix::I, Ix::J], masked);
        let m = self.temp(&[Ix::B, Ix::I], red(Red::Max, &[Ix::J], s.clone()));
        let l = self.temp(
            &[Ix::B, Ix::I],
            red(
                Red::Sum,
                &[Ix::J],
                un(Fn1::Exp, bin(Op2::Sub, s.clone(), m.clone())),
            ),
        );
        if self.ch.percent(50) {
            let v = self.leaf(scope);
            let v = self.anchor(v, scope, Ix::J.bit());
            let num = red(
                Red::Sum,
                &[Ix::J],
                bin(Op2::Mul, un(Fn1::Exp, bin(Op2::Sub, s, m)), v),
            );
            self.temp(&[Ix::B, Ix::I], bin(Op2::Div, num, l));
        }
    }

    /// A shift by the max of one expression used with another:
    /// `m = max(E1); s = sum(exp(E2 - m))` (must not be treated as E1's logsumexp).
    fn template_mismatched_shift(&mut self) {
        let e1 = self.row_expr();
        let e2 = self.row_expr();
        let op = *self.ch.pick(&[Red::Max, Red::Min, Red::Mean]);
        let m = self.temp(&[Ix::B], red(op, &[Ix::I], e1));
        self.temp(
            &[Ix::B],
            red(Red::Sum, &[Ix::I], un(Fn1::Exp, bin(Op2::Sub, e2, m))),
        );
    }

    /// An element-wise temporary over `[b, i]`, then a reduction of it.
    fn elementwise_temp(&mut self) {
        let e = self.row_expr();
        let q = self.temp(&[Ix::B, Ix::I], e);
        let op = *self.ch.pick(&[Red::Sum, Red::Max, Red::Mean, Red::Min]);
        let g = self.expr(Ix::B.bit() | Ix::I.bit(), 1);
        self.temp(&[Ix::B], red(op, &[Ix::I], bin(Op2::Mul, q, g)));
    }

    /// A reduction over one or two indices not in `scope`.
    fn reduction(&mut self, scope: u8, depth: u32) -> Expr {
        let free: Vec<Ix> = ALL_IX
            .into_iter()
            .filter(|ix| scope & ix.bit() == 0)
            .collect();
        let first = *self.ch.pick(&free);
        let mut axes = vec![first];
        if free.len() > 1 && self.ch.percent(25) {
            let second = *self.ch.pick(&free);
            if second != first {
                axes.push(second);
            }
        }
        let inner = scope | Self::mask(&axes);
        let arg = self.expr(inner, depth.saturating_sub(1));
        let arg = self.anchor(arg, inner, Self::mask(&axes));
        let op = match self.ch.below(20) {
            0..=7 => Red::Sum,
            8..=11 => Red::Max,
            12..=14 => Red::Min,
            15..=18 => Red::Mean,
            _ => Red::TopK(1 + self.ch.below(3)),
        };
        Expr::Reduce(op, axes, bx(arg))
    }

    /// Makes `e` use every index of `need` (a reduction must use its axes).
    fn anchor(&mut self, e: Expr, scope: u8, need: u8) -> Expr {
        let mut e = e;
        for ix in ALL_IX {
            if need & ix.bit() != 0 && uses(&e, &self.stmts) & ix.bit() == 0 {
                let a = self.load_using(scope, ix);
                let op = *self.ch.pick(&[Op2::Add, Op2::Mul, Op2::Sub, Op2::Max]);
                e = bin(op, e, a);
            }
        }
        e
    }

    /// A leaf that uses `ix`, within `scope`.
    fn load_using(&mut self, scope: u8, ix: Ix) -> Expr {
        let mut options: Vec<Expr> = self.loads(scope);
        options.retain(|l| uses(l, &self.stmts) & ix.bit() != 0);
        if options.is_empty() || self.ch.percent(10) {
            return self.index_value(ix);
        }
        let k = self.ch.below(options.len() as u32) as usize;
        options.swap_remove(k)
    }

    /// An index value as a float (`i` meeting a float literal converts).
    fn index_value(&mut self, ix: Ix) -> Expr {
        let c = Expr::Num(*self.ch.pick(&[0.5, 0.25, -1.0, 1.0]));
        if self.ch.percent(50) {
            bin(Op2::Mul, Expr::Index(ix), c)
        } else {
            bin(Op2::Sub, Expr::Index(ix), c)
        }
    }

    /// Every load and temporary readable in `scope`.
    fn loads(&self, scope: u8) -> Vec<Expr> {
        let mut out = Vec::new();
        for input in ALL_INPUTS {
            if input.needs() & !scope != 0 {
                continue;
            }
            match input {
                Input::X | Input::W => {
                    out.push(Expr::Load(input, vec![Sub::Ix(Ix::B), Sub::Ix(Ix::I)]))
                }
                Input::U => out.push(Expr::Load(input, vec![Sub::Ix(Ix::I)])),
                Input::V => out.push(Expr::Load(input, vec![Sub::Ix(Ix::J)])),
                Input::Z => out.push(Expr::Load(
                    input,
                    vec![Sub::Ix(Ix::B), Sub::Ix(Ix::I), Sub::Ix(Ix::J)],
                )),
                Input::P => {
                    for (k, c) in [(1, 1), (1, -1), (2, 0), (-1, 2)] {
                        out.push(Expr::Load(
                            input,
                            vec![Sub::Ix(Ix::B), Sub::Affine(Ix::I, k, c)],
                        ));
                    }
                }
                Input::R => out.push(Expr::Load(input, vec![Sub::Rel])),
                Input::T => {
                    out.push(bin(
                        Op2::Mul,
                        Expr::Load(Input::T, vec![Sub::Ix(Ix::B)]),
                        Expr::Num(0.5),
                    ));
                    out.push(Expr::Load(Input::X, vec![Sub::Ix(Ix::B), Sub::Gather]));
                }
            }
        }
        for (k, s) in self.stmts.iter().enumerate() {
            if Self::mask(&s.indices) & !scope == 0 && !s.output {
                out.push(Expr::Temp(k));
            }
        }
        out
    }

    fn leaf(&mut self, scope: u8) -> Expr {
        let loads = self.loads(scope);
        match self.ch.below(10) {
            0..=5 if !loads.is_empty() => loads[self.ch.below(loads.len() as u32) as usize].clone(),
            6 => Expr::Param(self.ch.below(2) as u8),
            7 => {
                let set: Vec<Ix> = ALL_IX
                    .into_iter()
                    .filter(|ix| scope & ix.bit() != 0)
                    .collect();
                if set.is_empty() {
                    Expr::Num(*self.ch.pick(&NUMS))
                } else {
                    let ix = *self.ch.pick(&set);
                    self.index_value(ix)
                }
            }
            8 if self.ch.percent(30) => {
                let ix = *self.ch.pick(&ALL_IX);
                bin(Op2::Mul, Expr::Len(ix), Expr::Num(0.5))
            }
            _ => Expr::Num(*self.ch.pick(&NUMS)),
        }
    }

    fn expr(&mut self, scope: u8, depth: u32) -> Expr {
        if depth == 0 || self.ch.percent(20) {
            return self.leaf(scope);
        }
        let d = depth - 1;
        match self.ch.below(20) {
            0..=5 => {
                let op = *self
                    .ch
                    .pick(&[Op2::Add, Op2::Sub, Op2::Mul, Op2::Min, Op2::Max]);
                let a = self.expr(scope, d);
                let b = self.expr(scope, d);
                bin(op, a, b)
            }
            6 => {
                let a = self.expr(scope, d);
                let b = self.expr(scope, d);
                if self.ch.percent(80) {
                    let safe = bin(Op2::Add, un(Fn1::Abs, b), Expr::Num(0.5));
                    bin(Op2::Div, a, safe)
                } else {
                    bin(Op2::Div, a, b)
                }
            }
            7..=11 => {
                let f = *self.ch.pick(&FN1);
                let a = self.expr(scope, d);
                let safe_domain = matches!(f, Fn1::Log | Fn1::Log1p | Fn1::Sqrt | Fn1::Rsqrt);
                if safe_domain && self.ch.percent(80) {
                    un(f, bin(Op2::Add, un(Fn1::Abs, a), Expr::Num(0.5)))
                } else if matches!(f, Fn1::Exp | Fn1::Expm1) && self.ch.percent(70) {
                    un(f, un(Fn1::Tanh, a))
                } else {
                    un(f, a)
                }
            }
            12..=13 => {
                let cond = self.cond(scope, d);
                let a = self.expr(scope, d);
                let b = if self.ch.percent(15) {
                    Expr::Num(f64::NEG_INFINITY)
                } else {
                    self.expr(scope, d)
                };
                Expr::Select(Box::new(cond), bx(a), bx(b))
            }
            14 => {
                let a = self.expr(scope, d);
                Expr::Pow(bx(a), *self.ch.pick(&[2, 3]))
            }
            15..=17 if scope != 7 => self.reduction(scope, d),
            _ => self.leaf(scope),
        }
    }

    fn cond(&mut self, scope: u8, depth: u32) -> Cond {
        let op = *self
            .ch
            .pick(&[Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge, Cmp::Eq, Cmp::Ne]);
        let a = self.expr(scope, depth.min(1));
        let mut b = self.leaf(scope);
        if is_num(&a) && is_num(&b) {
            // The checker refuses a comparison of two constants.
            b = Expr::Param(0);
        }
        let c = Cond::Cmp(op, bx(a), bx(b));
        match self.ch.below(10) {
            0 => Cond::Not(Box::new(c)),
            1 => {
                let other = self.cond(scope, 0);
                Cond::And(Box::new(c), Box::new(other))
            }
            2 => {
                let other = self.cond(scope, 0);
                Cond::Or(Box::new(c), Box::new(other))
            }
            _ => c,
        }
    }
}

/// Whether `e` folds to a number in the checker (no typed operand).
fn is_num(e: &Expr) -> bool {
    match e {
        Expr::Num(_) => true,
        Expr::Unary(Fn1::Neg, a) => is_num(a),
        Expr::Binary(_, a, b) => is_num(a) && is_num(b),
        _ => false,
    }
}

/// The indices an expression uses (free ones, as a bit set).
fn uses(e: &Expr, stmts: &[Stmt]) -> u8 {
    match e {
        Expr::Num(_) | Expr::Param(_) | Expr::Len(_) => 0,
        Expr::Index(ix) => ix.bit(),
        Expr::Load(input, subs) => {
            subs.iter().fold(0, |m, s| {
                m | match s {
                    Sub::Ix(ix) | Sub::Affine(ix, ..) => ix.bit(),
                    Sub::Gather => Ix::B.bit(),
                    Sub::Rel => Ix::I.bit() | Ix::J.bit(),
                }
            }) | if *input == Input::R {
                Ix::I.bit() | Ix::J.bit()
            } else {
                0
            }
        }
        Expr::Temp(k) => stmts
            .get(*k)
            .map_or(0, |s| s.indices.iter().fold(0, |m, i| m | i.bit())),
        Expr::Unary(_, a) | Expr::Pow(a, _) => uses(a, stmts),
        Expr::Binary(_, a, b) => uses(a, stmts) | uses(b, stmts),
        Expr::Select(c, a, b) => cond_uses(c, stmts) | uses(a, stmts) | uses(b, stmts),
        Expr::Reduce(_, axes, a) => uses(a, stmts) & !axes.iter().fold(0, |m, i| m | i.bit()),
    }
}

fn cond_uses(c: &Cond, stmts: &[Stmt]) -> u8 {
    match c {
        Cond::Cmp(_, a, b) => uses(a, stmts) | uses(b, stmts),
        Cond::Not(a) => cond_uses(a, stmts),
        Cond::And(a, b) | Cond::Or(a, b) => cond_uses(a, stmts) | cond_uses(b, stmts),
    }
}
