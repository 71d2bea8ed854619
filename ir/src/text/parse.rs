//! The `.kir` parser (grammar in [`crate::text`]).
//!
//! A recursive-descent parser with one token of lookahead over [`Lexer`]. It
//! checks what the text alone can tell (syntax, literal ranges, element counts,
//! each value id defined once and densely numbered, every use defined) and
//! leaves graph semantics (operand order, arity, types) to [`crate::verify`],
//! so any graph the printer prints, valid or not, parses back unchanged.

use super::lex::{Lexer, Pos, Tok};
use super::print::{CANONICAL_NAN_BF16, CANONICAL_NAN_F16, CANONICAL_NAN_F32, CANONICAL_NAN_F64};
use crate::{
    Attr, Attrs, DType, Data, Dim, Error, Graph, Node, Op, Result, Shape, Tensor, TensorType,
    ValueId, ValueInfo,
};
use half::{bf16, f16};
use std::collections::BTreeMap;

/// Parses one graph from `.kir` text. `file` names the source in error messages.
pub fn parse(src: &str, file: &str) -> Result<Graph> {
    let mut lx = Lexer::new(src, file);
    let (tok, pos) = lx.next_token()?;
    let mut p = Parser {
        lx,
        tok,
        pos,
        file,
        defs: BTreeMap::new(),
        uses: Vec::new(),
    };
    p.graph()
}

/// Parses a fused-op expression (grammar in [`crate::expr`]).
pub fn parse_expr(src: &str) -> Result<crate::expr::Expr> {
    let file = "<expr>";
    let mut lx = Lexer::new(src, file);
    let (tok, pos) = lx.next_token()?;
    let mut p = Parser {
        lx,
        tok,
        pos,
        file,
        defs: BTreeMap::new(),
        uses: Vec::new(),
    };
    let e = p.expr(0)?;
    if p.tok != Tok::Eof {
        return Err(p.unexpected("the end of the expression"));
    }
    Ok(e)
}

/// Deeper expressions than this are refused (the parser recurses).
const MAX_EXPR_DEPTH: usize = 256;

struct Parser<'a> {
    lx: Lexer<'a>,
    /// The current (lookahead) token and its position.
    tok: Tok,
    pos: Pos,
    file: &'a str,
    /// Every value definition: its info and where it is defined.
    defs: BTreeMap<u32, (ValueInfo, Pos)>,
    /// Every use of a value, in source order.
    uses: Vec<(u32, Pos)>,
}

/// A float element as written, before it is converted to its dtype.
enum FloatLit {
    Num(String),
    Inf {
        neg: bool,
    },
    /// `bits`: an explicit pattern, from `nan:0x...`.
    NaN {
        neg: bool,
        bits: Option<u64>,
    },
}

impl<'a> Parser<'a> {
    fn err(&self, pos: Pos, msg: impl Into<String>) -> Error {
        self.lx.error(pos, msg)
    }

    /// Moves past the current token, returning it.
    fn bump(&mut self) -> Result<(Tok, Pos)> {
        let (tok, pos) = self.lx.next_token()?;
        let old_tok = std::mem::replace(&mut self.tok, tok);
        let old_pos = std::mem::replace(&mut self.pos, pos);
        Ok((old_tok, old_pos))
    }

    fn unexpected(&self, expected: &str) -> Error {
        self.err(
            self.pos,
            format!("expected {expected}, found {}", self.tok.describe()),
        )
    }

    fn is_punct(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }

    fn is_ident(&self, s: &str) -> bool {
        matches!(&self.tok, Tok::Ident(w) if w == s)
    }

