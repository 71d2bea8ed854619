//! The `.kir` printer and parser round-trip: on random graphs (valid or not,
//! every dtype, special floats, odd names, every attribute kind), on the
//! example files in `tests/filetests/`, and the parser never panics on garbage.

use kiln_ir::text::{check_round_trip, parse, print, ConstMode, PrintOptions};
use kiln_ir::verify::{verify, verify_types};
use kiln_ir::{
    Attr, Attrs, DType, Dim, Error, Graph, Node, Op, Shape, Tensor, TensorType, ValueId, ValueInfo,
};
use proptest::prelude::*;
use proptest::sample::select;

// ---- bitwise graph equality (PartialEq says NaN != NaN) ----

fn attr_bit_eq(a: &Attr, b: &Attr) -> bool {
    match (a, b) {
        (Attr::Float(x), Attr::Float(y)) => x.to_bits() == y.to_bits(),
        (Attr::Floats(x), Attr::Floats(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits())
        }
        (Attr::Tensor(x), Attr::Tensor(y)) => x.bit_eq(y),
        _ => a == b,
    }
}

fn node_bit_eq(a: &Node, b: &Node) -> bool {
    a.op == b.op
        && a.inputs == b.inputs
        && a.outputs == b.outputs
        && a.name == b.name
        && a.attrs.0.len() == b.attrs.0.len()
        && a.attrs
            .iter()
            .zip(b.attrs.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && attr_bit_eq(va, vb))
}

fn graph_bit_eq(a: &Graph, b: &Graph) -> bool {
    a.name == b.name
        && a.values == b.values
        && a.inputs == b.inputs
        && a.outputs == b.outputs
        && a.nodes.len() == b.nodes.len()
        && a.nodes.iter().zip(&b.nodes).all(|(x, y)| node_bit_eq(x, y))
        && a.consts.len() == b.consts.len()
        && a.consts
            .iter()
            .zip(&b.consts)
            .all(|((ka, ta), (kb, tb))| ka == kb && ta.bit_eq(tb))
}

// ---- random graphs ----

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z_?][a-zA-Z0-9_?]{0,6}",
        2 => any::<String>(),
        1 => "[ \"\\\\\n\t/.:@%;#<>\\[\\]{}é😀\u{7}\u{0}-]{0,6}",
        1 => Just(String::new()),
    ]
}

fn arb_dtype() -> impl Strategy<Value = DType> {
    select(DType::ALL.to_vec())
}

fn arb_type() -> impl Strategy<Value = TensorType> {
    let dim =
        prop_oneof![3 => (0usize..6).prop_map(Dim::Fixed), 1 => arb_name().prop_map(Dim::Sym)];
    (arb_dtype(), prop::collection::vec(dim, 0..4)).prop_map(|(dtype, d)| TensorType {
        dtype,
        shape: Shape(d),
    })
}

/// splitmix64: cheap deterministic bits from a proptest seed.
fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A tensor of random elements: raw random bits, with special floats
/// (±0, ±inf, NaNs with any payload, subnormals) mixed in.
fn random_tensor(dtype: DType, shape: Vec<usize>, mut seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let size = dtype.size_bytes();
    let mut bytes = Vec::with_capacity(n * size);
    for _ in 0..n {
        let r = next(&mut seed);
        let bits: u64 = match (dtype, r % 8) {
            (DType::Bool, _) => r >> 7 & 1,
            (DType::F32, 0) => [
                0x8000_0000,
                0x7f80_0000,
                0xff80_0000,
                0x7fc0_0000,
                0xffc0_0000,
                1,
                0x7f80_0001,
            ][(r >> 8) as usize % 7],
            (DType::F64, 0) => [
                1 << 63,
                0x7ff0 << 48,
                0xfff0 << 48,
                0x7ff8 << 48,
                0xfff8 << 48,
                1,
                (0x7ff0 << 48) | 5,
            ][(r >> 8) as usize % 7],
            (DType::F16, 0) => {
                [0x8000, 0x7c00, 0xfc00, 0x7e00, 0xfe00, 1, 0x7c01][(r >> 8) as usize % 7]
            }
            (DType::BF16, 0) => {
                [0x8000, 0x7f80, 0xff80, 0x7fc0, 0xffc0, 1, 0x7f81][(r >> 8) as usize % 7]
            }
            _ => next(&mut seed),
        };
        bytes.extend_from_slice(&bits.to_le_bytes()[..size]);
    }
    Tensor::from_le_bytes(dtype, shape, &bytes).unwrap()
}

