//! Lowering: pest pairs of a successful parse to AST nodes.
//!
//! Owns one `lower_<rule>` function per grammar rule that carries content.
//! Guarantees: spans are the byte ranges pest matched, stamped with the
//! file's id; every expression tree is at most [`MAX_NESTING`] deep (each
//! lowering returns the depth it built, and a deeper tree is a
//! [`ParseError::TooDeep`]); a missing child is impossible by the grammar
//! (see [`next`]), so user input cannot make lowering panic.

use pest::iterators::{Pair, Pairs};

use super::ast::{self, Expr, ExprKind};
use super::error::{byte_span, ParseError};
use super::parser::{children, next, pratt, Rule, MAX_NESTING};
use crate::source::{FileId, Span};

type PResult<T> = Result<T, ParseError>;
/// A lowered expression and the depth of its tree.
type Ex = (Expr, usize);

pub(super) struct Lower {
    file: FileId,
}

impl Lower {
    pub(super) fn new(file: FileId) -> Lower {
        Lower { file }
    }

    fn span(&self, s: pest::Span<'_>) -> Span {
        Span::new(self.file, s.start(), s.end())
    }

    fn too_deep(&self, span: Span) -> ParseError {
        ParseError::TooDeep {
            limit: MAX_NESTING,
            span: span.into(),
        }
    }

    /// An expression node one level above children of depth `depth`.
    fn node(&self, kind: ExprKind, span: Span, depth: usize) -> PResult<Ex> {
        if depth + 1 > MAX_NESTING {
            return Err(self.too_deep(span));
        }
        Ok((Expr { kind, span }, depth + 1))
    }

    pub(super) fn lower_file(&self, pair: Pair<'_, Rule>) -> PResult<ast::File> {
        let mut items = Vec::new();
        for p in children(pair) {
            items.push(match p.as_rule() {
                Rule::use_item => ast::Item::Use(self.lower_use_item(p)?),
                Rule::const_item => ast::Item::Const(self.lower_const_item(p)?),
                Rule::fn_item => ast::Item::Fn(self.lower_fn_item(p)?),
                Rule::layer_item => ast::Item::Layer(self.lower_layer_item(p)?),
                Rule::model_item => ast::Item::Layer(self.lower_model_item(p)?),
                Rule::train_item => ast::Item::Train(self.lower_train_item(p)?),
                r => unreachable!("the grammar rule `item` has no alternative {r:?}"),
            });
        }
        Ok(ast::File { items })
    }

    fn lower_ident(&self, pair: Pair<'_, Rule>) -> ast::Ident {
        ast::Ident {
            name: pair.as_str().to_string(),
            span: self.span(pair.as_span()),
        }
    }

    fn lower_use_item(&self, pair: Pair<'_, Rule>) -> PResult<ast::UseItem> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let target = next(&mut it, "use_item");
        let target = match target.as_rule() {
            Rule::string => ast::UseTarget::File {
                span: self.span(target.as_span()),
                path: self.lower_string(target)?,
            },
            _ => ast::UseTarget::Module(self.lower_ident(target)),
        };
        Ok(ast::UseItem { target, span })
    }

    fn lower_const_item(&self, pair: Pair<'_, Rule>) -> PResult<ast::ConstItem> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let name = self.lower_ident(next(&mut it, "const_item"));
        let value = self.expr(next(&mut it, "const_item"))?;
        Ok(ast::ConstItem { name, value, span })
    }

    fn lower_fn_item(&self, pair: Pair<'_, Rule>) -> PResult<ast::FnItem> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let name = self.lower_ident(next(&mut it, "fn_item"));
        let params = self.lower_fn_params(next(&mut it, "fn_item"))?;
        let body = next(&mut it, "fn_item");
        let body = match body.as_rule() {
            Rule::fn_eq_body => self.lower_fn_eq_body(body)?,
            _ => self.lower_block(body)?.0,
        };
        Ok(ast::FnItem {
            name,
            params,
            body,
            span,
        })
    }