    fn eat_punct(&mut self, c: char) -> Result<bool> {
        if self.is_punct(c) {
            self.bump()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn expect_punct(&mut self, c: char, context: &str) -> Result<Pos> {
        if self.is_punct(c) {
            Ok(self.bump()?.1)
        } else {
            Err(self.unexpected(&format!("`{c}` {context}")))
        }
    }

    /// An identifier or a quoted string.
    fn name(&mut self, what: &str) -> Result<String> {
        match &self.tok {
            Tok::Ident(_) | Tok::Str(_) => match self.bump()?.0 {
                Tok::Ident(s) | Tok::Str(s) => Ok(s),
                _ => Err(self.unexpected(what)),
            },
            _ => Err(self.unexpected(what)),
        }
    }

    // ---- graph structure ----

    fn graph(&mut self) -> Result<Graph> {
        if !self.is_ident("graph") {
            return Err(self.unexpected("`graph @name {`"));
        }
        self.bump()?;
        self.expect_punct('@', "before the graph's name")?;
        let name = self.name("the graph's name (an identifier or a string)")?;
        self.expect_punct('{', "to open the graph")?;
        let mut inputs = Vec::new();
        let mut consts = BTreeMap::new();
        let mut nodes = Vec::new();
        let mut outputs: Option<(Vec<ValueId>, Pos)> = None;
        loop {
            let pos = self.pos;
            match &self.tok {
                Tok::Punct('}') => {
                    self.bump()?;
                    break;
                }
                Tok::Ident(w) if w == "in" => {
                    self.bump()?;
                    inputs.push(self.value_decl()?.0);
                }
                Tok::Ident(w) if w == "const" => {
                    self.bump()?;
                    let (v, ty) = self.value_decl()?;
                    self.expect_punct('=', "before the constant's contents")?;
                    let t = self.const_body(v, &ty)?;
                    consts.insert(v, t);
                }
                Tok::Ident(w) if w == "out" => {
                    self.bump()?;
                    if let Some((_, first)) = &outputs {
                        return Err(self.err(
                            pos,
                            format!("second `out` line (the first is at line {}); list all outputs on one", first.line),
                        ));
                    }
                    let mut vs = Vec::new();
                    if matches!(self.tok, Tok::Value(_)) {
                        vs.push(self.value_use()?);
                        while self.eat_punct(',')? {
                            vs.push(self.value_use()?);
                        }
                    }
                    outputs = Some((vs, pos));
                }
                Tok::Value(_) => {
                    let mut results = vec![self.value_decl()?.0];
                    while self.eat_punct(',')? {
                        results.push(self.value_decl()?.0);
                    }
                    self.expect_punct('=', "after a node's results")?;
                    nodes.push(self.node(results, pos)?);
                }
                Tok::Ident(w) if Op::from_name(w).is_some() => {
                    nodes.push(self.node(Vec::new(), pos)?)
                }
                Tok::Eof => {
                    return Err(self.err(
                        self.pos,
                        "unexpected end of input: missing `}` to close the graph",
                    ))
                }
                _ => return Err(self.unexpected(
                    "`in`, `const`, `out`, a node (`%N: type = Op(...)`) or `}` to close the graph",
                )),
            }
        }
        if self.tok != Tok::Eof {
            return Err(self.unexpected("end of input after the graph's closing `}`"));
        }
        let values = self.values()?;
        Ok(Graph {
            name,
            values,
            inputs,
            consts,
            nodes,
            outputs: outputs.map(|o| o.0).unwrap_or_default(),
        })
    }

    /// Checks that ids are 0..N-1 and every use is defined; returns the value table.
    fn values(&mut self) -> Result<Vec<ValueInfo>> {
        for &(v, pos) in &self.uses {
            if !self.defs.contains_key(&v) {
                return Err(self.err(pos, format!("%{v} is used but never defined")));
            }
        }
        let n = self.defs.len();
        if let Some((&last, (_, pos))) = self.defs.iter().next_back() {
            if last as usize >= n {
                // Some id below `last` is missing: find the first.
                let missing = self
                    .defs
                    .keys()
                    .zip(0u32..)
                    .find(|(&k, i)| k != *i)
                    .map_or(0, |(_, i)| i);
                return Err(self.err(
                    *pos,
                    format!(
                        "value ids must be numbered 0..{n} without gaps, but %{missing} is not defined \
                         (the largest id is %{last}); renumber the values"
                    ),
                ));
            }
        }
        Ok(std::mem::take(&mut self.defs)
            .into_values()
            .map(|(info, _)| info)
            .collect())
    }

    /// `%N "name"?: type`, defining %N.
    fn value_decl(&mut self) -> Result<(ValueId, TensorType)> {
        let pos = self.pos;
        let v = match self.tok {
            Tok::Value(v) => v,
            _ => return Err(self.unexpected("a value (`%N`)")),
        };
        self.bump()?;
        let name = match &self.tok {
            Tok::Str(_) => Some(self.name("a name")?),
            _ => None,
        };
        self.expect_punct(
            ':',
            &format!("and a type after %{v} (e.g. `%{v}: f32[2,3]`)"),
        )?;
        let ty = self.ty()?;
        if let Some((_, first)) = self.defs.get(&v) {
            return Err(self.err(
                pos,
                format!(
                    "%{v} is defined twice (first at line {}, column {})",
                    first.line, first.col
                ),
            ));
        }
        self.defs.insert(
            v,
            (
                ValueInfo {
                    name,
                    ty: ty.clone(),
                },
                pos,
            ),
        );
        Ok((ValueId(v), ty))
    }

    /// `%N`, a use.
    fn value_use(&mut self) -> Result<ValueId> {
        match self.tok {
            Tok::Value(v) => {
                let pos = self.bump()?.1;
                self.uses.push((v, pos));
                Ok(ValueId(v))
            }
            _ => Err(self.unexpected("a value (`%N`)")),
        }
    }

    /// `dtype[dim, ...]`
    fn ty(&mut self) -> Result<TensorType> {
        let pos = self.pos;
        let dtype = match &self.tok {
            Tok::Ident(w) => DType::from_name(w).ok_or_else(|| {
                let all: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
                self.err(
                    pos,
                    format!("unknown dtype `{w}` (expected one of {})", all.join(", ")),
                )
            })?,
            _ => return Err(self.unexpected("a type such as `f32[2,3]`")),
        };
        self.bump()?;
        self.expect_punct('[', &format!("after `{dtype}` (a scalar is `{dtype}[]`)"))?;
        let mut dims = Vec::new();
        if !self.is_punct(']') {
            loop {
                dims.push(self.dim()?);
                if !self.eat_punct(',')? {
                    break;
                }
            }
        }
        self.expect_punct(']', "to close the shape")?;
        Ok(TensorType {
            dtype,
            shape: Shape(dims),
        })
    }

    fn dim(&mut self) -> Result<Dim> {
        let pos = self.pos;
        match &self.tok {
            Tok::Num {
                text,
                is_float: false,
            } if !text.starts_with('-') => {
                let n = parse_int(text)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| self.err(pos, format!("dimension {text} is too large")))?;
                self.bump()?;
                Ok(Dim::Fixed(n))
            }
            Tok::Ident(_) | Tok::Str(_) => Ok(Dim::Sym(self.name("a dimension")?)),
            _ => Err(self.unexpected("a dimension (a non-negative integer or a name)")),
        }
    }

    /// `Op[attrs](operands) @provenance`, after the results and `=`.
    fn node(&mut self, outputs: Vec<ValueId>, start: Pos) -> Result<Node> {
        let pos = self.pos;
        let op = match &self.tok {
            Tok::Ident(w) => {
                Op::from_name(w).ok_or_else(|| self.err(pos, format!("unknown op `{w}`")))?
            }
            _ => return Err(self.unexpected("an op name")),
        };
        self.bump()?;
        let attrs = if self.is_punct('[') {
            self.attrs()?
        } else {
            Attrs::new()
        };
        self.expect_punct('(', &format!("to open {op}'s operands"))?;
        let mut inputs = Vec::new();
        if !self.is_punct(')') {
            loop {
                if self.is_ident("_") {
                    self.bump()?;
                    inputs.push(None);
                } else if matches!(self.tok, Tok::Value(_)) {
                    inputs.push(Some(self.value_use()?));
                } else {
                    return Err(
                        self.unexpected("an operand (`%N`, or `_` for an omitted optional input)")
                    );
                }
                if !self.eat_punct(',')? {
                    break;
                }
            }
        }
        self.expect_punct(')', &format!("to close {op}'s operands"))?;
        let name = if self.eat_punct('@')? {
            self.name("the node's provenance name after `@`")?
        } else {
            format!("{}:{}", self.file, start.line)
        };
        Ok(Node {
            op,
            attrs,
            inputs,
            outputs,
            name,
        })
    }

    fn expr(&mut self, depth: usize) -> Result<crate::expr::Expr> {
        use crate::expr::Expr;
        if depth > MAX_EXPR_DEPTH {
            return Err(self.err(self.pos, format!("expression nested deeper than {MAX_EXPR_DEPTH}")));
        }
        let pos = self.pos;
        match &self.tok {
            Tok::Value(i) => {
                let i = *i as usize;
                self.bump()?;
                Ok(Expr::Input(i))
            }
            Tok::Ident(w) if w == "tensor" => Ok(Expr::Const(self.tensor_literal()?)),
            Tok::Ident(w) => {
                let op = Op::from_name(w).ok_or_else(|| self.err(pos, format!("unknown op `{w}`")))?;
                self.bump()?;
                let attrs = if self.is_punct('[') { self.attrs()? } else { Attrs::new() };
                self.expect_punct('(', &format!("to open {op}'s operands"))?;
                let mut args = Vec::new();
                loop {
                    args.push(self.expr(depth + 1)?);
                    if !self.eat_punct(',')? {
                        break;
                    }
                }
                self.expect_punct(')', &format!("to close {op}'s operands"))?;
                Ok(Expr::Op { op, attrs, args })
            }
            _ => Err(self.unexpected("an expression (`%N`, a `tensor<...>` constant or an op)")),
        }
    }

    fn attrs(&mut self) -> Result<Attrs> {
        self.expect_punct('[', "")?;
        let mut attrs = Attrs::new();
        while !self.is_punct(']') {
            let pos = self.pos;
            let name = self.name("an attribute name")?;
            if attrs.has(&name) {
                return Err(self.err(pos, format!("attribute `{name}` is given twice")));
            }
            self.expect_punct('=', &format!("after attribute `{name}`"))?;
            let a = self.attr_value(&name)?;
            attrs.set(&name, a);
            if !self.eat_punct(',')? {
                break;
            }
        }
        self.expect_punct(']', "to close the attribute list")?;
        Ok(attrs)
    }

    fn attr_value(&mut self, name: &str) -> Result<Attr> {
        let pos = self.pos;
        match &self.tok {
            Tok::Num { is_float: false, .. } => Ok(Attr::Int(self.int_lit("an int attribute", i64::MIN.into(), i64::MAX.into())? as i64)),
            Tok::Num { is_float: true, .. } | Tok::Punct('-') => Ok(Attr::Float(self.f32_elem()?)),
            Tok::Ident(w) if w == "nan" || w == "inf" => Ok(Attr::Float(self.f32_elem()?)),
            Tok::Str(_) => Ok(Attr::Str(self.name("a string")?)),
            Tok::Ident(w) if w == "tensor" => Ok(Attr::Tensor(self.tensor_literal()?)),
            Tok::Ident(w) if w == "ints" => {
                self.bump()?;
                Ok(Attr::Ints(self.list(|p| Ok(p.int_lit("an int", i64::MIN.into(), i64::MAX.into())? as i64))?))
            }
            Tok::Ident(w) if w == "floats" => {
                self.bump()?;
                Ok(Attr::Floats(self.list(|p| p.f32_elem())?))
            }
            Tok::Ident(w) if w == "strs" => {
                self.bump()?;
                Ok(Attr::Strs(self.list(|p| p.name("a string"))?))
            }
            Tok::Punct('[') => self.untyped_list(name),
            _ => Err(self.err(
                pos,
                format!(
                    "expected a value for attribute `{name}` (int `3`, float `3.0`, string `\"s\"`, \
                     list `[1, 2]`, `ints[]`, `floats[]`, `strs[]`, or `tensor<f32[2]> [1.0, 2.0]`), found {}",
                    self.tok.describe()
                ),
            )),
        }
    }

    /// `[...]` without a kind marker: the kind follows from the elements.
    fn untyped_list(&mut self, name: &str) -> Result<Attr> {
        let pos = self.pos;
        self.bump()?; // '['
        match &self.tok {
            Tok::Punct(']') => Err(self.err(
                pos,
                format!("empty list for attribute `{name}` needs its kind: write ints[], floats[] or strs[]"),
            )),
            Tok::Str(_) => self.list_rest(|p| p.name("a string")).map(Attr::Strs),
            _ => {
                // Numbers: floats if any element is written as a float.
                let mut lits = Vec::new();
                loop {
                    let p = self.pos;
                    let is_float = match &self.tok {
                        Tok::Num { is_float, .. } => *is_float,
                        _ => true,
                    };
                    lits.push((self.float_lit()?, is_float, p));
                    if !self.eat_punct(',')? || self.is_punct(']') {
                        break;
                    }
                }
                self.expect_punct(']', "to close the list")?;
                if lits.iter().any(|l| l.1) {
                    let v = lits.into_iter().map(|(l, _, p)| self.f32_from(l, p)).collect::<Result<_>>()?;
                    Ok(Attr::Floats(v))
                } else {
                    let v = lits
                        .into_iter()
                        .map(|(l, _, p)| match l {
                            FloatLit::Num(t) => parse_int(&t)
                                .and_then(|x| i64::try_from(x).ok())
                                .ok_or_else(|| self.err(p, format!("{t} is out of range for an int"))),
                            _ => Err(self.err(p, "expected an int")),
                        })
                        .collect::<Result<_>>()?;
                    Ok(Attr::Ints(v))
                }
            }
        }
    }

    /// `[a, b, ...]` (a trailing comma is allowed), each element read by `elem`.
    fn list<T>(&mut self, elem: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        self.expect_punct('[', "to open the list")?;
        self.list_rest(elem)
    }

    /// A list after its `[`.
    fn list_rest<T>(&mut self, mut elem: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut v = Vec::new();
        while !self.is_punct(']') {
            v.push(elem(self)?);
            if !self.eat_punct(',')? {
                break;
            }
        }
        self.expect_punct(']', "or `,` in the list")?;
        Ok(v)
    }

    // ---- tensors ----

    /// `tensor<type> data`
    fn tensor_literal(&mut self) -> Result<Tensor> {
        self.bump()?; // `tensor`
        self.expect_punct('<', "after `tensor` (write `tensor<f32[2]> [1.0, 2.0]`)")?;
        let pos = self.pos;
        let ty = self.ty()?;
        self.expect_punct('>', "after the tensor's type")?;
        let dims = ty.shape.fixed().ok_or_else(|| {
            self.err(
                pos,
                format!("a tensor literal needs a static shape, found {ty}"),
            )
        })?;
        self.tensor_data(ty.dtype, dims, "the tensor")
    }

    /// A constant's contents: data in its declared type, or a `tensor<...>`
    /// literal when the tensor's type differs from the declared one.
    fn const_body(&mut self, v: ValueId, ty: &TensorType) -> Result<Tensor> {
        if self.is_ident("tensor") {
            return self.tensor_literal();
        }
        let dims = ty.shape.fixed().ok_or_else(|| {
            self.err(
                self.pos,
                format!("constant {v} has the symbolic type {ty}; give its contents as `tensor<{}[...]> ...`", ty.dtype),
            )
        })?;
        self.tensor_data(ty.dtype, dims, &format!("constant {v}"))
    }

    /// `[e, ...]`, a single element (rank 0 or one element), or `hex"..."`.
    fn tensor_data(&mut self, dtype: DType, dims: Vec<usize>, what: &str) -> Result<Tensor> {
        let pos = self.pos;
        let numel = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                self.err(pos, format!("{what}: shape {dims:?} has too many elements"))
            })?;
        if let Tok::Elided(summary) = &self.tok {
            return Err(self.err(
                pos,
                format!(
                    "{what} was elided by the printer (elided<{summary}>): this dump does not contain its data. \
                     Print the graph with constants in full (`kiln dump --full-constants`, or \
                     `PrintOptions::lossless()`) to get text that parses"
                ),
            ));
        }
        if self.is_ident("hex") {
            self.bump()?;
            let spos = self.pos;
            let Tok::Str(s) = &self.tok else {
                return Err(self.unexpected("a string of hex digits after `hex`"));
            };
            let bytes = decode_hex(s).map_err(|m| self.err(spos, format!("{what}: {m}")))?;
            let want = numel.checked_mul(dtype.size_bytes());
            if want != Some(bytes.len()) {
                return Err(self.err(
                    spos,
                    format!(
                        "{what}: {dtype}{dims:?} needs {} bytes, the hex string has {}",
                        want.map_or("too many".to_string(), |n| n.to_string()),
                        bytes.len()
                    ),
                ));
            }
            if dtype == DType::Bool {
                if let Some(b) = bytes.iter().find(|&&b| b > 1) {
                    return Err(self.err(
                        spos,
                        format!("{what}: bool bytes must be 00 or 01, found {b:02x}"),
                    ));
                }
            }
            self.bump()?;
            return Tensor::from_le_bytes(dtype, dims, &bytes)
                .map_err(|e| self.err(spos, format!("{what}: {e}")));
        }
        let data = if self.is_punct('[') {
            self.bump()?;
            self.data_elems(dtype, true)?
        } else {
            self.data_elems(dtype, false)?
        };
        if data.len() != numel {
            return Err(self.err(
                pos,
                format!(
                    "{what}: {dtype}{dims:?} has {numel} elements, but {} are given",
                    data.len()
                ),
            ));
        }
        Tensor::new(dims, data).map_err(|e| self.err(pos, format!("{what}: {e}")))
    }

    /// The elements of a `[...]` list (after the `[`), or one bare element.
    fn data_elems(&mut self, dtype: DType, list: bool) -> Result<Data> {
        fn go<'a, T>(
            p: &mut Parser<'a>,
            list: bool,
            f: impl FnMut(&mut Parser<'a>) -> Result<T>,
        ) -> Result<Vec<T>> {
            if list {
                p.list_rest(f)
            } else {
                let mut f = f;
                Ok(vec![f(p)?])
            }
        }
        fn int<T: TryFrom<i128>>(p: &mut Parser, dtype: DType, lo: i128, hi: i128) -> Result<T> {
            let pos = p.pos;
            let x = p.int_lit(&format!("{dtype} data"), lo, hi)?;
            T::try_from(x).map_err(|_| p.err(pos, format!("{x} is out of range for {dtype}")))
        }
        Ok(match dtype {
            DType::F32 => Data::F32(go(self, list, |p| p.f32_elem())?),
            DType::F64 => Data::F64(go(self, list, |p| p.f64_elem())?),
            DType::F16 => Data::F16(go(self, list, |p| p.f16_elem())?),
            DType::BF16 => Data::BF16(go(self, list, |p| p.bf16_elem())?),
            DType::I8 => Data::I8(go(self, list, |p| {
                int(p, dtype, i8::MIN.into(), i8::MAX.into())
            })?),
            DType::U8 => Data::U8(go(self, list, |p| int(p, dtype, 0, u8::MAX.into()))?),
            DType::I16 => Data::I16(go(self, list, |p| {
                int(p, dtype, i16::MIN.into(), i16::MAX.into())
            })?),
            DType::U16 => Data::U16(go(self, list, |p| int(p, dtype, 0, u16::MAX.into()))?),
            DType::I32 => Data::I32(go(self, list, |p| {
                int(p, dtype, i32::MIN.into(), i32::MAX.into())
            })?),
            DType::U32 => Data::U32(go(self, list, |p| int(p, dtype, 0, u32::MAX.into()))?),
            DType::I64 => Data::I64(go(self, list, |p| {
                int(p, dtype, i64::MIN.into(), i64::MAX.into())
            })?),
            DType::U64 => Data::U64(go(self, list, |p| int(p, dtype, 0, u64::MAX.into()))?),
            DType::Bool => Data::Bool(go(self, list, |p| p.bool_elem())?),
        })
    }

    /// An integer literal in `lo..=hi`.
    fn int_lit(&mut self, what: &str, lo: i128, hi: i128) -> Result<i128> {
        let pos = self.pos;
        match &self.tok {
            Tok::Num {
                text,
                is_float: false,
            } => {
                let x = parse_int(text)
                    .filter(|x| (lo..=hi).contains(x))
                    .ok_or_else(|| {
                        self.err(
                            pos,
                            format!("{text} is out of range for {what} ({lo}..={hi})"),
                        )
                    })?;
                self.bump()?;
                Ok(x)
            }
            Tok::Num {
                text,
                is_float: true,
            } => Err(self.err(
                pos,
                format!("expected an integer for {what}, found `{text}`"),
            )),
            _ => Err(self.unexpected(&format!("an integer for {what}"))),
        }
    }

    fn bool_elem(&mut self) -> Result<bool> {
        let v = match &self.tok {
            Tok::Ident(w) if w == "true" => true,
            Tok::Ident(w) if w == "false" => false,
            Tok::Num { text, .. } if text == "1" => true,
            Tok::Num { text, .. } if text == "0" => false,
            _ => return Err(self.unexpected("`true` or `false`")),
        };
        self.bump()?;
        Ok(v)
    }

    /// A number, `inf`, `-inf`, `nan`, `-nan` or `nan:0xBITS`.
    fn float_lit(&mut self) -> Result<FloatLit> {
        let neg = self.is_punct('-');
        if neg {
            self.bump()?;
            if !(self.is_ident("inf") || self.is_ident("nan")) {
                return Err(self.unexpected("`inf` or `nan` after `-`"));
            }
        }
        match &self.tok {
            Tok::Num { text, .. } => {
                let text = text.clone();
                self.bump()?;
                Ok(FloatLit::Num(text))
            }
            Tok::Ident(w) if w == "inf" => {
                self.bump()?;
                Ok(FloatLit::Inf { neg })
            }
            Tok::Ident(w) if w == "nan" => {
                self.bump()?;
                if !neg && self.eat_punct(':')? {
                    let pos = self.pos;
                    let bits = match &self.tok {
                        Tok::Num { text, is_float: false } if text.starts_with("0x") => {
                            parse_int(text).and_then(|b| u64::try_from(b).ok())
                        }
                        _ => None,
                    }
                    .ok_or_else(|| self.err(pos, "expected the NaN's bit pattern in hex after `nan:` (e.g. nan:0x7fc00001)"))?;
                    self.bump()?;
                    return Ok(FloatLit::NaN {
                        neg,
                        bits: Some(bits),
                    });
                }
                Ok(FloatLit::NaN { neg, bits: None })
            }
            _ => Err(self.unexpected("a number, `inf` or `nan`")),
        }
    }

    fn f32_elem(&mut self) -> Result<f32> {
        let pos = self.pos;
        let lit = self.float_lit()?;
        self.f32_from(lit, pos)
    }

    fn f32_from(&self, lit: FloatLit, pos: Pos) -> Result<f32> {
        let bits = self.float_bits(lit, pos, DType::F32, 32, CANONICAL_NAN_F32.into(), |t| {
            t.parse::<f32>().ok().map(|x| x.to_bits().into())
        })?;
        Ok(f32::from_bits(bits as u32))
    }

    fn f64_elem(&mut self) -> Result<f64> {
        let pos = self.pos;
        let lit = self.float_lit()?;
        let bits = self.float_bits(lit, pos, DType::F64, 64, CANONICAL_NAN_F64, |t| {
            t.parse::<f64>().ok().map(f64::to_bits)
        })?;
        Ok(f64::from_bits(bits))
    }

    /// f16 and bf16 values are written as f32 (exact), and read through f32.
    fn f16_elem(&mut self) -> Result<f16> {
        let pos = self.pos;
        let lit = self.float_lit()?;
        let bits = self.float_bits(lit, pos, DType::F16, 16, CANONICAL_NAN_F16.into(), |t| {
            t.parse::<f32>()
                .ok()
                .map(|x| f16::from_f32(x).to_bits().into())
        })?;
        Ok(f16::from_bits(bits as u16))
    }

    fn bf16_elem(&mut self) -> Result<bf16> {
        let pos = self.pos;
        let lit = self.float_lit()?;
        let bits = self.float_bits(lit, pos, DType::BF16, 16, CANONICAL_NAN_BF16.into(), |t| {
            t.parse::<f32>()
                .ok()
                .map(|x| bf16::from_f32(x).to_bits().into())
        })?;
        Ok(bf16::from_bits(bits as u16))
    }

    /// The bit pattern of a float literal in a `width`-bit float type
    /// (1 sign bit; the exponent and mantissa follow from the canonical NaN).
    fn float_bits(
        &self,
        lit: FloatLit,
        pos: Pos,
        dtype: DType,
        width: u32,
        canonical_nan: u64,
        parse: impl Fn(&str) -> Option<u64>,
    ) -> Result<u64> {
        let sign = 1u64 << (width - 1);
        let exp_mask = match dtype {
            DType::F32 => 0x7f80_0000,
            DType::F64 => 0x7ff0_0000_0000_0000,
            DType::F16 => 0x7c00,
            _ => 0x7f80, // bf16
        };
        let all = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        match lit {
            FloatLit::Num(t) => {
                if t.trim_start_matches('-').starts_with("0x") {
                    return Err(self.err(
                        pos,
                        format!("hex integer `{t}` in {dtype} data: write a decimal number"),
                    ));
                }
                parse(&t)
                    .ok_or_else(|| self.err(pos, format!("`{t}` is not a valid {dtype} number")))
            }
            FloatLit::Inf { neg } => Ok(exp_mask | if neg { sign } else { 0 }),
            FloatLit::NaN { neg, bits: None } => Ok(canonical_nan | if neg { sign } else { 0 }),
            FloatLit::NaN { bits: Some(b), .. } => {
                let is_nan = b & exp_mask == exp_mask && b & !(exp_mask | sign) != 0;
                if b & !all != 0 || !is_nan {
                    return Err(self.err(
                        pos,
                        format!("nan:0x{b:x} is not a NaN bit pattern of {dtype}"),
                    ));
                }
                Ok(b)
            }
        }
    }
}

