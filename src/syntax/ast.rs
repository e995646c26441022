//! The abstract syntax tree of one `.deq` file.
//!
//! Owns the shape of parsed source: items, statements, expressions, types.
//! Guarantees: every node that a diagnostic can point at carries the [`Span`]
//! of the source text it came from; the tree is plain data (no resolution,
//! no types), so it can be printed, compared and re-parsed freely.

use crate::source::Span;

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A parsed file: its items in source order.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Use(UseItem),
    Const(ConstItem),
    Fn(FnItem),
    /// `layer` and `model` share one form; `model` has no hyper-parameters.
    Layer(LayerItem),
    Train(TrainItem),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Use(u) => u.span,
            Item::Const(c) => c.span,
            Item::Fn(f) => f.span,
            Item::Layer(l) => l.span,
            Item::Train(t) => t.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum UseTarget {
    /// `use nn;` — a stdlib module.
    Module(Ident),
    /// `use "path/to/file.deq";` — a file relative to the importing file.
    File { path: String, span: Span },
}

#[derive(Debug, Clone, PartialEq)]
pub struct UseItem {
    pub target: UseTarget,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConstItem {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// Types that a `fn` argument or hyper-parameter may be annotated with.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamType {
    Int(Span),
    Float(Span),
    Bool(Span),
    Tensor(TensorType),
}

/// `name: type = default` in a `fn` or layer parameter list.
#[derive(Debug, Clone, PartialEq)]
pub struct FnParam {
    pub name: Ident,
    pub ty: Option<ParamType>,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FnItem {
    pub name: Ident,
    pub params: Vec<FnParam>,
    /// `fn f(a) = expr;` is stored as a block with no statements.
    pub body: Block,
    pub span: Span,
}

/// `x: [B, 784]` in a layer or model signature.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: Ident,
    pub ty: TensorType,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LayerKind {
    Layer,
    Model,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayerItem {
    pub kind: LayerKind,
    pub name: Ident,
    /// `[h: int, bias: bool = true]`; always empty for a model.
    pub hyper: Vec<FnParam>,
    pub inputs: Vec<Input>,
    /// `-> [B, 10]` or `-> ([B, 4], [B, 2])`; `None` when omitted (inferred).
    pub output: Option<Vec<TensorType>>,
    pub body: Block,
    pub span: Span,
}

/// `key = value;` in a `train` block.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainEntry {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainItem {
    pub model: Ident,
    pub entries: Vec<TrainEntry>,
    pub span: Span,
}

/// Element type prefix of a tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    I64,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
}

/// One dimension of a written tensor type.
#[derive(Debug, Clone, PartialEq)]
pub enum DimSyntax {
    /// `*`: any number of leading dimensions (first position only).
    Rest(Span),
    /// An integer expression or a symbolic dimension name.
    Expr(Expr),
}

/// `f64[B, 4 * d]`; `dtype` is `None` when no prefix was written (f32).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorType {
    pub dtype: Option<DType>,
    pub dims: Vec<DimSyntax>,
    pub span: Span,
}

/// `{ stmts; tail }`: the value is `tail`, or the `return` statement's value.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub tail: Option<Box<Expr>>,
    pub span: Span,
}

/// One state of an `equilibrium`: `z: [B, 256]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EqState {
    pub name: Ident,
    pub ty: TensorType,
    pub span: Span,
}

/// `name = value` in a `with` clause.
#[derive(Debug, Clone, PartialEq)]
pub struct WithOption {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `let name = expr;`
    Let {
        name: Ident,
        value: Expr,
        span: Span,
    },
    /// `let (a, b) = expr;`
    LetTuple {
        names: Vec<Ident>,
        value: Expr,
        span: Span,
    },
    /// `param name: [dims] = init;`
    Param {
        name: Ident,
        ty: TensorType,
        init: Expr,
        span: Span,
    },
    /// `equilibrium z: [..] = body with ...;` (one state) or
    /// `equilibrium (a: [..], b: [..]) = (ea, eb) with ...;` (`tuple` is true).
    Equilibrium {
        states: Vec<EqState>,
        tuple: bool,
        body: Expr,
        options: Vec<WithOption>,
        span: Span,
    },
    /// `return expr;`
    Return { value: Expr, span: Span },
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Let { span, .. }
            | Stmt::LetTuple { span, .. }
            | Stmt::Param { span, .. }
            | Stmt::Equilibrium { span, .. }
            | Stmt::Return { span, .. } => *span,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    Add,
    Sub,
    Mul,
    Div,
    MatMul,
    Pow,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::MatMul => "@",
            BinOp::Pow => "^",
        }
    }
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Neg,
}

/// An argument of a call, positional or named (`k = 5`).
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

/// One item between `[` and `]` after an expression. Whether the brackets
/// index a tensor or instantiate a layer (`nn::Linear[784, 256]`) is decided
/// by name resolution, not by the parser.
#[derive(Debug, Clone, PartialEq)]
pub enum BracketItem {
    /// `i` (an index) or a positional hyper-parameter.
    Expr(Expr),
    /// `stride = 2`: a named hyper-parameter.
    Named {
        name: Ident,
        value: Expr,
        span: Span,
    },
    /// `lo:hi` or `lo:hi:step`, each part optional.
    Slice {
        start: Option<Expr>,
        end: Option<Expr>,
        step: Option<Expr>,
        span: Span,
    },
    /// `..`: all remaining leading dimensions.
    Ellipsis(Span),
}

impl BracketItem {
    pub fn span(&self) -> Span {
        match self {
            BracketItem::Expr(e) => e.span,
            BracketItem::Named { span, .. }
            | BracketItem::Slice { span, .. }
            | BracketItem::Ellipsis(span) => *span,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// `x`, `nn::Linear`: one or more identifiers joined by `::`.
    Path(Vec<Ident>),
    /// `(a, b)`; `()` is the empty tuple. `(a)` is just `a`.
    Tuple(Vec<Expr>),
    /// `[a, b, c]`: a list of dimensions or axes.
    List(Vec<Expr>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `callee(args)`.
    Call {
        callee: Box<Expr>,
        args: Vec<Arg>,
    },
    /// `base[items]`: indexing, slicing or layer instantiation.
    Bracket {
        base: Box<Expr>,
        items: Vec<BracketItem>,
    },
    /// `if cond { a } else { b }`: a compile-time choice (extension; the
    /// condition must be a constant bool, such as a `bool` hyper-parameter).
    If {
        cond: Box<Expr>,
        then: Block,
        otherwise: Block,
    },
}