    /// `= expr;` as a block with no statements.
    fn lower_fn_eq_body(&self, pair: Pair<'_, Rule>) -> PResult<ast::Block> {
        let span = self.span(pair.as_span());
        let tail = self.expr(next(&mut children(pair), "fn_eq_body"))?;
        Ok(ast::Block {
            stmts: Vec::new(),
            tail: Some(Box::new(tail)),
            span,
        })
    }

    fn lower_fn_params(&self, pair: Pair<'_, Rule>) -> PResult<Vec<ast::FnParam>> {
        children(pair).map(|p| self.lower_fn_param(p)).collect()
    }

    fn lower_fn_param(&self, pair: Pair<'_, Rule>) -> PResult<ast::FnParam> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let name = self.lower_ident(next(&mut it, "fn_param"));
        let (mut ty, mut default) = (None, None);
        for p in it {
            match p.as_rule() {
                Rule::param_type => ty = Some(self.lower_param_type(p)?),
                _ => default = Some(self.expr(p)?),
            }
        }
        Ok(ast::FnParam {
            name,
            ty,
            default,
            span,
        })
    }

    fn lower_param_type(&self, pair: Pair<'_, Rule>) -> PResult<ast::ParamType> {
        let p = next(&mut children(pair), "param_type");
        let span = self.span(p.as_span());
        Ok(match p.as_rule() {
            Rule::ty_int => ast::ParamType::Int(span),
            Rule::ty_float => ast::ParamType::Float(span),
            Rule::ty_bool => ast::ParamType::Bool(span),
            _ => ast::ParamType::Tensor(self.lower_tensor_type(p)?.0),
        })
    }

    fn lower_layer_item(&self, pair: Pair<'_, Rule>) -> PResult<ast::LayerItem> {
        self.layer_like(pair, ast::LayerKind::Layer)
    }

    fn lower_model_item(&self, pair: Pair<'_, Rule>) -> PResult<ast::LayerItem> {
        self.layer_like(pair, ast::LayerKind::Model)
    }

    /// `layer` and `model` items: name, `[hyper]` (layers only), inputs,
    /// optional output, body.
    fn layer_like(&self, pair: Pair<'_, Rule>, kind: ast::LayerKind) -> PResult<ast::LayerItem> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let name = self.lower_ident(next(&mut it, "layer_item"));
        let (mut hyper, mut inputs, mut output) = (Vec::new(), Vec::new(), None);
        let mut body = None;
        for p in it {
            match p.as_rule() {
                Rule::hyper_params => hyper = self.lower_hyper_params(p)?,
                Rule::inputs => inputs = self.lower_inputs(p)?,
                Rule::output => output = Some(self.lower_output(p)?),
                _ => body = Some(self.lower_block(p)?.0),
            }
        }
        // `block` ends both `layer_item` and `model_item`.
        let body =
            body.unwrap_or_else(|| unreachable!("the grammar rule `layer_item` ends in a block"));
        Ok(ast::LayerItem {
            kind,
            name,
            hyper,
            inputs,
            output,
            body,
            span,
        })
    }

    fn lower_hyper_params(&self, pair: Pair<'_, Rule>) -> PResult<Vec<ast::FnParam>> {
        self.lower_fn_params(next(&mut children(pair), "hyper_params"))
    }

    fn lower_inputs(&self, pair: Pair<'_, Rule>) -> PResult<Vec<ast::Input>> {
        children(pair).map(|p| self.lower_input(p)).collect()
    }

    fn lower_input(&self, pair: Pair<'_, Rule>) -> PResult<ast::Input> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let name = self.lower_ident(next(&mut it, "input"));
        let ty = self.lower_tensor_type(next(&mut it, "input"))?.0;
        Ok(ast::Input { name, ty, span })
    }

    fn lower_output(&self, pair: Pair<'_, Rule>) -> PResult<Vec<ast::TensorType>> {
        let p = next(&mut children(pair), "output");
        match p.as_rule() {
            Rule::output_tuple => self.lower_output_tuple(p),
            _ => Ok(vec![self.lower_tensor_type(p)?.0]),
        }
    }

