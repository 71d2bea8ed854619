//! The text form of a kernel [`Program`]: a printer and a parser that
//! round-trip exactly (`parse(&print(p)) == p`, floats bit for bit).
//!
//! ```text
//! ; comments run from `;` to the end of the line
//! program "model" arena 128 {
//!   buffer b0 "x": f32[2,5] input 0
//!   buffer b1: f32[5] const hex"0000803f..."      ; little-endian bytes
//!   buffer b2: f32[2,5] temp @0                    ; `temp` alone before planning
//!   buffer b3 "y": f32[2,5] output 0
//!   kernel "Add_1" (b0 read, b1 read, b3 write) grid [v0 < 2] {
//!     for v1 in 0 .. 4 step 4 {
//!       store b3[v0 * 5 + v1] = add(load(b0, v0 * 5 + v1, 4), load(b1, v1, 4))
//!     }
//!     for v2 in 4 .. 5 step 1 {
//!       let v3 = load(b0, v0 * 5 + v2, 1)
//!       store b3[v0 * 5 + v2] = add(v3, load(b1, v2, 1))
//!     }
//!   }
//! }
//! ```
//!
//! Statements: `for V in IDX .. IDX step N { ... }`, `let V = E`,
//! `local V: TY = E`, `set V = E`, `store B[IDX] = E`,
//! `if E { ... } else { ... }`, `barrier`, `alloc B: DT[N] global|shared|private`,
//! `tile_matmul m M n N k IDX acc B a B[IDX] stride R C b B[IDX] stride R C`.
//! Grid axes are `V < N` or `V < N block`.
//!
//! Expressions are calls: `load(B, IDX, LANES)`, `idx(IDX)`, unary ops by
//! name (`exp(x)`, `is_nan(x)`, ...), binary ops (`add`, `sub`, `mul`, `div`,
//! `rem`, `min`, `max`, `pow`, `and`, `or`, `xor`, `shl`, `shr`), comparisons
//! (`eq`, `ne`, `lt`, `le`, `gt`, `ge`), `fma(a, b, c)`, `select(c, a, b)`,
//! `cast(DT, x)`, `splat(N, x)`, `reduce_add|mul|min|max(x)`; constants
//! `1.5:f32`, `-3:i64`, `1:bool`, and `bits(0x7fc00000):f32` for non-finite
//! floats. Index expressions are infix: `+`, `* N`, `/ N`, `% N`, with
//! `min(a, b)`, `max(a, b)`, `dyn(E)` and parentheses.

use super::*;
use std::fmt::Write as _;

// ---------------------------------------------------------------- printing

/// Prints a program in the text form.
pub fn print(p: &Program) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "program {} arena {} {{", quote(&p.name), p.arena_bytes);
    for b in &p.buffers {
        let _ = write!(o, "  buffer {}", b.id);
        if let Some(n) = &b.name {
            let _ = write!(o, " {}", quote(n));
        }
        let dims: Vec<String> = b.shape.iter().map(|d| d.to_string()).collect();
        let _ = write!(o, ": {}[{}] ", b.dtype, dims.join(","));
        match &b.kind {
            BufKind::Input(i) => {
                let _ = write!(o, "input {i}");
            }
            BufKind::Output(i) => {
                let _ = write!(o, "output {i}");
            }
            BufKind::Temp { offset: None } => o.push_str("temp"),
            BufKind::Temp { offset: Some(off) } => {
                let _ = write!(o, "temp @{off}");
            }
            BufKind::Const(t) => {
                o.push_str("const hex\"");
                for byte in t.to_le_bytes() {
                    let _ = write!(o, "{byte:02x}");
                }
                o.push('"');
            }
        }
        o.push('\n');
    }
    for k in &p.kernels {
        let params: Vec<String> = k
            .params
            .iter()
            .map(|p| {
                let a = match p.access {
                    Access::Read => "read",
                    Access::Write => "write",
                    Access::ReadWrite => "readwrite",
                };
                format!("{} {a}", p.buf)
            })
            .collect();
        let grid: Vec<String> = k
            .grid
            .iter()
            .map(|a| match a.level {
                ParLevel::Grid => format!("{} < {}", a.var, a.extent),
                ParLevel::Block => format!("{} < {} block", a.var, a.extent),
            })
            .collect();
        let _ = writeln!(
            o,
            "  kernel {} ({}) grid [{}] {{",
            quote(&k.name),
            params.join(", "),
            grid.join(", ")
        );
        stmts(&mut o, &k.body, 2);
        o.push_str("  }\n");
    }
    o.push_str("}\n");
    o
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}

