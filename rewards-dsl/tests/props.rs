//! Property tests: the formatter preserves the tree and is idempotent, and
//! parsing, checking and formatting never panic, whatever the input.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use proptest::prelude::*;
use rewards_dsl::check::diagnose;
use rewards_dsl::{fmt, parse};

/// The tree's debug dump without spans (`@start..end`).
fn shape(source: &str) -> String {
    let (program, diags) = parse(source);
    assert!(diags.is_empty(), "{diags:#?}\n{source}");
    let dump = format!("{:?}", program.items);
    let mut out = String::with_capacity(dump.len());
    let mut chars = dump.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '@' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_digit() || *c == '.')
            {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Formatting keeps the tree, and formatting twice changes nothing.
fn assert_fmt_roundtrip(source: &str) {
    let formatted = fmt(source).unwrap();
    assert_eq!(
        shape(source),
        shape(&formatted),
        "tree changed:\n{source}\n---\n{formatted}"
    );
    assert_eq!(
        fmt(&formatted).unwrap(),
        formatted,
        "not idempotent:\n{source}"
    );
}

// ---- a generator of syntactically valid programs

fn sep() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => Just(" "),
        1 => Just("  "),
        1 => Just("\n    "),
        1 => Just(" # note\n  "),
    ]
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..100_000_000).prop_map(|n| n.to_string()),
        (0u32..100_000, 0u32..100).prop_map(|(a, b)| format!("{a}.{b:02}")),
        (0u32..10_000).prop_map(|a| format!("{a}.50 USD")),
        prop::sample::select(vec![
            "gold",
            "dining",
            "purchase",
            "sat",
            "online",
            "airline_spend",
            "true",
            "false",
            "tx.amount",
            "tx.mcc",
            "member.tier",
            "tx.attributes.segment",
            "item.amount",
            "\"text\"",
            "\"esc \\\" \\\\ \\n\"",
            "2026-12-01",
            "2026-12-05T12:00",
            "2026-12-05T12:00:30Z",
            "2026-12-05T12:00+05:30",
            "90 days",
            "1 month",
            "spend(calendar year)",
            "count(rolling 30 days)",
            "count(week)",
        ])
        .prop_map(str::to_string),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    leaf().prop_recursive(4, 24, 3, |inner| {
        let op = prop::sample::select(vec![
            "+", "-", "*", "/", "==", "!=", "<", "<=", ">", ">=", "and", "or", "in", "not in",
        ]);
        prop_oneof![
            (inner.clone(), sep(), op, sep(), inner.clone())
                .prop_map(|(a, s1, o, s2, b)| format!("{a}{s1}{o}{s2}{b}")),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.clone().prop_map(|a| format!("not {a}")),
            inner.clone().prop_map(|a| format!("-{a}")),
            inner.clone().prop_map(|a| format!("floor({a})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("max({a}, {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("[{a}, {b}, 1..9]")),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| format!("sum(tx.line_items where {a}, {b})")),
        ]
    })
}

fn rule() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["rule", "campaign"]),
        0u32..1000,
        proptest::option::of(expr()),
        expr(),
        proptest::option::of(0u32..99_999),
        sep(),
    )
        .prop_map(|(kw, n, when, earn, prio, s)| {
            let mut text = format!("{kw} r{n} \"rule {n}\"");
            if kw == "campaign" {
                text.push_str(" from 2026-01-01 to 2026-02-01T10:00");
            }
            if let Some(p) = prio {
                text.push_str(&format!("{s}priority {p} tags [a, b] exclusive group g"));
            }
            text.push_str(" {\n");
            if let Some(w) = when {
                text.push_str(&format!("  when {w}\n"));
            }
            text.push_str(&format!(
                "  earn{s}{earn}{s}points\n  cap 10 points per member per rolling 7 days\n}}\n"
            ));
            text
        })
}

fn item() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => rule(),
        1 => expr().prop_map(|e| format!("tier t qualify {e} grace 90 days\n")),
        1 => expr().prop_map(|e| format!("aggregate a = spend where {e} per calendar quarter\n")),
        1 => Just("category c = mcc in [5812, 3000..3299]\n".to_string()),
        1 => expr().prop_map(|e| format!(
            "test \"t\" {{\n  member {{ tier: gold, attributes: {{ a: 1 }} }}\n  tx {{ amount: 1 USD, line_items: [{{ sku: \"x\" }}] }}\n  expect points == {e}\n}}\n"
        )),
        1 => Just("points expire at end of quarter + 3 months\n# a comment\n\n".to_string()),
    ]
}

fn program() -> impl Strategy<Value = String> {
    prop::collection::vec(item(), 1..6).prop_map(|items| {
        let mut s = String::from("ruleset \"p\" version 1\ncurrency USD\n");
        for i in items {
            s.push_str(&i);
        }
        s
    })
}

const EXAMPLES: [&str; 3] = [
    include_str!("../../examples/rules/cashback.rwd"),
    include_str!("../../examples/rules/airline.rwd"),
    include_str!("../../examples/rules/coffee.rwd"),
];

/// An example with a few random edits (deletions, insertions, swaps).
fn mutated_example() -> impl Strategy<Value = String> {
    let edit = (
        0usize..100_000,
        0usize..40,
        prop::sample::select(vec![
            "",
            "{",
            "}",
            "(",
            ")",
            "[",
            "]",
            "\"",
            "#",
            "\n",
            " and ",
            " + ",
            "USD",
            "..",
            ",",
            "rule x {",
            "when",
            "earn",
            "points",
            "tier",
            ":",
            "é",
            "\u{0}",
            "99999999999999999999",
        ]),
    );
    (0usize..3, prop::collection::vec(edit, 1..6)).prop_map(|(which, edits)| {
        let mut s = EXAMPLES[which].to_string();
        for (at, len, insert) in edits {
            let mut start = at % (s.len() + 1);
            while !s.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.replace_range(start..end, insert);
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn fmt_keeps_the_tree_of_generated_programs(source in program()) {
        assert_fmt_roundtrip(&source);
    }

    #[test]
    fn nothing_panics_on_mutated_examples(source in mutated_example()) {
        let _ = diagnose(&source);
        if fmt(&source).is_ok() {
            assert_fmt_roundtrip(&source);
        }
    }

    #[test]
    fn nothing_panics_on_arbitrary_text(source in any::<String>()) {
        let _ = diagnose(&source);
        let _ = fmt(&source);
    }

    #[test]
    fn nothing_panics_on_token_soup(source in "(rule|tier|when|earn|points|tx\\.amount|[(){}\\[\\]]|\"[a-z]*\"|#[a-z ]*\n|[0-9_.]{1,8}|USD|[ \n]|and|not|in|-|\\+|==|,|:){0,80}") {
        let _ = diagnose(&source);
        if fmt(&source).is_ok() {
            assert_fmt_roundtrip(&source);
        }
    }
}

#[test]
fn the_examples_round_trip() {
    for example in EXAMPLES {
        assert_fmt_roundtrip(example);
    }
}
