//! The filetest runner: every `tests/filetests/**/*.kir` file is a test, a
//! `.kir` graph whose leading `;` comment lines say what to do with it and
//! what to expect (the format is in `docs/filetests.md`):
//!
//! ```text
//! ; test pass const_fold cse     (or: parse, parse-fails, verify, verify-fails, run, simplify)
//! ; check: = Reshape(%0, %9)      (in order, each a substring of one printed line)
//! ; not: Shape(                   (nowhere in the printed output)
//! ; error: is defined later       (for *-fails: a substring of the error)
//! ; run: f32[2] [1.0, -2.0] -> f32[2] [1.0, 0.0]   (on the interpreter, before and after passes)
//! ```
//!
//! Every file runs; the failures are collected and listed at the end, after
//! `filetests: N passed, M failed`. `KILN_BLESS=1` rewrites the `; check:`
//! lines of the tests that print a graph (parse, simplify, pass) from the
//! actual output; `KILN_FILETEST=<substring>` runs only the matching files.

use kiln_ir::text::{parse, print, PrintOptions};
use kiln_ir::{Graph, Tensor, ValueId};
use std::io::Write;
use std::path::{Path, PathBuf};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/filetests");

/// Relative tolerance for float outputs of `; run:` lines.
const RTOL: f64 = 1e-6;

/// What a filetest does, from its `; test` line.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// Parse, print, parse again: the round trip must be exact.
    Parse,
    /// Parsing must fail with every `; error:` substring.
    ParseFails,
    /// `verify_types` must accept the graph.
    Verify,
    /// It parses, and `verify_types` must reject it with every `; error:` substring.
    VerifyFails,
    /// It verifies, and its `; run:` lines hold.
    Run,
    /// `simplify`, or the named passes in order (`; test pass cse dce`).
    Passes(Vec<String>),
}

impl Kind {
    fn prints_graph(&self) -> bool {
        matches!(self, Kind::Parse | Kind::Passes(_))
    }

    fn fails(&self) -> bool {
        matches!(self, Kind::ParseFails | Kind::VerifyFails)
    }
}

/// A directive's text and its 1-based line number.
type Directive = (usize, String);

/// The parsed header of one filetest.
#[derive(Debug)]
struct Header {
    kind: Kind,
    checks: Vec<Directive>,
    nots: Vec<Directive>,
    errors: Vec<Directive>,
    runs: Vec<Directive>,
    /// 0-based index of the first line after the header (where the graph starts).
    body_start: usize,
}

const DIRECTIVES: [&str; 5] = ["test", "check:", "not:", "error:", "run:"];

/// The directive in a comment line, if it is one: (keyword, rest).
fn directive(line: &str) -> Option<(&'static str, &str)> {
    let c = line.trim_start().strip_prefix(';')?.trim_start();
    DIRECTIVES.iter().find_map(|&d| {
        let rest = c.strip_prefix(d)?;
        // `test` must be followed by a space; `check:` etc. end in ':' already
        (d.ends_with(':') || rest.starts_with(char::is_whitespace)).then(|| (d, rest.trim()))
    })
}

