//! The e-graph language: one e-node per graph operation, [`KNode`].
//!
//! Requires nothing. Establishes the egg [`Language`] (and [`FromOp`], so that
//! rules can be written as s-expression patterns) over kiln's ops:
//!
//! - `in3`: graph input 3 ([`KNode::Input`]);
//! - `c5`: constant 5 of the analysis' constant table ([`KNode::Const`]);
//! - `proj1`: output 1 of a multi-output node ([`KNode::Proj`], one child);
//! - `_`: an omitted optional operand ([`KNode::Absent`]);
//! - `Op`, `Op[k=v,...]`, `Op[*]`, `Op#3[...]`: an op application
//!   ([`KNode::Op`]). The attributes are written in the `.kir` syntax (see
//!   `kiln_ir::text`) and parsed by the `.kir` parser; an op name alone means
//!   "no attributes". `Op[*]` is a wildcard that matches any attributes: it
//!   is legal only on a rule's left-hand side, and only on a node with at
//!   least one variable below it (egg looks ground terms up by hash).
//!   `#n` is the node's number of outputs (1 when omitted): `Split#3[axis=0]`.
//!   Because patterns are s-expressions, attribute text must not contain
//!   spaces or parentheses: write `Transpose[perm=[1,0]]`.
//!
//! Attributes are compared by their canonical text (floats bit for bit),
//! which is computed once per distinct attribute set and shared ([`AttrKey`]).

use egg::{FromOp, Id, Language};
use kiln_ir::{Attr, Attrs, Op};
use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A node's attributes with their canonical text, or the pattern wildcard.
#[derive(Clone, Debug)]
pub enum AttrKey {
    /// Exactly these attributes.
    Exact(Arc<AttrEntry>),
    /// Any attributes (left-hand sides of rules only).
    Any,
}

/// Interned attributes: the value, its canonical text and that text's hash.
#[derive(Debug)]
pub struct AttrEntry {
    pub attrs: Attrs,
    pub text: String,
    hash: u64,
}

impl AttrKey {
    pub fn new(attrs: Attrs) -> AttrKey {
        let text = attrs_text(&attrs);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        AttrKey::Exact(Arc::new(AttrEntry {
            attrs,
            text,
            hash: h.finish(),
        }))
    }

    pub fn empty() -> AttrKey {
        AttrKey::new(Attrs::new())
    }

    /// The attributes; the wildcard has none.
    pub fn attrs(&self) -> &Attrs {
        static EMPTY: std::sync::OnceLock<Attrs> = std::sync::OnceLock::new();
        match self {
            AttrKey::Exact(e) => &e.attrs,
            AttrKey::Any => EMPTY.get_or_init(Attrs::new),
        }
    }

    pub fn is_wildcard(&self) -> bool {
        matches!(self, AttrKey::Any)
    }

    /// Whether a pattern node with `self` accepts a node with `other`.
    pub fn accepts(&self, other: &AttrKey) -> bool {
        matches!(self, AttrKey::Any) || self == other
    }
}

impl PartialEq for AttrKey {
    fn eq(&self, other: &AttrKey) -> bool {
        match (self, other) {
            (AttrKey::Any, AttrKey::Any) => true,
            (AttrKey::Exact(a), AttrKey::Exact(b)) => {
                Arc::ptr_eq(a, b) || (a.hash == b.hash && a.text == b.text)
            }
            _ => false,
        }
    }
}
impl Eq for AttrKey {}

impl Hash for AttrKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            AttrKey::Any => 0u64.hash(state),
            AttrKey::Exact(e) => e.hash.hash(state),
        }
    }
}