/// A decimal or `0x` hex integer with an optional `-`.
fn parse_int(text: &str) -> Option<i128> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let mag = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(h) => i128::from_str_radix(h, 16).ok()?,
        None => digits.parse::<i128>().ok()?,
    };
    Some(if neg { -mag } else { mag })
}

fn decode_hex(s: &str) -> std::result::Result<Vec<u8>, String> {
    let b = s.as_bytes();
    if b.len() & 1 == 1 {
        return Err(format!(
            "the hex string has an odd number of digits ({})",
            b.len()
        ));
    }
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(b.len() / 2);
    for (i, pair) in b.chunks_exact(2).enumerate() {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => {
                return Err(format!(
                    "the hex string has a non-hex character in byte {i}"
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        match parse(src, "t.kir") {
            Ok(g) => panic!("parsed: {g:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_small_graph() {
        let g = parse(
            "; a comment\ngraph @g {\n in %0 \"x\": f32[n, 2]\n const %1: f32[2] = [1, 2.5]\n \
             %2: f32[n,2] = Add(%0, %1)\n out %2 }",
            "t.kir",
        )
        .unwrap();
        assert_eq!(g.name, "g");
        assert_eq!(g.values.len(), 3);
        assert_eq!(g.values[0].name.as_deref(), Some("x"));
        assert_eq!(g.values[0].ty.shape.0[0], Dim::Sym("n".into()));
        assert_eq!(
            g.consts[&ValueId(1)].as_slice::<f32>(),
            Some(&[1.0f32, 2.5][..])
        );
        assert_eq!(g.nodes[0].op, Op::Add);
        assert_eq!(
            g.nodes[0].name, "t.kir:5",
            "provenance defaults to the line"
        );
        assert_eq!(g.outputs, vec![ValueId(2)]);
    }

    #[test]
    fn ids_in_any_order() {
        let g = parse("graph @g { in %1: f32[] in %0: i8[] out %0, %1 }", "t").unwrap();
        assert_eq!(g.inputs, vec![ValueId(1), ValueId(0)]);
        assert_eq!(g.values[0].ty.dtype, DType::I8);
    }

    #[test]
    fn attribute_kinds() {
        let g = parse(
            "graph @g { in %0: f32[2] %1: f32[2] = Clip[a=1, b=1.0, c=-2e3, d=\"s\", e=[1,2], f=[1,2.0], \
             g=[\"x\"], h=ints[], i=floats[], j=strs[], k=tensor<i64[2]> [3, -4], l=-inf, m=nan:0x7fc00001,](%0, _, _) \
             out %1 }",
            "t",
        )
        .unwrap();
        let a = &g.nodes[0].attrs;
        assert_eq!(a.get("a"), Some(&Attr::Int(1)));
        assert_eq!(a.get("b"), Some(&Attr::Float(1.0)));
        assert_eq!(a.get("c"), Some(&Attr::Float(-2000.0)));
        assert_eq!(a.get("d"), Some(&Attr::Str("s".into())));
        assert_eq!(a.get("e"), Some(&Attr::Ints(vec![1, 2])));
        assert_eq!(a.get("f"), Some(&Attr::Floats(vec![1.0, 2.0])));
        assert_eq!(a.get("g"), Some(&Attr::Strs(vec!["x".into()])));
        assert_eq!(a.get("h"), Some(&Attr::Ints(vec![])));
        assert_eq!(a.get("i"), Some(&Attr::Floats(vec![])));
        assert_eq!(a.get("j"), Some(&Attr::Strs(vec![])));
        assert_eq!(
            a.get("k"),
            Some(&Attr::Tensor(
                Tensor::from_vec(vec![2], vec![3i64, -4]).unwrap()
            ))
        );
        assert_eq!(a.get("l"), Some(&Attr::Float(f32::NEG_INFINITY)));
        assert!(matches!(a.get("m"), Some(Attr::Float(x)) if x.to_bits() == 0x7fc0_0001));
        assert_eq!(g.nodes[0].inputs, vec![Some(ValueId(0)), None, None]);
    }

    #[test]
    fn data_forms() {
        let g = parse(
            "graph @g { const %0: u8[2] = hex\"ff01\" const %1: f16[] = 0.1 const %2: bool[3] = [true, 0, 1] \
             const %3: f32[a] = tensor<f32[1]> [-nan] const %4: i8[2] = [-128, 0x7f] }",
            "t",
        )
        .unwrap();
        assert_eq!(
            g.consts[&ValueId(0)].as_slice::<u8>(),
            Some(&[255u8, 1][..])
        );
        assert_eq!(
            g.consts[&ValueId(1)].as_slice::<f16>(),
            Some(&[f16::from_f32(0.1)][..])
        );
        assert_eq!(
            g.consts[&ValueId(2)].as_slice::<bool>(),
            Some(&[true, false, true][..])
        );
        assert_eq!(
            g.consts[&ValueId(3)]
                .as_slice::<f32>()
                .map(|v| v[0].to_bits()),
            Some(0xffc0_0000)
        );
        assert_eq!(
            g.consts[&ValueId(4)].as_slice::<i8>(),
            Some(&[-128i8, 127][..])
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        let cases = [
            ("", "1:1: expected `graph @name {`"),
            ("graph @g {", "1:11: unexpected end of input"),
            ("graph @g { in %0: f33[] }", "1:19: unknown dtype `f33`"),
            (
                "graph @g { in %0: f32[] in %0: f32[] }",
                "1:28: %0 is defined twice (first at line 1, column 15)",
            ),
            (
                "graph @g { in %1: f32[] }",
                "value ids must be numbered 0..1 without gaps, but %0 is not defined",
            ),
            (
                "graph @g { in %0: f32[] out %0, %3 }",
                "1:33: %3 is used but never defined",
            ),
            ("graph @g { %0: f32[] = Foo() }", "1:24: unknown op `Foo`"),
            (
                "graph @g { const %0: f32[2] = [1.0] }",
                "constant %0: f32[2] has 2 elements, but 1 are given",
            ),
            (
                "graph @g { const %0: u8[] = 256 }",
                "256 is out of range for u8 data",
            ),
            (
                "graph @g { const %0: i32[] = 1.5 }",
                "expected an integer for i32 data, found `1.5`",
            ),
            (
                "graph @g { const %0: f32[4096] = elided<16384 bytes> }",
                "kiln dump --full-constants",
            ),
            (
                "graph @g { const %0: u16[1] = hex\"00\" }",
                "u16[1] needs 2 bytes, the hex string has 1",
            ),
            (
                "graph @g { const %0: f32[n] = [1.0] }",
                "has the symbolic type f32[n]",
            ),
            (
                "graph @g { in %0: f32[] %1: f32[] = Relu[x=[]](%0) }",
                "empty list for attribute `x` needs its kind",
            ),
            (
                "graph @g { in %0: f32[] %1: f32[] = Relu[x=1, x=2](%0) }",
                "attribute `x` is given twice",
            ),
            (
                "graph @g { const %0: f32[] = nan:0x3f800000 }",
                "nan:0x3f800000 is not a NaN bit pattern of f32",
            ),
            ("graph @g { in %0: f32[-1] }", "1:23: expected a dimension"),
            (
                "graph @g { out %0 out %0 in %0: f32[] }",
                "second `out` line",
            ),
            ("graph @g { } graph", "expected end of input"),
        ];
        for (src, want) in cases {
            let e = err(src);
            assert!(e.contains(want), "{src}\n  got:  {e}\n  want: {want}");
        }
    }
}
