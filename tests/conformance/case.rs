//! One node-test case: its metadata, its data, and running it on an [`Engine`].
//!
//! On the interpreter, a case passes when the model imports, survives the text
//! IR round trip (`print → parse → print` gives the same text, and the
//! reparsed graph computes bit-identical outputs), the interpreter's outputs
//! match the expected ones (see [`super::compare`]) for every data set, and
//! so do the outputs of the graph after the classic passes and the e-graph
//! optimizer (so the optimizer runs on every case). On Cranelift, a case
//! passes when the model compiles (optimized, lowered, JIT-compiled) and its
//! native outputs match the expected ones. Errors that say
//! "unsupported" (an op, dtype or attribute kiln does not have) make the case
//! unsupported; any other error, a mismatch or a panic makes it fail.

use super::compare;
use kiln_ir::{Graph, Tensor};
use std::path::{Path, PathBuf};

/// What `case.txt` (written by scripts/gen-node-tests.py) says about a case.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    /// The op under test (`Op`, or `domain:Op` outside the default domain).
    pub op: String,
    /// A function-body expansion of `op`.
    pub expanded: bool,
    /// The op types of the model's nodes.
    pub nodes: Vec<String>,
    pub rtol: f64,
    pub atol: f64,
    /// Non-tensor inputs and outputs (`input 0 sequence`), if any.
    pub nontensor: String,
}

impl Meta {
    pub fn read(dir: &Path) -> Result<Meta, String> {
        let path = dir.join("case.txt");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut m = Meta {
            rtol: 1e-3,
            atol: 1e-7,
            ..Meta::default()
        };
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            let num = |v: &str| {
                v.parse::<f64>()
                    .map_err(|e| format!("{}: `{k}: {v}`: {e}", path.display()))
            };
            match k.trim() {
                "op" => m.op = v.to_string(),
                "expanded" => m.expanded = v == "true",
                "nodes" => m.nodes = v.split_whitespace().map(str::to_string).collect(),
                "rtol" => m.rtol = num(v)?,
                "atol" => m.atol = num(v)?,
                "nontensor" => m.nontensor = v.to_string(),
                _ => {}
            }
        }
        if m.op.is_empty() {
            return Err(format!("{}: no `op:` line", path.display()));
        }
        Ok(m)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Pass,
    Fail,
    Unsupported,
}

/// The result of one case.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub name: String,
    pub meta: Meta,
    pub status: Status,
    /// Why it did not pass (empty when it passed).
    pub reason: String,
    pub secs: f64,
}

/// Why a case did not pass.
type Verdict = Result<(), (Status, String)>;

/// A test data file's tensor, with the name it carries.
type Named = (Option<String>, Tensor);

fn fail(msg: impl Into<String>) -> (Status, String) {
    (Status::Fail, msg.into())
}