    fn lower_output_tuple(&self, pair: Pair<'_, Rule>) -> PResult<Vec<ast::TensorType>> {
        children(pair)
            .map(|p| Ok(self.lower_tensor_type(p)?.0))
            .collect()
    }

    fn lower_train_item(&self, pair: Pair<'_, Rule>) -> PResult<ast::TrainItem> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let model = self.lower_ident(next(&mut it, "train_item"));
        let entries = it
            .map(|p| self.lower_train_entry(p))
            .collect::<PResult<_>>()?;
        Ok(ast::TrainItem {
            model,
            entries,
            span,
        })
    }

    fn lower_train_entry(&self, pair: Pair<'_, Rule>) -> PResult<ast::TrainEntry> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let key = self.lower_ident(next(&mut it, "train_entry"));
        let value = self.expr(next(&mut it, "train_entry"))?;
        Ok(ast::TrainEntry { key, value, span })
    }

    fn lower_tensor_type(&self, pair: Pair<'_, Rule>) -> PResult<(ast::TensorType, usize)> {
        let span = self.span(pair.as_span());
        let (mut dtype, mut dims, mut depth) = (None, Vec::new(), 0);
        for p in children(pair) {
            match p.as_rule() {
                Rule::dtype => {
                    dtype = Some(match p.as_str() {
                        "f64" => ast::DType::F64,
                        "i64" => ast::DType::I64,
                        _ => ast::DType::F32,
                    })
                }
                Rule::rest_dim => dims.push(ast::DimSyntax::Rest(self.span(p.as_span()))),
                _ => {
                    let (e, d) = self.lower_expr(p)?;
                    depth = depth.max(d);
                    dims.push(ast::DimSyntax::Expr(e));
                }
            }
        }
        let ty = ast::TensorType { dtype, dims, span };
        Ok((ty, depth))
    }

    fn lower_block(&self, pair: Pair<'_, Rule>) -> PResult<(ast::Block, usize)> {
        let span = self.span(pair.as_span());
        let (mut stmts, mut tail, mut depth) = (Vec::new(), None, 0);
        for p in children(pair) {
            let d = match p.as_rule() {
                Rule::expr => {
                    let (e, d) = self.lower_expr(p)?;
                    tail = Some(Box::new(e));
                    d
                }
                _ => {
                    let (s, d) = self.lower_stmt(p)?;
                    stmts.push(s);
                    d
                }
            };
            depth = depth.max(d);
        }
        Ok((ast::Block { stmts, tail, span }, depth))
    }

    fn lower_stmt(&self, pair: Pair<'_, Rule>) -> PResult<(ast::Stmt, usize)> {
        match pair.as_rule() {
            Rule::let_stmt => self.lower_let_stmt(pair),
            Rule::let_tuple_stmt => self.lower_let_tuple_stmt(pair),
            Rule::param_stmt => self.lower_param_stmt(pair),
            Rule::eq_stmt => self.lower_eq_stmt(pair),
            _ => self.lower_return_stmt(pair),
        }
    }

    fn lower_let_stmt(&self, pair: Pair<'_, Rule>) -> PResult<(ast::Stmt, usize)> {
        let (name, value, span, d) = self.lower_name_value(pair, "let_stmt")?;
        Ok((ast::Stmt::Let { name, value, span }, d))
    }

    fn lower_let_tuple_stmt(&self, pair: Pair<'_, Rule>) -> PResult<(ast::Stmt, usize)> {
        let span = self.span(pair.as_span());
        let mut names = Vec::new();
        let mut value = None;
        for p in children(pair) {
            match p.as_rule() {
                Rule::ident => names.push(self.lower_ident(p)),
                _ => value = Some(self.lower_expr(p)?),
            }
        }
        let (value, d) =
            value.unwrap_or_else(|| unreachable!("the grammar rule `let_tuple_stmt` has a value"));
        Ok((ast::Stmt::LetTuple { names, value, span }, d))
    }