fn quote(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn stmts(o: &mut String, ss: &[Stmt], depth: usize) {
    for s in ss {
        stmt(o, s, depth);
    }
}

fn stmt(o: &mut String, s: &Stmt, depth: usize) {
    let pad = "  ".repeat(depth);
    match s {
        Stmt::For {
            var,
            start,
            end,
            step,
            body,
        } => {
            let _ = writeln!(
                o,
                "{pad}for {var} in {} .. {} step {step} {{",
                idx(start),
                idx(end)
            );
            stmts(o, body, depth + 1);
            let _ = writeln!(o, "{pad}}}");
        }
        Stmt::Let { var, value } => {
            let _ = writeln!(o, "{pad}let {var} = {}", expr(value));
        }
        Stmt::Local { var, ty, init } => {
            let _ = writeln!(o, "{pad}local {var}: {ty} = {}", expr(init));
        }
        Stmt::Assign { var, value } => {
            let _ = writeln!(o, "{pad}set {var} = {}", expr(value));
        }
        Stmt::Store { buf, index, value } => {
            let _ = writeln!(o, "{pad}store {buf}[{}] = {}", idx(index), expr(value));
        }
        Stmt::If { cond, then, els } => {
            let _ = writeln!(o, "{pad}if {} {{", expr(cond));
            stmts(o, then, depth + 1);
            let _ = writeln!(o, "{pad}}} else {{");
            stmts(o, els, depth + 1);
            let _ = writeln!(o, "{pad}}}");
        }
        Stmt::Barrier => {
            let _ = writeln!(o, "{pad}barrier");
        }
        Stmt::Alloc {
            buf,
            scope,
            dtype,
            len,
        } => {
            let sc = match scope {
                Scope::Global => "global",
                Scope::Shared => "shared",
                Scope::Private => "private",
            };
            let _ = writeln!(o, "{pad}alloc {buf}: {dtype}[{len}] {sc}");
        }
        Stmt::TileMatMul(t) => {
            let _ = writeln!(
                o,
                "{pad}tile_matmul m {} n {} k {} acc {} a {}[{}] stride {} {} b {}[{}] stride {} {}",
                t.m,
                t.n,
                idx(&t.k),
                t.acc,
                t.a.buf,
                idx(&t.a.base),
                t.a.row_stride,
                t.a.col_stride,
                t.b.buf,
                idx(&t.b.base),
                t.b.row_stride,
                t.b.col_stride
            );
        }
    }
}

/// Prints an index expression.
pub fn idx(e: &IndexExpr) -> String {
    match e {
        IndexExpr::Add(a, b) => {
            let r = if matches!(**b, IndexExpr::Add(..)) {
                format!("({})", idx(b))
            } else {
                idx(b)
            };
            format!("{} + {r}", idx(a))
        }
        IndexExpr::Mul(a, k) => format!("{} * {k}", term(a)),
        IndexExpr::Div(a, k) => format!("{} / {k}", term(a)),
        IndexExpr::Mod(a, k) => format!("{} % {k}", term(a)),
        _ => term(e),
    }
}

fn term(e: &IndexExpr) -> String {
    match e {
        IndexExpr::Const(c) => c.to_string(),
        IndexExpr::Var(v) => v.to_string(),
        IndexExpr::Add(..) => format!("({})", idx(e)),
        IndexExpr::Mul(..) | IndexExpr::Div(..) | IndexExpr::Mod(..) => idx(e),
        IndexExpr::Min(a, b) => format!("min({}, {})", idx(a), idx(b)),
        IndexExpr::Max(a, b) => format!("max({}, {})", idx(a), idx(b)),
        IndexExpr::Dyn(x) => format!("dyn({})", expr(x)),
    }
}

fn unop_name(op: UnOp) -> &'static str {
    match op {
        UnOp::Neg => "neg",
        UnOp::Abs => "abs",
        UnOp::Sqrt => "sqrt",
        UnOp::Rsqrt => "rsqrt",
        UnOp::Recip => "recip",
        UnOp::Exp => "exp",
        UnOp::Log => "log",
        UnOp::Tanh => "tanh",
        UnOp::Erf => "erf",
        UnOp::Sin => "sin",
        UnOp::Cos => "cos",
        UnOp::Tan => "tan",
        UnOp::Asin => "asin",
        UnOp::Acos => "acos",
        UnOp::Atan => "atan",
        UnOp::Sinh => "sinh",
        UnOp::Cosh => "cosh",
        UnOp::Asinh => "asinh",
        UnOp::Acosh => "acosh",
        UnOp::Atanh => "atanh",
        UnOp::Floor => "floor",
        UnOp::Ceil => "ceil",
        UnOp::Round => "round",
        UnOp::Trunc => "trunc",
        UnOp::Not => "not",
        UnOp::IsNan => "is_nan",
        UnOp::IsInf => "is_inf",
    }
}