/// Does this error (or one it wraps) say that something is unsupported?
///
/// `kiln_ir::Error::Unsupported` anywhere in the chain, the importer's
/// `UnsupportedOp`, or an importer message that says "unsupported" or "not
/// supported" (dtypes such as float8, segmented tensors, old opsets).
pub fn is_unsupported(e: &(dyn std::error::Error + 'static)) -> bool {
    use kiln_frontend::FrontendError as F;
    let says = |msg: &str| {
        let m = msg.to_ascii_lowercase();
        m.contains("unsupported") || m.contains("not supported")
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        // A boxed source (`source: Box<kiln_ir::Error>`) shows up as the Box.
        let ir = err.downcast_ref::<kiln_ir::Error>().or_else(|| {
            err.downcast_ref::<Box<kiln_ir::Error>>()
                .map(|b| b.as_ref())
        });
        if let Some(ir) = ir {
            match ir {
                kiln_ir::Error::Unsupported(_) => return true,
                kiln_ir::Error::Node { source, .. } => return is_unsupported(source.as_ref()),
                _ => {}
            }
        }
        if let Some(fe) = err.downcast_ref::<F>() {
            match fe {
                F::UnsupportedOp { .. } => return true,
                F::Model { msg, .. }
                | F::Node { msg, .. }
                | F::Tensor { msg, .. }
                | F::Value { msg, .. }
                    if says(msg) =>
                {
                    return true
                }
                _ => {}
            }
        }
        cur = err.source();
    }
    false
}

/// Classifies an error of `stage` (`import`, `interp`, ...).
fn classify(stage: &str, e: &(dyn std::error::Error + 'static)) -> (Status, String) {
    let status = if is_unsupported(e) {
        Status::Unsupported
    } else {
        Status::Fail
    };
    (status, format!("{stage}: {e}"))
}

/// What executes the case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The reference interpreter, on the imported graph and on the optimized one.
    Interp,
    /// The Cranelift backend through `kiln::Compiler` (optimizer on).
    Cranelift,
}

/// Runs the case in `dir`.
pub fn run(dir: &Path, meta: &Meta, engine: Engine) -> Verdict {
    let graph = match kiln_frontend::import_file(&dir.join("model.onnx")) {
        Ok(g) => g,
        Err(e) => {
            let (status, reason) = classify("import", &e);
            // kiln has no sequence or optional values: such a case is unsupported
            // whatever the importer's message.
            if !meta.nontensor.is_empty() {
                return Err((Status::Unsupported, reason));
            }
            return Err((status, reason));
        }
    };
    if !meta.nontensor.is_empty() {
        return Err((
            Status::Unsupported,
            format!("non-tensor values: {}", meta.nontensor),
        ));
    }
    let sets = data_sets(dir).map_err(fail)?;
    if sets.is_empty() {
        return Err(fail(format!("no test_data_set_* in {}", dir.display())));
    }
    if engine == Engine::Cranelift {
        return run_cranelift(&graph, &sets, meta);
    }
    let reparsed = text_round_trip(&graph)?;
    let optimized = optimize(&graph)?;
    for set in &sets {
        let set_name = set
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        run_data_set(&graph, reparsed.as_ref(), &optimized, set, meta).map_err(|(s, r)| {
            if sets.len() > 1 {
                (s, format!("{set_name}: {r}"))
            } else {
                (s, r)
            }
        })?;
    }
    Ok(())
}

/// `print → parse → print` (lossless printing) must give the same text;
/// returns the reparsed graph, which must then compute the same outputs.
fn text_round_trip(graph: &Graph) -> Result<Option<Graph>, (Status, String)> {
    use kiln_ir::text::{parse, print, PrintOptions};
    let first = print(graph, &PrintOptions::lossless());
    let g2 =
        parse(&first, "<round trip>").map_err(|e| fail(format!("text round trip: parse: {e}")))?;
    let second = print(&g2, &PrintOptions::lossless());
    if first != second {
        return Err(fail(format!(
            "text round trip: {}",
            first_difference(&first, &second)
        )));
    }
    Ok(Some(g2))
}

/// The first line where two texts differ, for a message.
fn first_difference(a: &str, b: &str) -> String {
    let (mut la, mut lb) = (a.lines(), b.lines());
    let mut n = 1;
    loop {
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => n += 1,
            (x, y) => {
                return format!(
                    "line {n} printed as `{}`, reprinted as `{}`",
                    x.unwrap_or("<end>"),
                    y.unwrap_or("<end>")
                )
            }
        }
    }
}

/// The case's `test_data_set_*` folders, in order.
fn data_sets(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    Ok(sets)
}

/// `prefix_0.pb, prefix_1.pb, ...` in `set`, read until the first missing index.
fn read_tensors(set: &Path, prefix: &str) -> Result<Vec<Named>, (Status, String)> {
    let mut out = Vec::new();
    loop {
        let path = set.join(format!("{prefix}_{}.pb", out.len()));
        if !path.is_file() {
            return Ok(out);
        }
        let t = kiln_frontend::read_tensor_pb(&path)
            .map_err(|e| classify(&format!("reading {prefix}_{}.pb", out.len()), &e))?;
        out.push(t);
    }
}

/// Puts the test inputs in graph-input order: by name when every graph input
/// has a same-named test input, else positionally (ONNX numbers them in
/// graph-input order).
fn order_inputs(graph: &Graph, given: Vec<Named>) -> Vec<Tensor> {
    let by_name: Option<Vec<usize>> = graph
        .inputs
        .iter()
        .map(|&v| {
            let name = graph.value(v).name.as_deref()?;
            given.iter().position(|(n, _)| n.as_deref() == Some(name))
        })
        .collect();
    match by_name {
        Some(idx) if given.len() == graph.inputs.len() => {
            idx.into_iter().map(|i| given[i].1.clone()).collect()
        }
        _ => given.into_iter().map(|(_, t)| t).collect(),
    }
}

