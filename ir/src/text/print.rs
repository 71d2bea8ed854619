//! The `.kir` printer (grammar in [`crate::text`]).
//!
//! Printing never fails and never panics, even on a graph that does not
//! verify: a broken graph prints as well as it can (an undefined value gets a
//! comment line), so a verifier failure can always be dumped and looked at.

use super::lex::is_ident;
use crate::{
    with_data, Attr, Attrs, DType, Data, Dim, Element, Graph, Node, Tensor, TensorType, ValueId,
};
use half::{bf16, f16};
use std::fmt::Write;

/// How constants (and tensor attributes) are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConstMode {
    /// Every constant in full: lossless, so the text parses back to the same graph.
    /// Decimal up to [`DECIMAL_MAX_ELEMS`] elements, raw little-endian hex beyond.
    Inline,
    /// Constants with more than `max_elems` elements print as a one-line
    /// summary (`elided<...>`: size, an FNV-1a hash of the bytes, min and max),
    /// which the parser rejects. For dumps meant for people.
    Elide { max_elems: usize },
}

/// Printer settings. The default elides constants of more than 16 elements;
/// [`PrintOptions::lossless`] prints everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrintOptions {
    pub large_consts: ConstMode,
}

impl PrintOptions {
    /// Lossless: every constant's contents in the text.
    pub fn lossless() -> PrintOptions {
        PrintOptions {
            large_consts: ConstMode::Inline,
        }
    }
}

impl Default for PrintOptions {
    fn default() -> PrintOptions {
        PrintOptions {
            large_consts: ConstMode::Elide { max_elems: 16 },
        }
    }
}

/// Tensors with at most this many elements print as decimal lists; larger ones as `hex"..."`.
pub const DECIMAL_MAX_ELEMS: usize = 1024;

/// Prints `g` in the `.kir` text form.
pub fn print(g: &Graph, opts: &PrintOptions) -> String {
    let mut p = Printer {
        g,
        opts,
        out: String::new(),
    };
    p.graph();
    p.out
}

/// Prints a fused-op expression (grammar in [`crate::expr`]); constants in full.
pub fn print_expr(e: &crate::expr::Expr) -> String {
    let g = Graph::default();
    let opts = PrintOptions::lossless();
    let mut p = Printer {
        g: &g,
        opts: &opts,
        out: String::new(),
    };
    p.expr(e);
    p.out
}

struct Printer<'a> {
    g: &'a Graph,
    opts: &'a PrintOptions,
    out: String,
}