const UNOPS: [UnOp; 27] = [
    UnOp::Neg,
    UnOp::Abs,
    UnOp::Sqrt,
    UnOp::Rsqrt,
    UnOp::Recip,
    UnOp::Exp,
    UnOp::Log,
    UnOp::Tanh,
    UnOp::Erf,
    UnOp::Sin,
    UnOp::Cos,
    UnOp::Tan,
    UnOp::Asin,
    UnOp::Acos,
    UnOp::Atan,
    UnOp::Sinh,
    UnOp::Cosh,
    UnOp::Asinh,
    UnOp::Acosh,
    UnOp::Atanh,
    UnOp::Floor,
    UnOp::Ceil,
    UnOp::Round,
    UnOp::Trunc,
    UnOp::Not,
    UnOp::IsNan,
    UnOp::IsInf,
];

fn binop_name(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "add",
        BinOp::Sub => "sub",
        BinOp::Mul => "mul",
        BinOp::Div => "div",
        BinOp::Rem => "rem",
        BinOp::Min => "min",
        BinOp::Max => "max",
        BinOp::Pow => "pow",
        BinOp::And => "and",
        BinOp::Or => "or",
        BinOp::Xor => "xor",
        BinOp::Shl => "shl",
        BinOp::Shr => "shr",
    }
}

const BINOPS: [BinOp; 13] = [
    BinOp::Add,
    BinOp::Sub,
    BinOp::Mul,
    BinOp::Div,
    BinOp::Rem,
    BinOp::Min,
    BinOp::Max,
    BinOp::Pow,
    BinOp::And,
    BinOp::Or,
    BinOp::Xor,
    BinOp::Shl,
    BinOp::Shr,
];

fn cmp_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "eq",
        CmpOp::Ne => "ne",
        CmpOp::Lt => "lt",
        CmpOp::Le => "le",
        CmpOp::Gt => "gt",
        CmpOp::Ge => "ge",
    }
}

const CMPS: [CmpOp; 6] = [
    CmpOp::Eq,
    CmpOp::Ne,
    CmpOp::Lt,
    CmpOp::Le,
    CmpOp::Gt,
    CmpOp::Ge,
];

fn lane_name(op: LaneOp) -> &'static str {
    match op {
        LaneOp::Add => "reduce_add",
        LaneOp::Mul => "reduce_mul",
        LaneOp::Min => "reduce_min",
        LaneOp::Max => "reduce_max",
    }
}

const LANEOPS: [LaneOp; 4] = [LaneOp::Add, LaneOp::Mul, LaneOp::Min, LaneOp::Max];

/// Prints an expression.
pub fn expr(e: &Expr) -> String {
    match e {
        Expr::Float { dtype, value } => {
            if value.is_finite() {
                if *dtype == DType::F32 {
                    format!("{:?}:{dtype}", *value as f32)
                } else {
                    format!("{value:?}:{dtype}")
                }
            } else if *dtype == DType::F32 {
                format!("bits({:#x}):{dtype}", (*value as f32).to_bits())
            } else {
                format!("bits({:#x}):{dtype}", value.to_bits())
            }
        }
        Expr::Int { dtype, value } => format!("{value}:{dtype}"),
        Expr::Var(v) => v.to_string(),
        Expr::Index(i) => format!("idx({})", idx(i)),
        Expr::Load { buf, index, lanes } => format!("load({buf}, {}, {lanes})", idx(index)),
        Expr::Unary { op, arg } => format!("{}({})", unop_name(*op), expr(arg)),
        Expr::Binary { op, lhs, rhs } => {
            format!("{}({}, {})", binop_name(*op), expr(lhs), expr(rhs))
        }
        Expr::Fma { a, b, c } => format!("fma({}, {}, {})", expr(a), expr(b), expr(c)),
        Expr::Cmp { op, lhs, rhs } => format!("{}({}, {})", cmp_name(*op), expr(lhs), expr(rhs)),
        Expr::Select { cond, then, els } => {
            format!("select({}, {}, {})", expr(cond), expr(then), expr(els))
        }
        Expr::Cast { to, arg } => format!("cast({to}, {})", expr(arg)),
        Expr::Splat { lanes, arg } => format!("splat({lanes}, {})", expr(arg)),
        Expr::ReduceLanes { op, arg } => format!("{}({})", lane_name(*op), expr(arg)),
    }
}