    fn lower_param_stmt(&self, pair: Pair<'_, Rule>) -> PResult<(ast::Stmt, usize)> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let name = self.lower_ident(next(&mut it, "param_stmt"));
        let (ty, d1) = self.lower_tensor_type(next(&mut it, "param_stmt"))?;
        let (init, d2) = self.lower_expr(next(&mut it, "param_stmt"))?;
        let stmt = ast::Stmt::Param {
            name,
            ty,
            init,
            span,
        };
        Ok((stmt, d1.max(d2)))
    }

    fn lower_eq_stmt(&self, pair: Pair<'_, Rule>) -> PResult<(ast::Stmt, usize)> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let first = next(&mut it, "eq_stmt");
        let tuple = first.as_rule() == Rule::eq_states;
        let (states, d1) = match first.as_rule() {
            Rule::eq_states => self.lower_eq_states(first)?,
            _ => {
                let (s, d) = self.lower_eq_state(first)?;
                (vec![s], d)
            }
        };
        let (body, d2) = self.lower_expr(next(&mut it, "eq_stmt"))?;
        let (options, d3) = match it.next() {
            Some(w) => self.lower_with_clause(w)?,
            None => (Vec::new(), 0),
        };
        let stmt = ast::Stmt::Equilibrium {
            states,
            tuple,
            body,
            options,
            span,
        };
        Ok((stmt, d1.max(d2).max(d3)))
    }

    fn lower_eq_states(&self, pair: Pair<'_, Rule>) -> PResult<(Vec<ast::EqState>, usize)> {
        self.lower_children(pair, Self::lower_eq_state)
    }

    fn lower_eq_state(&self, pair: Pair<'_, Rule>) -> PResult<(ast::EqState, usize)> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let name = self.lower_ident(next(&mut it, "eq_state"));
        let (ty, d) = self.lower_tensor_type(next(&mut it, "eq_state"))?;
        Ok((ast::EqState { name, ty, span }, d))
    }

    fn lower_with_clause(&self, pair: Pair<'_, Rule>) -> PResult<(Vec<ast::WithOption>, usize)> {
        self.lower_children(pair, Self::lower_with_option)
    }

    fn lower_with_option(&self, pair: Pair<'_, Rule>) -> PResult<(ast::WithOption, usize)> {
        let (name, value, span, d) = self.lower_name_value(pair, "with_option")?;
        Ok((ast::WithOption { name, value, span }, d))
    }

    fn lower_return_stmt(&self, pair: Pair<'_, Rule>) -> PResult<(ast::Stmt, usize)> {
        let span = self.span(pair.as_span());
        let (value, d) = self.lower_expr(next(&mut children(pair), "return_stmt"))?;
        Ok((ast::Stmt::Return { value, span }, d))
    }

    // -------------------------------------------------------- expressions

    /// An expression where its depth no longer matters.
    fn expr(&self, pair: Pair<'_, Rule>) -> PResult<Expr> {
        Ok(self.lower_expr(pair)?.0)
    }