impl Printer<'_> {
    fn graph(&mut self) {
        let g = self.g;
        self.out.push_str("graph @");
        write_name(&mut self.out, &g.name);
        self.out.push_str(" {\n");
        self.undefined_values();
        for &v in &g.inputs {
            self.out.push_str("  in ");
            self.value_decl(v);
            self.out.push('\n');
        }
        for (&v, t) in &g.consts {
            self.out.push_str("  const ");
            self.value_decl(v);
            self.out.push_str(" = ");
            match g.values.get(v.index()) {
                Some(info) if info.ty == t.ty() => self.tensor_data(t),
                _ => self.tensor_literal(t),
            }
            self.out.push('\n');
        }
        for n in &g.nodes {
            self.node(n);
        }
        if !g.outputs.is_empty() {
            self.out.push_str("  out ");
            self.value_list(g.outputs.iter().map(|&v| Some(v)));
            self.out.push('\n');
        }
        self.out.push_str("}\n");
    }

    /// A comment line for each value that nothing defines (the text will not
    /// parse back: the verifier reports such graphs).
    fn undefined_values(&mut self) {
        let g = self.g;
        let mut defined = vec![false; g.values.len()];
        let defs = g
            .inputs
            .iter()
            .chain(g.consts.keys())
            .chain(g.nodes.iter().flat_map(|n| &n.outputs));
        for v in defs {
            if let Some(d) = defined.get_mut(v.index()) {
                *d = true;
            }
        }
        for (i, d) in defined.iter().enumerate() {
            if !d {
                self.out.push_str("  ; error: ");
                self.value_decl(ValueId(i as u32));
                self.out.push_str(" is never defined\n");
            }
        }
    }

    fn node(&mut self, n: &Node) {
        self.out.push_str("  ");
        for (i, &v) in n.outputs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.value_decl(v);
        }
        if !n.outputs.is_empty() {
            self.out.push_str(" = ");
        }
        self.out.push_str(n.op.name());
        if !n.attrs.is_empty() {
            self.attrs(&n.attrs);
        }
        self.out.push('(');
        self.value_list(n.inputs.iter().copied());
        self.out.push_str(") @");
        write_name(&mut self.out, &n.name);
        self.out.push('\n');
    }

    fn expr(&mut self, e: &crate::expr::Expr) {
        use crate::expr::Expr;
        match e {
            Expr::Input(i) => {
                let _ = write!(self.out, "%{i}");
            }
            Expr::Const(t) => self.tensor_literal(t),
            Expr::Op { op, attrs, args } => {
                self.out.push_str(op.name());
                if !attrs.is_empty() {
                    self.attrs(attrs);
                }
                self.out.push('(');
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.expr(a);
                }
                self.out.push(')');
            }
        }
    }

    fn value_list(&mut self, vs: impl Iterator<Item = Option<ValueId>>) {
        for (i, v) in vs.enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            match v {
                Some(v) => {
                    let _ = write!(self.out, "{v}");
                }
                None => self.out.push('_'),
            }
        }
    }

    /// `%N "name": type`
    fn value_decl(&mut self, v: ValueId) {
        let _ = write!(self.out, "{v}");
        match self.g.values.get(v.index()) {
            Some(info) => {
                if let Some(name) = &info.name {
                    self.out.push(' ');
                    write_string(&mut self.out, name);
                }
                self.out.push_str(": ");
                write_type(&mut self.out, &info.ty);
            }
            None => self.out.push_str(": <no such value>"),
        }
    }

    fn attrs(&mut self, attrs: &Attrs) {
        self.out.push('[');
        for (i, (name, a)) in attrs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            write_name(&mut self.out, name);
            self.out.push('=');
            match a {
                Attr::Int(x) => {
                    let _ = write!(self.out, "{x}");
                }
                Attr::Float(x) => write_f32(&mut self.out, *x),
                Attr::Str(s) => write_string(&mut self.out, s),
                Attr::Tensor(t) => self.tensor_literal(t),
                Attr::Ints(v) => {
                    if v.is_empty() {
                        self.out.push_str("ints");
                    }
                    write_list(&mut self.out, v, |o, x| {
                        let _ = write!(o, "{x}");
                    });
                }
                Attr::Floats(v) => {
                    if v.is_empty() {
                        self.out.push_str("floats");
                    }
                    write_list(&mut self.out, v, |o, x| write_f32(o, *x));
                }
                Attr::Strs(v) => {
                    if v.is_empty() {
                        self.out.push_str("strs");
                    }
                    write_list(&mut self.out, v, |o, x| write_string(o, x));
                }
            }
        }
        self.out.push(']');
    }

    /// `tensor<f32[2]> [1.0, 2.0]`
    fn tensor_literal(&mut self, t: &Tensor) {
        self.out.push_str("tensor<");
        write_type(&mut self.out, &t.ty());
        self.out.push_str("> ");
        self.tensor_data(t);
    }

    /// The contents alone: `[1.0, 2.0]`, `1.0` (rank 0), `hex"..."` or `elided<...>`.
    fn tensor_data(&mut self, t: &Tensor) {
        let n = t.numel();
        if let ConstMode::Elide { max_elems } = self.opts.large_consts {
            if n > max_elems {
                write_elided(&mut self.out, t);
                return;
            }
        }
        if n > DECIMAL_MAX_ELEMS {
            write_hex(&mut self.out, &t.to_le_bytes());
        } else if t.rank() == 0 {
            with_data!(t.data(), v => write_elems(&mut self.out, v));
        } else {
            self.out.push('[');
            with_data!(t.data(), v => write_elems(&mut self.out, v));
            self.out.push(']');
        }
    }
}

/// An identifier as is, anything else quoted.
fn write_name(out: &mut String, s: &str) {
    if is_ident(s) {
        out.push_str(s);
    } else {
        write_string(out, s);
    }
}

/// A quoted string: `"` and `\` escaped, control characters as `\n \r \t \0` or `\u{..}`.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub fn write_type(out: &mut String, ty: &TensorType) {
    out.push_str(ty.dtype.name());
    out.push('[');
    for (i, d) in ty.shape.0.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match d {
            Dim::Fixed(n) => {
                let _ = write!(out, "{n}");
            }
            Dim::Sym(s) => write_name(out, s),
        }
    }
    out.push(']');
}

fn write_list<T>(out: &mut String, v: &[T], mut f: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        f(out, x);
    }
    out.push(']');
}