// ----------------------------------------------------------------- parsing

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(String),
    Str(String),
    /// Punctuation; `..` is the one two-character token.
    P(&'static str),
    Eof,
}

struct Lexer {
    toks: Vec<(Tok, usize, usize)>,
    at: usize,
}

const PUNCT: [&str; 16] = [
    "..", "{", "}", "[", "]", "(", ")", ",", ":", "=", "<", "@", "+", "*", "/", "%",
];

fn lex(src: &str) -> Result<Vec<(Tok, usize, usize)>, KernelError> {
    let cs: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let mut out = Vec::new();
    let err = |line, col, msg: String| KernelError::Parse { line, col, msg };
    while i < cs.len() {
        let c = cs[i];
        let (l0, c0) = (line, col);
        let adv = |i: &mut usize, line: &mut usize, col: &mut usize, n: usize| {
            for k in 0..n {
                if cs[*i + k] == '\n' {
                    *line += 1;
                    *col = 1;
                } else {
                    *col += 1;
                }
            }
            *i += n;
        };
        if c.is_whitespace() {
            adv(&mut i, &mut line, &mut col, 1);
        } else if c == ';' {
            while i < cs.len() && cs[i] != '\n' {
                adv(&mut i, &mut line, &mut col, 1);
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let s = i;
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '_') {
                adv(&mut i, &mut line, &mut col, 1);
            }
            out.push((Tok::Ident(cs[s..i].iter().collect()), l0, c0));
        } else if c.is_ascii_digit() || (c == '-' && i + 1 < cs.len() && cs[i + 1].is_ascii_digit())
        {
            let s = i;
            adv(&mut i, &mut line, &mut col, 1);
            if i + 1 < cs.len() && cs[i - 1] == '0' && cs[i] == 'x' {
                adv(&mut i, &mut line, &mut col, 1);
                while i < cs.len() && cs[i].is_ascii_hexdigit() {
                    adv(&mut i, &mut line, &mut col, 1);
                }
            } else {
                while i < cs.len() {
                    let d = cs[i];
                    let exp_sign = (d == '-' || d == '+') && matches!(cs[i - 1], 'e' | 'E');
                    let dot = d == '.' && !(i + 1 < cs.len() && cs[i + 1] == '.');
                    if d.is_ascii_digit() || dot || d == 'e' || d == 'E' || exp_sign {
                        adv(&mut i, &mut line, &mut col, 1);
                    } else {
                        break;
                    }
                }
            }
            out.push((Tok::Num(cs[s..i].iter().collect()), l0, c0));
        } else if c == '"' {
            adv(&mut i, &mut line, &mut col, 1);
            let mut s = String::new();
            loop {
                if i >= cs.len() {
                    return Err(err(l0, c0, "unterminated string".into()));
                }
                let d = cs[i];
                adv(&mut i, &mut line, &mut col, 1);
                match d {
                    '"' => break,
                    '\\' => {
                        if i >= cs.len() {
                            return Err(err(l0, c0, "unterminated string".into()));
                        }
                        let e = cs[i];
                        adv(&mut i, &mut line, &mut col, 1);
                        s.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                    d => s.push(d),
                }
            }
            out.push((Tok::Str(s), l0, c0));
        } else {
            let rest: String = cs[i..(i + 2).min(cs.len())].iter().collect();
            match PUNCT.iter().find(|p| rest.starts_with(**p)) {
                Some(p) => {
                    out.push((Tok::P(p), l0, c0));
                    adv(&mut i, &mut line, &mut col, p.len());
                }
                None => return Err(err(l0, c0, format!("unexpected character `{c}`"))),
            }
        }
    }
    out.push((Tok::Eof, line, col));
    Ok(out)
}

/// Parses the text form back into a [`Program`]. The result is not verified;
/// call [`super::verify::verify`].
pub fn parse(src: &str) -> Result<Program, KernelError> {
    let mut p = Lexer {
        toks: lex(src)?,
        at: 0,
    };
    let prog = p.program()?;
    p.expect_eof()?;
    Ok(prog)
}

type PR<T> = Result<T, KernelError>;

impl Lexer {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }
    fn err<T>(&self, msg: impl Into<String>) -> PR<T> {
        let (_, line, col) = self.toks[self.at];
        Err(KernelError::Parse {
            line,
            col,
            msg: format!("{}, found {}", msg.into(), describe(self.peek())),
        })
    }
    fn next(&mut self) -> Tok {
        let t = self.toks[self.at].0.clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }
    fn eat_p(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Tok::P(q) if *q == p) {
            self.next();
            true
        } else {
            false
        }
    }
    fn p(&mut self, p: &str) -> PR<()> {
        if self.eat_p(p) {
            Ok(())
        } else {
            self.err(format!("expected `{p}`"))
        }
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Tok::Ident(s) if s == kw) {
            self.next();
            true
        } else {
            false
        }
    }
    fn kw(&mut self, kw: &str) -> PR<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.err(format!("expected `{kw}`"))
        }
    }
    fn ident(&mut self) -> PR<String> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.next();
                Ok(s)
            }
            _ => self.err("expected a name"),
        }
    }
    fn string(&mut self) -> PR<String> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.next();
                Ok(s)
            }
            _ => self.err("expected a string"),
        }
    }
    fn num<T: std::str::FromStr>(&mut self) -> PR<T> {
        match self.peek().clone() {
            Tok::Num(s) => match s.parse::<T>() {
                Ok(v) => {
                    self.next();
                    Ok(v)
                }
                Err(_) => self.err(format!("`{s}` is not a valid number here")),
            },
            _ => self.err("expected a number"),
        }
    }
    fn expect_eof(&self) -> PR<()> {
        if *self.peek() == Tok::Eof {
            Ok(())
        } else {
            self.err("expected the end of the input")
        }
    }
    fn prefixed(&mut self, prefix: char, what: &str) -> PR<u32> {
        if let Tok::Ident(s) = self.peek().clone() {
            if let Some(n) = s.strip_prefix(prefix).and_then(|r| r.parse::<u32>().ok()) {
                self.next();
                return Ok(n);
            }
        }
        self.err(format!("expected {what} (`{prefix}N`)"))
    }
    fn buf(&mut self) -> PR<BufId> {
        self.prefixed('b', "a buffer").map(BufId)
    }
    fn var(&mut self) -> PR<Var> {
        self.prefixed('v', "a variable").map(Var)
    }
    fn dtype(&mut self) -> PR<DType> {
        let s = self.ident()?;
        match DType::from_name(&s) {
            Some(d) => Ok(d),
            None => {
                self.at -= 1;
                self.err("expected a dtype")
            }
        }
    }
    fn ty(&mut self) -> PR<Ty> {
        let s = self.ident()?;
        let (d, lanes) = match s.split_once('x') {
            Some((d, l)) => (d, l.parse::<u32>().ok()),
            None => (s.as_str(), Some(1)),
        };
        match (DType::from_name(d), lanes) {
            (Some(d), Some(l)) if l > 0 => Ok(Ty::vector(d, l)),
            _ => {
                self.at -= 1;
                self.err("expected a type (`f32`, `f32x4`)")
            }
        }
    }

    fn program(&mut self) -> PR<Program> {
        self.kw("program")?;
        let name = self.string()?;
        self.kw("arena")?;
        let arena_bytes = self.num::<usize>()?;
        self.p("{")?;
        let mut buffers = Vec::new();
        let mut kernels = Vec::new();
        loop {
            if self.eat_p("}") {
                break;
            } else if self.eat_kw("buffer") {
                buffers.push(self.buffer()?);
            } else if self.eat_kw("kernel") {
                kernels.push(self.kernel()?);
            } else {
                return self.err("expected `buffer`, `kernel` or `}`");
            }
        }
        Ok(Program {
            name,
            buffers,
            kernels,
            arena_bytes,
        })
    }

    fn buffer(&mut self) -> PR<Buffer> {
        let id = self.buf()?;
        let name = if matches!(self.peek(), Tok::Str(_)) {
            Some(self.string()?)
        } else {
            None
        };
        self.p(":")?;
        let dtype = self.dtype()?;
        self.p("[")?;
        let mut shape = Vec::new();
        if !self.eat_p("]") {
            loop {
                shape.push(self.num::<usize>()?);
                if self.eat_p("]") {
                    break;
                }
                self.p(",")?;
            }
        }
        let kind = if self.eat_kw("input") {
            BufKind::Input(self.num()?)
        } else if self.eat_kw("output") {
            BufKind::Output(self.num()?)
        } else if self.eat_kw("temp") {
            BufKind::Temp {
                offset: if self.eat_p("@") {
                    Some(self.num()?)
                } else {
                    None
                },
            }
        } else if self.eat_kw("const") {
            self.kw("hex")?;
            let h = self.string()?;
            let bytes: Option<Vec<u8>> = (0..h.len() / 2)
                .map(|i| {
                    h.get(2 * i..2 * i + 2)
                        .and_then(|s| u8::from_str_radix(s, 16).ok())
                })
                .collect();
            let bytes = match bytes {
                Some(b) if h.len() % 2 == 0 => b,
                _ => return self.err("bad hex constant"),
            };
            match Tensor::from_le_bytes(dtype, shape.clone(), &bytes) {
                Ok(t) => BufKind::Const(t),
                Err(e) => return self.err(format!("constant of {id}: {e}")),
            }
        } else {
            return self.err("expected `input`, `output`, `temp` or `const`");
        };
        Ok(Buffer {
            id,
            name,
            dtype,
            shape,
            kind,
        })
    }

    fn kernel(&mut self) -> PR<Kernel> {
        let name = self.string()?;
        self.p("(")?;
        let mut params = Vec::new();
        if !self.eat_p(")") {
            loop {
                let buf = self.buf()?;
                let access = match self.ident()?.as_str() {
                    "read" => Access::Read,
                    "write" => Access::Write,
                    "readwrite" => Access::ReadWrite,
                    _ => {
                        self.at -= 1;
                        return self.err("expected `read`, `write` or `readwrite`");
                    }
                };
                params.push(Param { buf, access });
                if self.eat_p(")") {
                    break;
                }
                self.p(",")?;
            }
        }
        self.kw("grid")?;
        self.p("[")?;
        let mut grid = Vec::new();
        if !self.eat_p("]") {
            loop {
                let var = self.var()?;
                self.p("<")?;
                let extent = self.num::<u64>()?;
                let level = if self.eat_kw("block") {
                    ParLevel::Block
                } else {
                    ParLevel::Grid
                };
                grid.push(ParAxis { var, extent, level });
                if self.eat_p("]") {
                    break;
                }
                self.p(",")?;
            }
        }
        let body = self.block()?;
        Ok(Kernel {
            name,
            params,
            grid,
            body,
        })
    }

    fn block(&mut self) -> PR<Vec<Stmt>> {
        self.p("{")?;
        let mut out = Vec::new();
        while !self.eat_p("}") {
            out.push(self.stmt()?);
        }
        Ok(out)
    }

    fn stmt(&mut self) -> PR<Stmt> {
        let kw = self.ident()?;
        Ok(match kw.as_str() {
            "for" => {
                let var = self.var()?;
                self.kw("in")?;
                let start = self.idx()?;
                self.p("..")?;
                let end = self.idx()?;
                self.kw("step")?;
                let step = self.num()?;
                let body = self.block()?;
                Stmt::For {
                    var,
                    start,
                    end,
                    step,
                    body,
                }
            }
            "let" => {
                let var = self.var()?;
                self.p("=")?;
                Stmt::Let {
                    var,
                    value: self.expr()?,
                }
            }
            "local" => {
                let var = self.var()?;
                self.p(":")?;
                let ty = self.ty()?;
                self.p("=")?;
                Stmt::Local {
                    var,
                    ty,
                    init: self.expr()?,
                }
            }
            "set" => {
                let var = self.var()?;
                self.p("=")?;
                Stmt::Assign {
                    var,
                    value: self.expr()?,
                }
            }
            "store" => {
                let buf = self.buf()?;
                self.p("[")?;
                let index = self.idx()?;
                self.p("]")?;
                self.p("=")?;
                Stmt::Store {
                    buf,
                    index,
                    value: self.expr()?,
                }
            }
            "if" => {
                let cond = self.expr()?;
                let then = self.block()?;
                self.kw("else")?;
                let els = self.block()?;
                Stmt::If { cond, then, els }
            }
            "barrier" => Stmt::Barrier,
            "alloc" => {
                let buf = self.buf()?;
                self.p(":")?;
                let dtype = self.dtype()?;
                self.p("[")?;
                let len = self.num()?;
                self.p("]")?;
                let scope = match self.ident()?.as_str() {
                    "global" => Scope::Global,
                    "shared" => Scope::Shared,
                    "private" => Scope::Private,
                    _ => {
                        self.at -= 1;
                        return self.err("expected `global`, `shared` or `private`");
                    }
                };
                Stmt::Alloc {
                    buf,
                    scope,
                    dtype,
                    len,
                }
            }
            "tile_matmul" => {
                self.kw("m")?;
                let m = self.num()?;
                self.kw("n")?;
                let n = self.num()?;
                self.kw("k")?;
                let k = self.idx()?;
                self.kw("acc")?;
                let acc = self.buf()?;
                self.kw("a")?;
                let a = self.tile_operand()?;
                self.kw("b")?;
                let b = self.tile_operand()?;
                Stmt::TileMatMul(TileMatMul { m, n, k, acc, a, b })
            }
            _ => {
                self.at -= 1;
                return self.err("expected a statement");
            }
        })
    }

    fn tile_operand(&mut self) -> PR<TileOperand> {
        let buf = self.buf()?;
        self.p("[")?;
        let base = self.idx()?;
        self.p("]")?;
        self.kw("stride")?;
        let row_stride = self.num()?;
        let col_stride = self.num()?;
        Ok(TileOperand {
            buf,
            base,
            row_stride,
            col_stride,
        })
    }

    fn idx(&mut self) -> PR<IndexExpr> {
        let mut e = self.idx_term()?;
        while self.eat_p("+") {
            let r = self.idx_term()?;
            e = IndexExpr::Add(Box::new(e), Box::new(r));
        }
        Ok(e)
    }

    fn idx_term(&mut self) -> PR<IndexExpr> {
        let mut e = self.idx_atom()?;
        loop {
            if self.eat_p("*") {
                e = IndexExpr::Mul(Box::new(e), self.num()?);
            } else if self.eat_p("/") {
                e = IndexExpr::Div(Box::new(e), self.num()?);
            } else if self.eat_p("%") {
                e = IndexExpr::Mod(Box::new(e), self.num()?);
            } else {
                return Ok(e);
            }
        }
    }

    fn idx_atom(&mut self) -> PR<IndexExpr> {
        match self.peek().clone() {
            Tok::Num(_) => Ok(IndexExpr::Const(self.num()?)),
            Tok::P("(") => {
                self.next();
                let e = self.idx()?;
                self.p(")")?;
                Ok(e)
            }
            Tok::Ident(s) if s == "min" || s == "max" => {
                self.next();
                self.p("(")?;
                let a = self.idx()?;
                self.p(",")?;
                let b = self.idx()?;
                self.p(")")?;
                Ok(if s == "min" {
                    IndexExpr::Min(Box::new(a), Box::new(b))
                } else {
                    IndexExpr::Max(Box::new(a), Box::new(b))
                })
            }
            Tok::Ident(s) if s == "dyn" => {
                self.next();
                self.p("(")?;
                let x = self.expr()?;
                self.p(")")?;
                Ok(IndexExpr::Dyn(Box::new(x)))
            }
            _ => Ok(IndexExpr::Var(self.var()?)),
        }
    }

    fn args(&mut self, n: usize) -> PR<Vec<Expr>> {
        self.p("(")?;
        let mut v = Vec::new();
        for i in 0..n {
            if i > 0 {
                self.p(",")?;
            }
            v.push(self.expr()?);
        }
        self.p(")")?;
        Ok(v)
    }

    fn expr(&mut self) -> PR<Expr> {
        match self.peek().clone() {
            Tok::Num(s) => {
                self.next();
                self.p(":")?;
                let d = self.dtype()?;
                if matches!(d, DType::F32 | DType::F64) {
                    let v: f64 = if d == DType::F32 {
                        s.parse::<f32>().map(|x| x as f64).map_err(|_| ())
                    } else {
                        s.parse::<f64>().map_err(|_| ())
                    }
                    .or_else(|_| self.err(format!("`{s}` is not a float")))?;
                    Ok(Expr::Float { dtype: d, value: v })
                } else {
                    let v = s
                        .parse::<i64>()
                        .or_else(|_| self.err(format!("`{s}` is not an integer")))?;
                    Ok(Expr::Int { dtype: d, value: v })
                }
            }
            Tok::Ident(name) => {
                if name.starts_with('v') && name[1..].parse::<u32>().is_ok() {
                    return Ok(Expr::Var(self.var()?));
                }
                self.next();
                let one = |s: &mut Self| -> PR<Box<Expr>> { Ok(Box::new(s.args(1)?.remove(0))) };
                if let Some(op) = UNOPS.iter().find(|o| unop_name(**o) == name) {
                    return Ok(Expr::Unary {
                        op: *op,
                        arg: one(self)?,
                    });
                }
                if let Some(op) = LANEOPS.iter().find(|o| lane_name(**o) == name) {
                    return Ok(Expr::ReduceLanes {
                        op: *op,
                        arg: one(self)?,
                    });
                }
                if let Some(op) = BINOPS.iter().find(|o| binop_name(**o) == name) {
                    let mut a = self.args(2)?;
                    let rhs = Box::new(a.pop().ok_or_else(|| self.perr())?);
                    let lhs = Box::new(a.pop().ok_or_else(|| self.perr())?);
                    return Ok(Expr::Binary { op: *op, lhs, rhs });
                }
                if let Some(op) = CMPS.iter().find(|o| cmp_name(**o) == name) {
                    let mut a = self.args(2)?;
                    let rhs = Box::new(a.pop().ok_or_else(|| self.perr())?);
                    let lhs = Box::new(a.pop().ok_or_else(|| self.perr())?);
                    return Ok(Expr::Cmp { op: *op, lhs, rhs });
                }
                match name.as_str() {
                    "fma" | "select" => {
                        let mut a = self.args(3)?;
                        let z = Box::new(a.pop().ok_or_else(|| self.perr())?);
                        let y = Box::new(a.pop().ok_or_else(|| self.perr())?);
                        let x = Box::new(a.pop().ok_or_else(|| self.perr())?);
                        Ok(if name == "fma" {
                            Expr::Fma { a: x, b: y, c: z }
                        } else {
                            Expr::Select {
                                cond: x,
                                then: y,
                                els: z,
                            }
                        })
                    }
                    "bits" => {
                        self.p("(")?;
                        let s = match self.next() {
                            Tok::Num(s) => s,
                            _ => return self.err("expected hex bits"),
                        };
                        self.p(")")?;
                        self.p(":")?;
                        let d = self.dtype()?;
                        let bits = s
                            .strip_prefix("0x")
                            .and_then(|h| u64::from_str_radix(h, 16).ok())
                            .ok_or(())
                            .or_else(|_| self.err(format!("`{s}` is not hex bits")))?;
                        let value = match d {
                            DType::F32 => f32::from_bits(bits as u32) as f64,
                            DType::F64 => f64::from_bits(bits),
                            _ => return self.err("bits(...) constants are f32 or f64"),
                        };
                        Ok(Expr::Float { dtype: d, value })
                    }
                    "idx" => {
                        self.p("(")?;
                        let i = self.idx()?;
                        self.p(")")?;
                        Ok(Expr::Index(i))
                    }
                    "load" => {
                        self.p("(")?;
                        let buf = self.buf()?;
                        self.p(",")?;
                        let index = self.idx()?;
                        self.p(",")?;
                        let lanes = self.num()?;
                        self.p(")")?;
                        Ok(Expr::Load { buf, index, lanes })
                    }
                    "cast" => {
                        self.p("(")?;
                        let to = self.dtype()?;
                        self.p(",")?;
                        let arg = Box::new(self.expr()?);
                        self.p(")")?;
                        Ok(Expr::Cast { to, arg })
                    }
                    "splat" => {
                        self.p("(")?;
                        let lanes = self.num()?;
                        self.p(",")?;
                        let arg = Box::new(self.expr()?);
                        self.p(")")?;
                        Ok(Expr::Splat { lanes, arg })
                    }
                    _ => {
                        self.at -= 1;
                        self.err("expected an expression")
                    }
                }
            }
            _ => self.err("expected an expression"),
        }
    }

    fn perr(&self) -> KernelError {
        let (_, line, col) = self.toks[self.at];
        KernelError::Parse {
            line,
            col,
            msg: "wrong number of arguments".into(),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Num(s) => format!("number `{s}`"),
        Tok::Str(_) => "a string".into(),
        Tok::P(p) => format!("`{p}`"),
        Tok::Eof => "the end of the input".into(),
    }
}

/// Checks that `p` survives printing and parsing back unchanged.
pub fn check_round_trip(p: &Program) -> Result<(), KernelError> {
    let text = print(p);
    let back = parse(&text)?;
    let again = print(&back);
    // Structural equality, or (for NaN constants, which are never `==`)
    // bit-identical text.
    if back == *p || again == text {
        return Ok(());
    }
    let (line, (a, b)) = text
        .lines()
        .zip(again.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .unwrap_or((0, ("<same text>", "<but a different program>")));
    Err(KernelError::Parse {
        line: line + 1,
        col: 1,
        msg: format!(
            "program `{}` changes when printed and parsed back:\n  before: {a}\n  after:  {b}",
            p.name
        ),
    })
}