fn arb_tensor(allow_big: bool) -> impl Strategy<Value = Tensor> {
    let small = prop::collection::vec(0usize..4, 0..3).boxed();
    let shape = if allow_big {
        prop_oneof![9 => small, 1 => (1025usize..1100).prop_map(|n| vec![n])].boxed()
    } else {
        small
    };
    (arb_dtype(), shape, any::<u64>()).prop_map(|(d, s, seed)| random_tensor(d, s, seed))
}

fn arb_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<u32>().prop_map(f32::from_bits),
        select(vec![
            0.0f32,
            -0.0,
            1.0,
            0.1,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::MIN_POSITIVE,
            f32::MAX
        ]),
    ]
}

fn arb_attr() -> impl Strategy<Value = Attr> {
    prop_oneof![
        any::<i64>().prop_map(Attr::Int),
        arb_f32().prop_map(Attr::Float),
        arb_name().prop_map(Attr::Str),
        arb_tensor(false).prop_map(Attr::Tensor),
        prop::collection::vec(any::<i64>(), 0..4).prop_map(Attr::Ints),
        prop::collection::vec(arb_f32(), 0..4).prop_map(Attr::Floats),
        prop::collection::vec(arb_name(), 0..3).prop_map(Attr::Strs),
    ]
}

fn arb_attrs() -> impl Strategy<Value = Attrs> {
    prop::collection::btree_map(arb_name(), arb_attr(), 0..4).prop_map(Attrs)
}