fn parse_header(src: &str) -> Result<Header, String> {
    let lines: Vec<&str> = src.lines().collect();
    let body_start = lines
        .iter()
        .position(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with(';')
        })
        .unwrap_or(lines.len());
    let mut kind = None;
    let mut h = Header {
        kind: Kind::Parse,
        checks: vec![],
        nots: vec![],
        errors: vec![],
        runs: vec![],
        body_start,
    };
    for (i, line) in lines.iter().enumerate() {
        let Some((d, rest)) = directive(line) else {
            continue;
        };
        let n = i + 1;
        if i >= body_start {
            return Err(format!(
                "{n}: `; {d}` after the graph started: directives belong in the leading comment header"
            ));
        }
        let entry = (n, rest.to_string());
        match d {
            "test" => {
                if kind.is_some() {
                    return Err(format!("{n}: a second `; test` line"));
                }
                let words: Vec<&str> = rest.split_whitespace().collect();
                kind = Some(match words.as_slice() {
                    ["parse"] => Kind::Parse,
                    ["parse-fails"] => Kind::ParseFails,
                    ["verify"] => Kind::Verify,
                    ["verify-fails"] => Kind::VerifyFails,
                    ["run"] => Kind::Run,
                    ["simplify"] => Kind::Passes(vec!["simplify".into()]),
                    ["pass", names @ ..] if !names.is_empty() => {
                        for name in names {
                            if pass_by_name(name).is_none() {
                                return Err(format!(
                                    "{n}: unknown pass `{name}` (known: simplify, {})",
                                    pass_names().join(", ")
                                ));
                            }
                        }
                        Kind::Passes(names.iter().map(|s| s.to_string()).collect())
                    }
                    _ => {
                        return Err(format!(
                            "{n}: unknown test `{rest}` (expected parse, parse-fails, verify, \
                             verify-fails, run, simplify, or pass <names...>)"
                        ))
                    }
                });
            }
            "check:" => h.checks.push(entry),
            "not:" => h.nots.push(entry),
            "error:" => h.errors.push(entry),
            "run:" => h.runs.push(entry),
            _ => unreachable!("every directive is matched"),
        }
        if rest.is_empty() {
            return Err(format!("{n}: empty `; {d}` directive"));
        }
    }
    h.kind = kind.ok_or("no `; test <kind>` line in the header")?;
    if h.kind.fails() {
        if h.errors.is_empty() {
            return Err("a *-fails test needs at least one `; error:` line".into());
        }
        if let Some((n, _)) = h.checks.iter().chain(&h.nots).chain(&h.runs).next() {
            return Err(format!("{n}: a *-fails test takes only `; error:` lines"));
        }
    } else if let Some((n, _)) = h.errors.first() {
        return Err(format!(
            "{n}: `; error:` is only for parse-fails and verify-fails tests"
        ));
    }
    if !h.kind.prints_graph() {
        if let Some((n, _)) = h.checks.iter().chain(&h.nots).next() {
            return Err(format!(
                "{n}: `; check:`/`; not:` need a test that prints a graph (parse, simplify, pass)"
            ));
        }
    }
    Ok(h)
}

type Pass = fn(&mut Graph) -> kiln_passes::Result<usize>;

fn pass_names() -> Vec<&'static str> {
    kiln_passes::pipeline::STAGES
        .iter()
        .map(|&(n, _)| n)
        .collect()
}

fn pass_by_name(name: &str) -> Option<Pass> {
    if name == "simplify" {
        return Some(|g| kiln_passes::simplify(g).map(|r| r.stages.iter().map(|s| s.edits).sum()));
    }
    kiln_passes::pipeline::STAGES
        .iter()
        .find(|&&(n, _)| n == name)
        .map(|&(_, p)| p)
}

// ---- `; run:` literals ----

/// Splits at commas outside brackets and strings.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut in_str, mut escaped, mut start) = (0i32, false, false, 0);
    let mut parts = Vec::new();
    for (i, c) in s.char_indices() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '[' | '<' => depth += 1,
            ']' | '>' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Reads `f32[2] [1.0, -2.0], i64[] 3` (types and data in the `.kir`
/// constant syntax) by parsing them as the constants of a tiny graph.
fn parse_tensors(s: &str, what: &str) -> Result<Vec<Tensor>, String> {
    let mut src = String::from("graph @run {\n");
    let parts = split_top_level(s);
    for (i, part) in parts.iter().enumerate() {
        let end = part
            .find(']')
            .ok_or_else(|| format!("{what}: `{part}` is not `dtype[dims] data`"))?;
        let (ty, data) = part.split_at(end + 1);
        if data.trim().is_empty() {
            return Err(format!("{what}: `{part}` has a type but no data"));
        }
        src += &format!("  const %{i}: {ty} = {data}\n");
    }
    src += "}\n";
    let g = parse(&src, what).map_err(|e| format!("{what}: {e}"))?;
    (0..parts.len())
        .map(|i| {
            g.consts
                .get(&ValueId(i as u32))
                .cloned()
                .ok_or_else(|| format!("{what}: literal {i} did not parse"))
        })
        .collect()
}

fn show(t: &Tensor) -> String {
    let vals = if t.dtype().is_float() {
        format!("{:?}", t.to_f64_vec())
    } else {
        t.to_i64_vec()
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|_| format!("{:?}", t.to_f64_vec()))
    };
    format!("{}{:?} {vals}", t.dtype().name(), t.shape())
}