impl Ord for AttrKey {
    fn cmp(&self, other: &AttrKey) -> Ordering {
        match (self, other) {
            (AttrKey::Any, AttrKey::Any) => Ordering::Equal,
            (AttrKey::Any, _) => Ordering::Less,
            (_, AttrKey::Any) => Ordering::Greater,
            (AttrKey::Exact(a), AttrKey::Exact(b)) => {
                a.hash.cmp(&b.hash).then_with(|| a.text.cmp(&b.text))
            }
        }
    }
}
impl PartialOrd for AttrKey {
    fn partial_cmp(&self, other: &AttrKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The canonical `.kir` text of an attribute list, without the brackets
/// (empty for no attributes). Floats are written so that they read back bit
/// for bit; tensors as `tensor<TYPE>hex"..."`.
pub fn attrs_text(attrs: &Attrs) -> String {
    let mut out = String::new();
    for (i, (name, a)) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if kiln_ir::text::is_ident(name) {
            out.push_str(name);
        } else {
            write_string(&mut out, name);
        }
        out.push('=');
        match a {
            Attr::Int(x) => {
                let _ = write!(out, "{x}");
            }
            Attr::Float(x) => write_f32(&mut out, *x),
            Attr::Str(s) => write_string(&mut out, s),
            Attr::Tensor(t) => {
                out.push_str("tensor<");
                let _ = write!(out, "{}", t.ty());
                out.push_str(">hex\"");
                for b in t.to_le_bytes() {
                    let _ = write!(out, "{b:02x}");
                }
                out.push('"');
            }
            Attr::Ints(v) => {
                out.push_str(if v.is_empty() { "ints[" } else { "[" });
                for (j, x) in v.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{x}");
                }
                out.push(']');
            }
            Attr::Floats(v) => {
                out.push_str(if v.is_empty() { "floats[" } else { "[" });
                for (j, x) in v.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_f32(&mut out, *x);
                }
                out.push(']');
            }
            Attr::Strs(v) => {
                out.push_str(if v.is_empty() { "strs[" } else { "[" });
                for (j, x) in v.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_string(&mut out, x);
                }
                out.push(']');
            }
        }
    }
    out
}

/// A float so that it reads back bit for bit (`1.0`, `1e-5`, `-inf`,
/// `nan:0x7fc00000`).
fn write_f32(out: &mut String, x: f32) {
    if x.is_nan() {
        let _ = write!(out, "nan:0x{:08x}", x.to_bits());
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "inf" } else { "-inf" });
    } else {
        let _ = write!(out, "{x:?}");
    }
}

/// A `.kir` string literal.
fn write_string(out: &mut String, s: &str) {
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

/// Parses an attribute list in `.kir` syntax (the text between `[` and `]`)
/// with the `.kir` parser.
pub fn parse_attrs(text: &str) -> Result<Attrs, String> {
    // The .kir parser reads attributes only as part of a node; it does not
    // check them against the op, so an Identity node carries them here.
    let src =
        format!("graph @attrs {{\n in %0: f32[]\n %1: f32[] = Identity[{text}](%0)\n out %1\n}}");
    let g = kiln_ir::text::parse(&src, "<pattern>").map_err(|e| e.to_string())?;
    g.nodes
        .into_iter()
        .next()
        .map(|n| n.attrs)
        .ok_or_else(|| "no node parsed".to_string())
}

/// An op application.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpNode {
    pub op: Op,
    /// Number of outputs (a multi-output node's class is read through [`KNode::Proj`]).
    pub nout: u8,
    pub attrs: AttrKey,
    /// Operands in ONNX positions; an omitted optional one is a class holding [`KNode::Absent`].
    pub args: Box<[Id]>,
}

/// An e-node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KNode {
    /// Graph input `i` (index into `Graph::inputs`).
    Input(u32),
    /// Constant `i` of [`crate::egraph::KAnalysis::consts`].
    Const(u32),
    Op(OpNode),
    /// Output `index` of the multi-output node in class `arg[0]`.
    Proj {
        index: u32,
        arg: [Id; 1],
    },
    /// An omitted optional operand.
    Absent,
}

/// What egg uses to find candidate nodes quickly: the variant, and for ops
/// the op and its output count (attributes are compared by [`KNode::matches`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KDisc {
    Input,
    Const,
    Op(Op, u8),
    Proj(u32),
    Absent,
}