    /// A flat operator chain, ordered by the Pratt parser.
    fn lower_expr(&self, pair: Pair<'_, Rule>) -> PResult<Ex> {
        let span = self.span(pair.as_span());
        let pairs: Pairs<'_, Rule> = pair.into_inner();
        // The Pratt parser recurses once per prefix `-` and per `^`; bound
        // that recursion before it starts (the tree would be too deep anyway).
        let recursive = pairs
            .clone()
            .filter(|p| matches!(p.as_rule(), Rule::neg | Rule::pow))
            .count();
        if recursive > MAX_NESTING {
            return Err(self.too_deep(span));
        }
        pratt()
            .map_primary(|p| self.lower_primary(p))
            .map_prefix(|op, rhs| {
                let (rhs, d) = rhs?;
                let span = self.span(op.as_span()).to(rhs.span);
                self.node(ExprKind::Unary(ast::UnOp::Neg, Box::new(rhs)), span, d)
            })
            .map_infix(|lhs, op, rhs| {
                let ((lhs, d1), (rhs, d2)) = (lhs?, rhs?);
                let op = lower_binop(op.as_rule());
                let span = lhs.span.to(rhs.span);
                let kind = ExprKind::Binary(op, Box::new(lhs), Box::new(rhs));
                self.node(kind, span, d1.max(d2))
            })
            .map_postfix(|lhs, op| {
                let (lhs, d1) = lhs?;
                let span = lhs.span.to(self.span(op.as_span()));
                match op.as_rule() {
                    Rule::call => {
                        let (args, d2) = self.lower_call(op)?;
                        let kind = ExprKind::Call {
                            callee: Box::new(lhs),
                            args,
                        };
                        self.node(kind, span, d1.max(d2))
                    }
                    _ => {
                        let (items, d2) = self.lower_index(op)?;
                        let kind = ExprKind::Bracket {
                            base: Box::new(lhs),
                            items,
                        };
                        self.node(kind, span, d1.max(d2))
                    }
                }
            })
            .parse(pairs)
    }

    fn lower_primary(&self, pair: Pair<'_, Rule>) -> PResult<Ex> {
        let span = self.span(pair.as_span());
        match pair.as_rule() {
            Rule::int => self.lower_int(pair),
            Rule::float => self.lower_float(pair),
            Rule::string => {
                let s = self.lower_string(pair)?;
                self.node(ExprKind::Str(s), span, 0)
            }
            Rule::kw_true => self.node(ExprKind::Bool(true), span, 0),
            Rule::kw_false => self.node(ExprKind::Bool(false), span, 0),
            Rule::path => self.lower_path(pair),
            Rule::paren => self.lower_paren(pair),
            Rule::list => self.lower_list(pair),
            Rule::if_expr => self.lower_if_expr(pair),
            r => unreachable!("the grammar rule `primary` has no alternative {r:?}"),
        }
    }

    fn lower_int(&self, pair: Pair<'_, Rule>) -> PResult<Ex> {
        let span = self.span(pair.as_span());
        // `int` is all digits, so the only possible failure is overflow.
        match pair.as_str().parse::<i64>() {
            Ok(v) => self.node(ExprKind::Int(v), span, 0),
            Err(_) => Err(ParseError::IntOverflow {
                text: pair.as_str().to_string(),
                span: span.into(),
            }),
        }
    }

    fn lower_float(&self, pair: Pair<'_, Rule>) -> PResult<Ex> {
        let span = self.span(pair.as_span());
        match pair.as_str().parse::<f64>() {
            Ok(v) if v.is_finite() => self.node(ExprKind::Float(v), span, 0),
            _ => Err(ParseError::FloatOverflow {
                text: pair.as_str().to_string(),
                span: span.into(),
            }),
        }
    }