/// Equal dtypes and shapes; floats within [`RTOL`] (NaN equals NaN), the rest exactly.
fn close(actual: &Tensor, expected: &Tensor) -> bool {
    if actual.dtype() != expected.dtype() || actual.shape() != expected.shape() {
        return false;
    }
    if !actual.dtype().is_float() {
        return actual.bit_eq(expected);
    }
    actual
        .to_f64_vec()
        .iter()
        .zip(expected.to_f64_vec())
        .all(|(&a, e)| {
            a == e || (a.is_nan() && e.is_nan()) || (a - e).abs() <= RTOL * a.abs().max(e.abs())
        })
}

/// Checks one `; run:` line on `g`; `stage` says which graph it is.
fn check_run(g: &Graph, (n, line): &Directive, stage: &str) -> Result<(), String> {
    let what = format!("{n}: run");
    let (ins, outs) = line
        .split_once("->")
        .ok_or_else(|| format!("{what}: expected `<inputs> -> <outputs>`"))?;
    let inputs = parse_tensors(ins, &what)?;
    let expected = parse_tensors(outs, &what)?;
    let actual = kiln_ir::interp::run(g, &inputs)
        .map_err(|e| format!("{what} ({stage}): the interpreter failed: {e}"))?;
    if actual.len() != expected.len() {
        return Err(format!(
            "{what} ({stage}): {} outputs, {} expected",
            actual.len(),
            expected.len()
        ));
    }
    for (k, (a, e)) in actual.iter().zip(&expected).enumerate() {
        if !close(a, e) {
            return Err(format!(
                "{what} ({stage}): output {k} differs\n    expected {}\n    actual   {}",
                show(e),
                show(a)
            ));
        }
    }
    Ok(())
}

// ---- `; check:` / `; not:` ----

/// Each check in order, a substring of a later line than the previous match.
fn check_output(text: &str, h: &Header, stage: &str) -> Result<(), String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut next = 0;
    for (n, pat) in &h.checks {
        match lines[next..].iter().position(|l| l.contains(pat.as_str())) {
            Some(k) => next += k + 1,
            None => {
                let mut msg = format!(
                    "{n}: check `{pat}` not found {} in the {stage} graph:\n",
                    if next == 0 {
                        "anywhere".to_string()
                    } else {
                        format!("after output line {next}")
                    }
                );
                for (i, l) in lines.iter().enumerate() {
                    let mark = if i < next { ' ' } else { '>' };
                    msg += &format!("  {mark}{:>3} | {l}\n", i + 1);
                }
                msg += "  (`>`: where it was looked for; if the new output is right, \
                        rerun with KILN_BLESS=1 and review the diff)";
                return Err(msg);
            }
        }
    }
    for (n, pat) in &h.nots {
        if let Some(i) = lines.iter().position(|l| l.contains(pat.as_str())) {
            return Err(format!(
                "{n}: not `{pat}`, but output line {} is `{}`",
                i + 1,
                lines[i].trim()
            ));
        }
    }
    Ok(())
}