impl KNode {
    /// A single-output op node.
    pub fn op(op: Op, attrs: Attrs, args: Vec<Id>) -> KNode {
        KNode::op_n(op, 1, AttrKey::new(attrs), args)
    }

    pub fn op_n(op: Op, nout: u8, attrs: AttrKey, args: Vec<Id>) -> KNode {
        KNode::Op(OpNode {
            op,
            nout,
            attrs,
            args: args.into_boxed_slice(),
        })
    }

    pub fn proj(index: u32, arg: Id) -> KNode {
        KNode::Proj { index, arg: [arg] }
    }

    pub fn as_op(&self) -> Option<&OpNode> {
        match self {
            KNode::Op(o) => Some(o),
            _ => None,
        }
    }

    /// Whether the node is an application of `op`.
    pub fn is_op(&self, op: Op) -> bool {
        matches!(self, KNode::Op(o) if o.op == op)
    }
}

impl Language for KNode {
    type Discriminant = KDisc;

    fn discriminant(&self) -> KDisc {
        match self {
            KNode::Input(_) => KDisc::Input,
            KNode::Const(_) => KDisc::Const,
            KNode::Op(o) => KDisc::Op(o.op, o.nout),
            KNode::Proj { index, .. } => KDisc::Proj(*index),
            KNode::Absent => KDisc::Absent,
        }
    }

    fn matches(&self, other: &KNode) -> bool {
        match (self, other) {
            (KNode::Input(a), KNode::Input(b)) => a == b,
            (KNode::Const(a), KNode::Const(b)) => a == b,
            (KNode::Absent, KNode::Absent) => true,
            (KNode::Proj { index: a, .. }, KNode::Proj { index: b, .. }) => a == b,
            (KNode::Op(a), KNode::Op(b)) => {
                a.op == b.op
                    && a.nout == b.nout
                    && a.args.len() == b.args.len()
                    && a.attrs.accepts(&b.attrs)
            }
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            KNode::Op(o) => &o.args,
            KNode::Proj { arg, .. } => arg,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            KNode::Op(o) => &mut o.args,
            KNode::Proj { arg, .. } => arg,
            _ => &mut [],
        }
    }
}

impl fmt::Display for KNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KNode::Input(i) => write!(f, "in{i}"),
            KNode::Const(i) => write!(f, "c{i}"),
            KNode::Proj { index, .. } => write!(f, "proj{index}"),
            KNode::Absent => f.write_str("_"),
            KNode::Op(o) => {
                f.write_str(o.op.name())?;
                if o.nout != 1 {
                    write!(f, "#{}", o.nout)?;
                }
                match &o.attrs {
                    AttrKey::Any => f.write_str("[*]"),
                    AttrKey::Exact(e) if e.text.is_empty() => Ok(()),
                    AttrKey::Exact(e) => write!(f, "[{}]", e.text),
                }
            }
        }
    }
}

/// Why a pattern's operator did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseNodeError(pub String);

impl fmt::Display for ParseNodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn leaf_index(s: &str, prefix: &str) -> Option<u32> {
    s.strip_prefix(prefix)
        .filter(|r| !r.is_empty())
        .and_then(|r| r.parse().ok())
}

impl FromOp for KNode {
    type Error = ParseNodeError;