/// How one element of each dtype is written.
trait WriteElem {
    fn write_elem(self, out: &mut String);
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl WriteElem for $t {
            fn write_elem(self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
int_elem!(i8, u8, i16, u16, i32, u32, i64, u64, bool);

impl WriteElem for f32 {
    fn write_elem(self, out: &mut String) {
        write_f32(out, self)
    }
}

impl WriteElem for f64 {
    fn write_elem(self, out: &mut String) {
        if self.is_nan() {
            write_nan(out, self.to_bits(), CANONICAL_NAN_F64, 63, 16);
        } else {
            let _ = write!(out, "{self:?}");
        }
    }
}

impl WriteElem for f16 {
    /// The exact value, written as the shortest f32 that reads back to it.
    fn write_elem(self, out: &mut String) {
        if self.is_nan() {
            write_nan(out, self.to_bits().into(), CANONICAL_NAN_F16.into(), 15, 4);
        } else {
            let _ = write!(out, "{:?}", self.to_f32());
        }
    }
}

impl WriteElem for bf16 {
    fn write_elem(self, out: &mut String) {
        if self.is_nan() {
            write_nan(out, self.to_bits().into(), CANONICAL_NAN_BF16.into(), 15, 4);
        } else {
            let _ = write!(out, "{:?}", self.to_f32());
        }
    }
}

pub const CANONICAL_NAN_F32: u32 = 0x7fc0_0000;
pub const CANONICAL_NAN_F64: u64 = 0x7ff8_0000_0000_0000;
pub const CANONICAL_NAN_F16: u16 = 0x7e00;
pub const CANONICAL_NAN_BF16: u16 = 0x7fc0;

/// Shortest round-trip decimal, always with a `.` or an exponent (`1.0`,
/// `1e-7`), or `inf`, `-inf`, `nan`, `-nan`, `nan:0x7fc00001`.
pub fn write_f32(out: &mut String, x: f32) {
    if x.is_nan() {
        write_nan(out, x.to_bits().into(), CANONICAL_NAN_F32.into(), 31, 8);
    } else {
        let _ = write!(out, "{x:?}");
    }
}

/// `nan` and `-nan` for the canonical quiet NaN (and its negation); any other
/// payload as its bit pattern, `nan:0x...`.
fn write_nan(out: &mut String, bits: u64, canonical: u64, sign_bit: u32, hex_digits: usize) {
    if bits == canonical {
        out.push_str("nan");
    } else if bits == canonical | (1 << sign_bit) {
        out.push_str("-nan");
    } else {
        let _ = write!(out, "nan:0x{bits:0hex_digits$x}");
    }
}

fn write_elems<T: WriteElem + Copy>(out: &mut String, v: &[T]) {
    for (i, &x) in v.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        x.write_elem(out);
    }
}

fn write_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2 + 5);
    out.push_str("hex\"");
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out.push('"');
}

/// FNV-1a, 64-bit: a cheap fingerprint to tell elided constants apart.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `elided<589824 bytes, fnv64=0x..., min=-0.5, max=0.7>`.
fn write_elided(out: &mut String, t: &Tensor) {
    let bytes = t.to_le_bytes();
    let _ = write!(
        out,
        "elided<{} bytes, fnv64=0x{:016x}",
        bytes.len(),
        fnv64(&bytes)
    );
    if let Some((lo, hi, nans)) = min_max(t.data()) {
        let _ = write!(out, ", min={lo:?}, max={hi:?}");
        if nans > 0 {
            let _ = write!(out, ", nans={nans}");
        }
    }
    out.push('>');
}

/// Smallest and largest non-NaN elements, and the NaN count.
fn min_max(d: &Data) -> Option<(f64, f64, usize)> {
    fn go<T: Element>(v: &[T]) -> Option<(f64, f64, usize)> {
        let mut acc: Option<(f64, f64)> = None;
        let mut nans = 0;
        for x in v {
            let x = x.to_f64();
            if x.is_nan() {
                nans += 1;
                continue;
            }
            acc = Some(match acc {
                None => (x, x),
                Some((lo, hi)) => (lo.min(x), hi.max(x)),
            });
        }
        acc.map(|(lo, hi)| (lo, hi, nans))
    }
    if d.dtype() == DType::Bool {
        return None;
    }
    with_data!(d, v => go(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> String {
        let mut s = String::new();
        write_elems(&mut s, v);
        s
    }

    #[test]
    fn floats_are_shortest_and_marked() {
        assert_eq!(
            f32s(&[1.0, -0.0, 0.1, 1e-7, 3e38, f32::INFINITY, f32::NEG_INFINITY]),
            "1.0, -0.0, 0.1, 1e-7, 3e38, inf, -inf"
        );
        assert_eq!(
            f32s(&[f32::NAN, -f32::NAN, f32::from_bits(0x7fc0_0001)]),
            "nan, -nan, nan:0x7fc00001"
        );
        let mut s = String::new();
        write_elems(&mut s, &[f16::from_f32(0.1), f16::NAN]);
        s.push_str(", ");
        write_elems(&mut s, &[bf16::from_f32(1.5)]);
        assert_eq!(s, "0.099975586, nan, 1.5");
    }

    #[test]
    fn strings_escape() {
        let mut s = String::new();
        write_string(&mut s, "a\"b\\c\n\u{7}é");
        assert_eq!(s, r#""a\"b\\c\n\u{7}é""#);
    }

    #[test]
    fn elided_summary() {
        let t = Tensor::from_vec(vec![4], vec![1.0f32, -2.0, f32::NAN, 0.5]).unwrap();
        let mut s = String::new();
        write_elided(&mut s, &t);
        assert!(s.starts_with("elided<16 bytes, fnv64=0x"), "{s}");
        assert!(s.ends_with(", min=-2.0, max=1.0, nans=1>"), "{s}");
    }
}