/// The file with its `; check:` lines replaced by the printed output's lines
/// (trimmed, without the `file:line` provenance the parser invents, which
/// blessing would change).
fn blessed(src: &str, h: &Header, text: &str, rel: &str) -> String {
    let checks: Vec<String> = text
        .lines()
        .map(|l| {
            let l = l.trim();
            let auto = [format!(" @\"{rel}:"), format!(" @{rel}:")];
            let cut = auto.iter().filter_map(|p| l.find(p.as_str())).min();
            l[..cut.unwrap_or(l.len())].to_string()
        })
        .filter(|l| !l.is_empty())
        .map(|l| format!("; check: {l}"))
        .collect();
    let lines: Vec<&str> = src.lines().collect();
    let at = match h.checks.first() {
        Some(&(n, _)) => n - 1,
        // after the header's last comment line
        None => lines[..h.body_start]
            .iter()
            .rposition(|l| l.trim_start().starts_with(';'))
            .map_or(0, |i| i + 1),
    };
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if i == at {
            out.extend(checks.iter().map(String::as_str));
        }
        if !matches!(directive(l), Some(("check:", _))) || i >= h.body_start {
            out.push(l);
        }
    }
    if at >= lines.len() {
        out.extend(checks.iter().map(String::as_str));
    }
    out.join("\n") + "\n"
}

// ---- one file ----

fn verified(g: &Graph, stage: &str) -> Result<(), String> {
    kiln_ir::verify::verify_types(g).map_err(|e| format!("the {stage} graph does not verify: {e}"))
}

fn expect_error(err: Option<String>, h: &Header, what: &str) -> Result<(), String> {
    let err = err.ok_or_else(|| format!("expected {what} to fail, but it succeeded"))?;
    for (n, pat) in &h.errors {
        if !err.contains(pat.as_str()) {
            return Err(format!(
                "{n}: error `{pat}` not in the {what} error:\n    {err}"
            ));
        }
    }
    Ok(())
}

/// Runs one filetest; `Err` is the explanation (lines prefixed by the file name later).
fn run_file(path: &Path, rel: &str, bless: bool) -> Result<(), String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let h = parse_header(&src)?;
    let parsed = parse(&src, rel);
    if h.kind == Kind::ParseFails {
        return expect_error(parsed.err().map(|e| e.to_string()), &h, "parsing");
    }
    let g = parsed.map_err(|e| format!("does not parse: {e}"))?;
    let opts = PrintOptions::default();
    let printed = match &h.kind {
        Kind::ParseFails => unreachable!("handled above"),
        Kind::VerifyFails => {
            let err = kiln_ir::verify::verify_types(&g)
                .err()
                .map(|e| e.to_string());
            return expect_error(err, &h, "verification");
        }
        Kind::Parse => {
            // Lossless printing is bitwise exact, so equal texts mean equal graphs
            // (comparing graphs with `==` would fail on NaN constants).
            let text = print(&g, &PrintOptions::lossless());
            let back = parse(&text, rel)
                .map_err(|e| format!("the printed graph does not parse back: {e}\n{text}"))?;
            let again = print(&back, &PrintOptions::lossless());
            if again != text {
                return Err(format!(
                    "the round trip is not exact:\n--- printed\n{text}--- reprinted\n{again}"
                ));
            }
            for r in &h.runs {
                check_run(&g, r, "parsed")?;
            }
            Some((print(&g, &opts), "parsed"))
        }
        Kind::Verify | Kind::Run => {
            verified(&g, "input")?;
            if h.kind == Kind::Run && h.runs.is_empty() {
                return Err("a run test needs `; run:` lines".into());
            }
            for r in &h.runs {
                check_run(&g, r, "input")?;
            }
            None
        }
        Kind::Passes(names) => {
            if h.checks.is_empty() && h.runs.is_empty() && !bless {
                return Err(
                    "a pass test needs `; check:` or `; run:` lines (KILN_BLESS=1 writes the checks)"
                        .into(),
                );
            }
            verified(&g, "input")?;
            for r in &h.runs {
                check_run(&g, r, "before the passes")?;
            }
            let mut after = g.clone();
            for name in names {
                let pass = pass_by_name(name).ok_or_else(|| format!("unknown pass `{name}`"))?;
                pass(&mut after).map_err(|e| format!("pass `{name}` failed: {e}"))?;
                verified(&after, &format!("after-{name}"))?;
            }
            for r in &h.runs {
                check_run(&after, r, "after the passes")?;
            }
            Some((print(&after, &opts), "resulting"))
        }
    };
    let Some((text, stage)) = printed else {
        return Ok(());
    };
    if bless && h.kind.prints_graph() && (!h.checks.is_empty() || h.kind != Kind::Parse) {
        let new = blessed(&src, &h, &text, rel);
        if new != src {
            std::fs::write(path, new).map_err(|e| format!("cannot bless: {e}"))?;
        }
        let h = parse_header(&std::fs::read_to_string(path).map_err(|e| e.to_string())?)?;
        return check_output(&text, &h, stage);
    }
    check_output(&text, &h, stage)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "kir") {
            out.push(p);
        }
    }
}