    fn from_op(op: &str, children: Vec<Id>) -> Result<KNode, ParseNodeError> {
        let err = |m: String| Err(ParseNodeError(format!("`{op}`: {m}")));
        let leaf = |n: KNode| {
            if children.is_empty() {
                Ok(n)
            } else {
                err("takes no operands".into())
            }
        };
        if op == "_" {
            return leaf(KNode::Absent);
        }
        if let Some(i) = leaf_index(op, "in") {
            return leaf(KNode::Input(i));
        }
        if let Some(i) = leaf_index(op, "c") {
            return leaf(KNode::Const(i));
        }
        if let Some(i) = leaf_index(op, "proj") {
            return match children.as_slice() {
                [c] => Ok(KNode::proj(i, *c)),
                _ => err("a projection takes exactly one operand".into()),
            };
        }
        let (head, attrs) = match op.find('[') {
            Some(p) => {
                let Some(inner) = op[p + 1..].strip_suffix(']') else {
                    return err("attributes must end with `]`".into());
                };
                let key = if inner == "*" {
                    AttrKey::Any
                } else {
                    match parse_attrs(inner) {
                        Ok(a) => AttrKey::new(a),
                        Err(e) => return err(e),
                    }
                };
                (&op[..p], key)
            }
            None => (op, AttrKey::empty()),
        };
        let (name, nout) = match head.split_once('#') {
            Some((n, k)) => match k.parse::<u8>() {
                Ok(k) if k >= 1 => (n, k),
                _ => return err(format!("bad output count `#{k}`")),
            },
            None => (head, 1),
        };
        let Some(op_) = Op::from_name(name) else {
            return err(format!("unknown op `{name}`"));
        };
        Ok(KNode::op_n(op_, nout, attrs, children))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egg::{Pattern, RecExpr};

    #[test]
    fn ops_with_attributes_parse_and_print_back() {
        let e: RecExpr<KNode> = "(MatMul in0 (Transpose[perm=[1,0]] in1))".parse().unwrap();
        assert_eq!(e.to_string(), "(MatMul in0 (Transpose[perm=[1,0]] in1))");
        let e: RecExpr<KNode> = "(proj1 (Split#2[axis=-1] in0 c0))".parse().unwrap();
        assert_eq!(e.to_string(), "(proj1 (Split#2[axis=-1] in0 c0))");
        let e: RecExpr<KNode> = "(Cast[to=10] (Div[] in0 c3))".parse().unwrap();
        // `Div[]` is `Div` (no attributes)
        assert_eq!(e.to_string(), "(Cast[to=10] (Div in0 c3))");
        let e: RecExpr<KNode> = "(LeakyRelu[alpha=0.1] in0)".parse().unwrap();
        assert_eq!(e.to_string(), "(LeakyRelu[alpha=0.1] in0)");
    }

    #[test]
    fn bad_operators_are_errors() {
        assert!("(Frobnicate in0)".parse::<RecExpr<KNode>>().is_err());
        assert!("(Cast[to=] in0)".parse::<RecExpr<KNode>>().is_err());
        assert!("(Split#0 in0)".parse::<RecExpr<KNode>>().is_err());
        assert!("(in0 in1)".parse::<RecExpr<KNode>>().is_err());
    }

    #[test]
    fn wildcard_matches_any_attributes_exact_matches_only_equal_ones() {
        let p: Pattern<KNode> = "(Transpose[*] ?x)".parse().unwrap();
        let wild = match p.ast.last().unwrap() {
            egg::ENodeOrVar::ENode(n) => n.clone(),
            _ => unreachable!(),
        };
        let perm = |v: Vec<i64>| {
            KNode::op(
                Op::Transpose,
                Attrs::new().with("perm", Attr::Ints(v)),
                vec![Id::from(0)],
            )
        };
        assert!(wild.matches(&perm(vec![1, 0])));
        assert!(wild.matches(&KNode::op(Op::Transpose, Attrs::new(), vec![Id::from(0)])));
        assert!(!wild.matches(&KNode::op(Op::Relu, Attrs::new(), vec![Id::from(0)])));
        assert!(perm(vec![1, 0]).matches(&perm(vec![1, 0])));
        assert!(!perm(vec![1, 0]).matches(&perm(vec![0, 1])));
        assert_eq!(wild.discriminant(), perm(vec![0, 1]).discriminant());
    }

    #[test]
    fn floats_compare_bitwise() {
        let a = AttrKey::new(Attrs::new().with("alpha", Attr::Float(0.0)));
        let b = AttrKey::new(Attrs::new().with("alpha", Attr::Float(-0.0)));
        let c = AttrKey::new(Attrs::new().with("alpha", Attr::Float(0.0)));
        assert_ne!(a, b);
        assert_eq!(a, c);
    }
}