/// Random graphs whose values are each defined exactly once with ids 0..N in
/// a random order; everything else (operands, types, arity) is arbitrary.
fn arb_graph() -> impl Strategy<Value = Graph> {
    (0usize..4, 0usize..4, prop::collection::vec(0usize..3, 0..5)).prop_flat_map(
        |(n_in, n_const, outs)| {
            let n = n_in + n_const + outs.iter().sum::<usize>();
            let node = (
                select(Op::ALL.to_vec()),
                arb_attrs(),
                prop::collection::vec(any::<Option<u32>>(), 0..4),
                arb_name(),
            );
            (
                arb_name(),
                prop::collection::vec((prop::option::of(arb_name()), arb_type()), n),
                Just((0..n as u32).collect::<Vec<u32>>()).prop_shuffle(),
                prop::collection::vec((arb_tensor(true), any::<bool>()), n_const),
                prop::collection::vec(node, outs.len()),
                prop::collection::vec(any::<u32>(), 0..4),
                Just((n_in, outs)),
            )
                .prop_map(
                    move |(name, infos, ids, consts, nodes, gouts, (n_in, outs))| {
                        let mut g = Graph::new(name);
                        g.values = infos
                            .into_iter()
                            .map(|(name, ty)| ValueInfo { name, ty })
                            .collect();
                        let mut ids = ids.into_iter().map(ValueId);
                        g.inputs = ids.by_ref().take(n_in).collect();
                        for (t, same_type) in consts {
                            let Some(v) = ids.next() else { break };
                            if same_type {
                                g.values[v.index()].ty = t.ty();
                            }
                            g.consts.insert(v, t);
                        }
                        let pick = |x: u32| ValueId(x % (n as u32).max(1));
                        for ((op, attrs, inputs, name), k) in nodes.into_iter().zip(outs) {
                            let inputs = inputs
                                .into_iter()
                                .map(|i| i.filter(|_| n > 0).map(pick))
                                .collect();
                            let outputs = ids.by_ref().take(k).collect();
                            g.nodes.push(Node {
                                op,
                                attrs,
                                inputs,
                                outputs,
                                name,
                            });
                        }
                        g.outputs = if n == 0 {
                            Vec::new()
                        } else {
                            gouts.into_iter().map(pick).collect()
                        };
                        g
                    },
                )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn full_printing_round_trips(g in arb_graph()) {
        let text = print(&g, &PrintOptions::lossless());
        let back = match parse(&text, "rt.kir") {
            Ok(b) => b,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{text}"))),
        };
        prop_assert!(graph_bit_eq(&g, &back), "graphs differ:\n{:?}\n{:?}\n{}", g, back, text);
        prop_assert_eq!(print(&back, &PrintOptions::lossless()), text);
        prop_assert!(check_round_trip(&g).is_ok());
    }

    #[test]
    fn elided_printing_parses_back_or_says_why(g in arb_graph(), max_elems in 0usize..6) {
        let opts = PrintOptions { large_consts: ConstMode::Elide { max_elems } };
        let text = print(&g, &opts);
        match parse(&text, "d.kir") {
            Ok(back) => {
                prop_assert!(!text.contains("elided<"));
                prop_assert!(graph_bit_eq(&g, &back));
            }
            Err(e) => {
                prop_assert!(text.contains("elided<"), "{}\n{}", e, text);
                prop_assert!(e.to_string().contains("--full-constants"), "{}", e);
            }
        }
    }

    #[test]
    fn parser_never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&String::from_utf8_lossy(&bytes), "junk");
    }

    #[test]
    fn parser_never_panics_on_token_soup(words in prop::collection::vec(select(vec![
        "graph", "@g", "{", "}", "in", "const", "out", "%0", "%1", "%7", ":", "f32", "i8", "bool", "[", "]",
        "(", ")", ",", "=", "Add", "Split", "_", "@\"p\"", "\"n\"", "1", "-2", "1.5", "nan", "-", "inf",
        "nan:0x7fc00001", "tensor", "<", ">", "hex\"00ff\"", "ints", "floats", "strs", "elided<x>", "true",
        "n", "0x10", "1e400", "99999999999999999999999",
    ]), 0..40)) {
        let src = words.join(" ");
        let _ = parse(&src, "soup");
        let _ = parse(&format!("graph @g {{ {src} }}"), "soup");
    }

    #[test]
    fn truncated_and_mutated_texts_never_panic(g in arb_graph(), cut in any::<prop::sample::Index>(), c in any::<char>()) {
        let text = print(&g, &PrintOptions::lossless());
        let chars: Vec<char> = text.chars().collect();
        let i = cut.index(chars.len());
        let truncated: String = chars[..i].iter().collect();
        if let Ok(back) = parse(&truncated, "cut") {
            // Only the trailing newline may be cut.
            prop_assert!(graph_bit_eq(&g, &back));
        }
        let mut mutated = chars.clone();
        mutated[i] = c;
        let _ = parse(&mutated.into_iter().collect::<String>(), "mut");
    }
}

proptest! {
    /// The verifier reports, never panics, on any graph, even with ids out of range.
    #[test]
    fn verifier_never_panics(mut g in arb_graph(), bad in any::<u32>(), which in 0usize..3) {
        let n = g.values.len() as u32;
        match which {
            0 => g.outputs.push(ValueId(n.saturating_add(bad % 3))),
            1 => g.inputs.push(ValueId(n + bad % 3)),
            _ => {
                if let Some(node) = g.nodes.first_mut() {
                    node.inputs.push(Some(ValueId(bad)));
                    node.outputs.push(ValueId(bad));
                }
            }
        }
        let _ = verify(&g);
        let _ = print(&g, &PrintOptions::lossless());
    }
}

// ---- hand-checked cases ----