/// The graph after the classic passes and the e-graph optimizer (target: the
/// Cranelift tier, default budgets).
fn optimize(graph: &Graph) -> Result<Graph, (Status, String)> {
    let mut g = graph.clone();
    kiln_passes::simplify(&mut g).map_err(|e| classify("simplify", &e))?;
    let opts = kiln_passes::egraph::OptimizeOptions::new(kiln_ir::TargetInfo::cranelift());
    let (mut g, _) = kiln_passes::egraph::optimize(&g, &opts).map_err(|e| classify("optimize", &e))?;
    kiln_passes::simplify(&mut g).map_err(|e| classify("simplify after optimize", &e))?;
    Ok(g)
}

/// Compiles once per data set's input shapes (the compiler specialises per
/// shape anyway) and compares.
fn run_cranelift(graph: &Graph, sets: &[PathBuf], meta: &Meta) -> Verdict {
    let model = kiln::Compiler::new()
        .threads(1)
        .compile(graph.clone())
        .map_err(|e| classify("compile", &e))?;
    for set in sets {
        let inputs = order_inputs(graph, read_tensors(set, "input")?);
        let expected = read_tensors(set, "output")?;
        let got = model.run(&inputs).map_err(|e| classify("cranelift", &e))?;
        check_outputs("cranelift", &got, &expected, meta)?;
    }
    Ok(())
}

fn check_outputs(stage: &str, got: &[Tensor], expected: &[Named], meta: &Meta) -> Verdict {
    if got.len() != expected.len() {
        return Err(fail(format!(
            "{stage}: computed {} outputs, the test expects {}",
            got.len(),
            expected.len()
        )));
    }
    for (k, (g, (name, want))) in got.iter().zip(expected).enumerate() {
        compare::compare(g, want, meta.rtol, meta.atol).map_err(|m| {
            let name = name
                .as_deref()
                .map(|n| format!(" `{n}`"))
                .unwrap_or_default();
            fail(format!("{stage}: output {k}{name}: {m}"))
        })?;
    }
    Ok(())
}

fn run_data_set(graph: &Graph, reparsed: Option<&Graph>, optimized: &Graph, set: &Path, meta: &Meta) -> Verdict {
    let inputs = order_inputs(graph, read_tensors(set, "input")?);
    let expected = read_tensors(set, "output")?;
    let got = kiln_ir::interp::run(graph, &inputs).map_err(|e| classify("interp", &e))?;
    check_outputs("interp", &got, &expected, meta)?;
    let got_opt = kiln_ir::interp::run(optimized, &inputs)
        .map_err(|e| fail(format!("optimized graph: {e}")))?;
    check_outputs("optimized graph", &got_opt, &expected, meta)?;
    if let Some(g2) = reparsed {
        let got2 = kiln_ir::interp::run(g2, &inputs)
            .map_err(|e| fail(format!("text round trip: the reparsed graph fails: {e}")))?;
        for (k, (a, b)) in got.iter().zip(&got2).enumerate() {
            if !a.bit_eq(b) {
                return Err(fail(format!(
                    "text round trip: the reparsed graph computes a different output {k}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_is_found_through_node_context() {
        let e = kiln_ir::Error::unsupported("Foo").in_node("n0", kiln_ir::Op::Abs);
        assert!(is_unsupported(&e));
        let e = kiln_ir::Error::invalid("bad shape").in_node("n0", kiln_ir::Op::Abs);
        assert!(!is_unsupported(&e));
    }

    #[test]
    fn unsupported_is_found_inside_the_importers_errors() {
        use kiln_frontend::FrontendError as F;
        let e = F::Inference {
            file: "m.onnx".into(),
            node: "n0".into(),
            op: "ReduceSum".into(),
            source: Box::new(kiln_ir::Error::unsupported("keepdims")),
        };
        assert!(is_unsupported(&e));
        let e = F::Node {
            file: "m.onnx".into(),
            node: "n".into(),
            op: "X".into(),
            msg: "bad".into(),
        };
        assert!(!is_unsupported(&e));
        let e = F::Tensor {
            file: "m".into(),
            tensor: "t".into(),
            msg: "unsupported dtype STRING".into(),
        };
        assert!(is_unsupported(&e));
    }

    #[test]
    fn first_difference_names_the_line() {
        assert_eq!(
            first_difference("a\nb\n", "a\nc\n"),
            "line 2 printed as `b`, reprinted as `c`"
        );
        assert_eq!(
            first_difference("a", "a\nb"),
            "line 2 printed as `<end>`, reprinted as `b`"
        );
    }
}
