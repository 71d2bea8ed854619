//! `docs/rules.md` is generated from the rule tables, so the list users read
//! is the list the optimizer runs. `KILN_BLESS=1 cargo test -p kiln-passes
//! --test rules_doc` rewrites it; otherwise a stale file fails this test.

use kiln_passes::rules::{all_rules, Phase};

fn render() -> String {
    let mut s = String::from(
        "# kiln's rewrite rules\n\n\
         <!-- Generated from passes/src/rules/ by `KILN_BLESS=1 cargo test -p kiln-passes --test rules_doc`; do not edit. -->\n\n\
         The optimizer's rules, phase by phase, as the tables in `passes/src/rules/` define them.\n\
         Each rule's law says what it rewrites and when; every rule has at least one example\n\
         graph on which `rules::tests::sound_on_all_examples` evaluates both sides with the\n\
         reference interpreter on random inputs. See `docs/optimizer.md` for how the phases run.\n",
    );
    for phase in Phase::ALL {
        let rules: Vec<_> = all_rules().into_iter().filter(|(p, _)| *p == phase).collect();
        s.push_str(&format!("\n## {} ({} rules)\n\n| rule | matches | law and side conditions |\n|---|---|---|\n", phase.name(), rules.len()));
        for (_, r) in rules {
            let lhs = r.lhs_text().replace('|', "\\|");
            let law = r.law.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|");
            s.push_str(&format!("| `{}` | `{}` | {} |\n", r.name, lhs, law));
        }
    }
    s
}

#[test]
fn rules_doc_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/rules.md");
    let want = render();
    if std::env::var("KILN_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/rules.md is out of date with passes/src/rules/: run `KILN_BLESS=1 cargo test -p kiln-passes --test rules_doc`"
    );
}