    /// The value of a string literal, escapes resolved.
    fn lower_string(&self, pair: Pair<'_, Rule>) -> PResult<String> {
        let inner = next(&mut pair.into_inner(), "string");
        let base = inner.as_span().start();
        let raw = inner.as_str();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            // `string_inner` puts a character after every backslash.
            let (_, e) = chars
                .next()
                .unwrap_or_else(|| unreachable!("the grammar rule `string_inner` escapes a char"));
            out.push(match e {
                '"' => '"',
                '\\' => '\\',
                'n' => '\n',
                't' => '\t',
                _ => {
                    return Err(ParseError::BadEscape {
                        escape: format!("\\{e}"),
                        span: byte_span(base + i, base + i + 1 + e.len_utf8()),
                    })
                }
            });
        }
        Ok(out)
    }

    fn lower_path(&self, pair: Pair<'_, Rule>) -> PResult<Ex> {
        let span = self.span(pair.as_span());
        let parts = pair.into_inner().map(|p| self.lower_ident(p)).collect();
        self.node(ExprKind::Path(parts), span, 0)
    }

    /// `(e)` is `e`; `()`, `(a,)` and `(a, b)` are tuples.
    fn lower_paren(&self, pair: Pair<'_, Rule>) -> PResult<Ex> {
        let span = self.span(pair.as_span());
        let commas = pair
            .clone()
            .into_inner()
            .filter(|p| p.as_rule() == Rule::comma)
            .count();
        let (mut elems, depth) = self.lower_exprs(pair)?;
        if elems.len() == 1 && commas == 0 {
            // One element, no comma: plain parentheses, no node of their own.
            if let Some(e) = elems.pop() {
                return Ok((e, depth));
            }
        }
        self.node(ExprKind::Tuple(elems), span, depth)
    }

    fn lower_list(&self, pair: Pair<'_, Rule>) -> PResult<Ex> {
        let span = self.span(pair.as_span());
        let (elems, depth) = self.lower_exprs(pair)?;
        self.node(ExprKind::List(elems), span, depth)
    }

    /// `name = value` (or `name: value`): the name, the value, the whole
    /// pair's span and the value's depth; `rule` names the pair in errors.
    fn lower_name_value(
        &self,
        pair: Pair<'_, Rule>,
        rule: &str,
    ) -> PResult<(ast::Ident, Expr, crate::source::Span, usize)> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let name = self.lower_ident(next(&mut it, rule));
        let (value, d) = self.lower_expr(next(&mut it, rule))?;
        Ok((name, value, span, d))
    }

    /// Each child of `pair` lowered by `lower`, and their greatest depth.
    fn lower_children<T>(
        &self,
        pair: Pair<'_, Rule>,
        lower: impl Fn(&Self, Pair<'_, Rule>) -> PResult<(T, usize)>,
    ) -> PResult<(Vec<T>, usize)> {
        let (mut out, mut depth) = (Vec::new(), 0);
        for p in children(pair) {
            let (item, d) = lower(self, p)?;
            out.push(item);
            depth = depth.max(d);
        }
        Ok((out, depth))
    }

    /// The `expr` children of a pair, and their greatest depth.
    fn lower_exprs(&self, pair: Pair<'_, Rule>) -> PResult<(Vec<Expr>, usize)> {
        self.lower_children(pair, Self::lower_expr)
    }

    /// `if c { a } else if d { b } else { e }`: the flat chain nested from
    /// the right; each `else if` becomes an else block whose tail is an `If`.
    fn lower_if_expr(&self, pair: Pair<'_, Rule>) -> PResult<Ex> {
        let span = self.span(pair.as_span());
        let end = pair.as_span().end();
        // Where each `if` of the chain starts: the first, then each `else if`.
        let mut starts = vec![span.start as usize];
        let mut parts = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::else_if => {
                    let kw_if = p.into_inner().nth(1);
                    starts.push(kw_if.map_or(span.start as usize, |k| k.as_span().start()));
                }
                Rule::expr => parts.push(Part::Cond(self.lower_expr(p)?)),
                Rule::block => parts.push(Part::Block(self.lower_block(p)?)),
                _ => {}
            }
        }
        // Grammar: cond block (cond block)* block.
        let Some(Part::Block((mut otherwise, mut depth))) = parts.pop() else {
            unreachable!("the grammar rule `if_expr` ends in a block")
        };
        loop {
            let (Some(Part::Block((then, d_then))), Some(Part::Cond((cond, d_cond)))) =
                (parts.pop(), parts.pop())
            else {
                unreachable!("the grammar rule `if_expr` pairs each condition with a block")
            };
            let start = starts.pop().unwrap_or(span.start as usize);
            let kind = ExprKind::If {
                cond: Box::new(cond),
                then,
                otherwise,
            };
            let if_span = Span::new(self.file, start, end);
            let (e, d) = self.node(kind, if_span, d_cond.max(d_then).max(depth))?;
            if parts.is_empty() {
                return Ok((e, d));
            }
            depth = d;
            otherwise = ast::Block {
                stmts: Vec::new(),
                span: e.span,
                tail: Some(Box::new(e)),
            };
        }
    }

    fn lower_call(&self, pair: Pair<'_, Rule>) -> PResult<(Vec<ast::Arg>, usize)> {
        self.lower_children(pair, Self::lower_arg)
    }

    fn lower_arg(&self, pair: Pair<'_, Rule>) -> PResult<(ast::Arg, usize)> {
        let span = self.span(pair.as_span());
        let p = next(&mut children(pair), "arg");
        match p.as_rule() {
            Rule::named_arg => self.lower_named_arg(p),
            _ => {
                let (value, d) = self.lower_expr(p)?;
                Ok((
                    ast::Arg {
                        name: None,
                        value,
                        span,
                    },
                    d,
                ))
            }
        }
    }

    fn lower_named_arg(&self, pair: Pair<'_, Rule>) -> PResult<(ast::Arg, usize)> {
        let span = self.span(pair.as_span());
        let mut it = children(pair);
        let name = Some(self.lower_ident(next(&mut it, "named_arg")));
        let (value, d) = self.lower_expr(next(&mut it, "named_arg"))?;
        Ok((ast::Arg { name, value, span }, d))
    }

    fn lower_index(&self, pair: Pair<'_, Rule>) -> PResult<(Vec<ast::BracketItem>, usize)> {
        self.lower_children(pair, |this, p| {
            Ok(match p.as_rule() {
                Rule::ellipsis => (ast::BracketItem::Ellipsis(this.span(p.as_span())), 0),
                Rule::named_item => this.lower_named_item(p)?,
                _ => this.lower_slice_or_expr(p)?,
            })
        })
    }

    fn lower_named_item(&self, pair: Pair<'_, Rule>) -> PResult<(ast::BracketItem, usize)> {
        let (name, value, span, d) = self.lower_name_value(pair, "named_item")?;
        Ok((ast::BracketItem::Named { name, value, span }, d))
    }

    /// `e` alone, or a slice whose parts are each optional.
    fn lower_slice_or_expr(&self, pair: Pair<'_, Rule>) -> PResult<(ast::BracketItem, usize)> {
        let span = self.span(pair.as_span());
        let (mut start, mut rest, mut depth) = (None, None, 0);
        for p in children(pair) {
            match p.as_rule() {
                Rule::slice_lo => {
                    let (e, d) = self.lower_expr(next(&mut children(p), "slice_lo"))?;
                    start = Some(e);
                    depth = depth.max(d);
                }
                _ => rest = Some(p),
            }
        }
        let Some(rest) = rest else {
            // No `:`: a plain expression (the grammar requires `slice_lo` then).
            let e = start.unwrap_or_else(|| unreachable!("`slice_or_expr` is not empty"));
            return Ok((ast::BracketItem::Expr(e), depth));
        };
        let (mut end, mut step) = (None, None);
        for p in children(rest) {
            let (e, d) = self.lower_expr(next(&mut children(p.clone()), "slice_hi"))?;
            depth = depth.max(d);
            match p.as_rule() {
                Rule::slice_hi => end = Some(e),
                _ => step = Some(e),
            }
        }
        let item = ast::BracketItem::Slice {
            start,
            end,
            step,
            span,
        };
        Ok((item, depth))
    }
}

enum Part {
    Cond(Ex),
    Block((ast::Block, usize)),
}

fn lower_binop(rule: Rule) -> ast::BinOp {
    use ast::BinOp;
    match rule {
        Rule::lt => BinOp::Lt,
        Rule::le => BinOp::Le,
        Rule::gt => BinOp::Gt,
        Rule::ge => BinOp::Ge,
        Rule::eq => BinOp::Eq,
        Rule::ne => BinOp::Ne,
        Rule::add => BinOp::Add,
        Rule::sub => BinOp::Sub,
        Rule::mul => BinOp::Mul,
        Rule::div => BinOp::Div,
        Rule::matmul => BinOp::MatMul,
        Rule::pow => BinOp::Pow,
        r => unreachable!("the grammar rule `infix_op` has no alternative {r:?}"),
    }
}