fn sample_graph() -> Graph {
    let mut g = Graph::new("sample");
    let x = g.add_input(
        "x",
        TensorType {
            dtype: DType::F32,
            shape: Shape(vec![Dim::Sym("batch".into()), Dim::Fixed(4)]),
        },
    );
    let w = g.add_const(
        Some("w".into()),
        Tensor::from_vec(vec![2, 2], vec![1.0f32, -0.5, f32::NAN, -0.0]).unwrap(),
    );
    let big = g.add_const(
        None,
        Tensor::from_vec(vec![20], (0..20).map(|i| i as i64).collect()).unwrap(),
    );
    let attrs = Attrs::new()
        .with("axis", Attr::Int(-1))
        .with("split", Attr::Ints(vec![]))
        .with("value", Attr::Tensor(Tensor::scalar(0.5f32)))
        .with("my attr", Attr::Strs(vec!["a\"b".into()]));
    let outs = g.add_node(
        "/layer.0/Split",
        Op::Split,
        attrs,
        vec![Some(x), None],
        vec![
            (Some("y".into()), TensorType::new(DType::F32, vec![2])),
            (None, TensorType::new(DType::F16, vec![])),
        ],
    );
    g.outputs = vec![outs[0], w, big];
    g
}

#[test]
fn printed_form_is_as_documented() {
    let want = r#"graph @sample {
  in %0 "x": f32[batch,4]
  const %1 "w": f32[2,2] = [1.0, -0.5, nan, -0.0]
  const %2: i64[20] = elided<160 bytes, fnv64=0x"#;
    let text = sample_graph().to_string();
    assert!(text.starts_with(want), "{text}");
    assert!(text.contains(", min=0.0, max=19.0>\n"), "{text}");
    assert!(text.ends_with(
        r#"  %3 "y": f32[2], %4: f16[] = Split[axis=-1, "my attr"=["a\"b"], split=ints[], value=tensor<f32[]> 0.5](%0, _) @"/layer.0/Split"
  out %3, %1, %2
}
"#
    ), "{text}");
    let full = format!("{:#}", sample_graph());
    assert!(full.contains("const %2: i64[20] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]"), "{full}");
    assert!(graph_bit_eq(
        &parse(&full, "s.kir").unwrap(),
        &sample_graph()
    ));
}

#[test]
fn large_constants_print_as_hex() {
    let mut g = Graph::new("big");
    let v: Vec<f32> = (0..2000).map(|i| i as f32 * 0.25).collect();
    let c = g.add_const(None, Tensor::from_vec(vec![2, 1000], v).unwrap());
    g.outputs = vec![c];
    let text = print(&g, &PrintOptions::lossless());
    assert!(
        text.contains("const %0: f32[2,1000] = hex\"000000000000803e"),
        "{}",
        &text[..100]
    );
    assert!(graph_bit_eq(&parse(&text, "big.kir").unwrap(), &g));
}

#[test]
fn elided_constants_explain_how_to_get_them() {
    let text = sample_graph().to_string();
    let e = parse(&text, "dump.kir").unwrap_err();
    let Error::Parse {
        file,
        line,
        col,
        msg,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((file.as_str(), *line, *col), ("dump.kir", 4, 23));
    assert!(
        msg.starts_with("constant %2 was elided by the printer"),
        "{msg}"
    );
    assert!(msg.contains("kiln dump --full-constants"), "{msg}");
}

#[test]
fn printed_broken_graphs_still_print() {
    let mut g = sample_graph();
    g.add_value(Some("ghost".into()), TensorType::new(DType::I32, vec![1]));
    g.nodes[0].inputs.push(Some(ValueId(77)));
    let text = g.to_string();
    assert!(
        text.contains("; error: %5 \"ghost\": i32[1] is never defined"),
        "{text}"
    );
    assert!(text.contains("(%0, _, %77)"), "{text}");
    assert!(parse(&text, "x").is_err());
}

/// Every example in tests/filetests parses, verifies (types included), and round-trips.
#[test]
fn filetests_parse_verify_and_round_trip() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("kir") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let file = path.display().to_string();
        let g = parse(&src, &file).unwrap_or_else(|e| panic!("{e}"));
        verify(&g).unwrap_or_else(|e| panic!("{file}: {e}"));
        verify_types(&g).unwrap_or_else(|e| panic!("{file}: {e}"));
        check_round_trip(&g).unwrap_or_else(|e| panic!("{file}: {e}"));
        n += 1;
    }
    assert!(n > 0, "no .kir files in {}", dir.display());
}