#[test]
fn filetests() {
    let bless = std::env::var_os("KILN_BLESS").is_some_and(|v| v != "0" && !v.is_empty());
    let filter = std::env::var("KILN_FILETEST").unwrap_or_default();
    let mut files = Vec::new();
    collect(Path::new(ROOT), &mut files);
    files.sort();
    assert!(!files.is_empty(), "no filetests under {ROOT}");
    let (mut passed, mut failures) = (0, Vec::new());
    for path in &files {
        let rel = path
            .strip_prefix(ROOT)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        if !rel.contains(&filter) {
            continue;
        }
        match run_file(path, &rel, bless) {
            Ok(()) => passed += 1,
            Err(e) => {
                let sep = if e.starts_with(|c: char| c.is_ascii_digit()) {
                    ":"
                } else {
                    ": "
                };
                failures.push(format!("tests/filetests/{rel}{sep}{e}"))
            }
        }
    }
    let mut err = std::io::stderr();
    for f in &failures {
        let _ = writeln!(err, "FAILED {f}\n");
    }
    let _ = writeln!(
        err,
        "filetests: {passed} passed, {} failed{}",
        failures.len(),
        if bless { " (blessed)" } else { "" }
    );
    assert!(
        failures.is_empty(),
        "{} filetest(s) failed:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| format!("  {}", f.lines().next().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn runner_helpers() {
    assert_eq!(
        split_top_level(r#"f32[2] [1.0, -2.0], u8[2] hex"00,ff", i64[] 3"#),
        vec!["f32[2] [1.0, -2.0]", r#"u8[2] hex"00,ff""#, "i64[] 3"]
    );
    let t = parse_tensors("f32[2] [1.0, nan], i64[] -3", "test").unwrap();
    assert_eq!(
        (t[0].shape(), t[1].to_i64_vec().unwrap()),
        (&[2][..], vec![-3])
    );
    assert!(close(&t[0], &t[0]), "NaN matches NaN");
    let a = Tensor::from_vec(vec![1], vec![1.0f32]).unwrap();
    let b = Tensor::from_vec(vec![1], vec![1.0000005f32]).unwrap();
    let c = Tensor::from_vec(vec![1], vec![1.00001f32]).unwrap();
    assert!(close(&a, &b) && !close(&a, &c));
    assert!(parse_tensors("f32[2]", "test").is_err());
    // blessing replaces the checks in place and drops invented provenance
    let src = "; test simplify\n; check: old\n; run: -> \ngraph @g {\n}\n";
    let h = parse_header(src).unwrap();
    let out = blessed(src, &h, "  %1: f32[] = Neg(%0) @\"a.kir:4\"\n}\n", "a.kir");
    assert_eq!(
        out,
        "; test simplify\n; check: %1: f32[] = Neg(%0)\n; check: }\n; run: -> \ngraph @g {\n}\n"
    );
}
