//! Generated job documents: a tree of mappings, sequences, scalars, anchors and aliases, with
//! strategies that build job-shaped documents and documents of anything.

use proptest::prelude::*;

use crate::text::pad;

/// A document tree; `Scalar` holds a token already written in the target syntax.
#[derive(Clone, Debug)]
pub enum Tree {
    Scalar(String),
    /// Multi-line text: a literal block scalar in block context, a quoted string in flow.
    Literal(String),
    Seq(Vec<Tree>, Style),
    Map(Vec<(Key, Tree)>, Style),
    Anchored(u8, Box<Tree>),
    Alias(u8),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Style {
    Block,
    Flow,
}

/// A mapping key: its text, and whether to write it as an explicit `? key` entry (which has no
/// length limit, unlike an implicit key).
#[derive(Clone, Debug)]
pub struct Key(pub String, pub bool);

impl Tree {
    /// Whether block rendering puts it on the following lines (then an anchor goes first).
    pub fn is_block(&self) -> bool {
        match self {
            Tree::Literal(_) => true,
            Tree::Seq(items, Style::Block) => !items.is_empty(),
            Tree::Map(entries, Style::Block) => !entries.is_empty(),
            _ => false,
        }
    }

    pub fn has_alias(&self) -> bool {
        match self {
            Tree::Alias(_) => true,
            Tree::Scalar(_) | Tree::Literal(_) => false,
            Tree::Anchored(_, t) => t.has_alias(),
            Tree::Seq(items, _) => items.iter().any(Tree::has_alias),
            Tree::Map(entries, _) => entries.iter().any(|(_, v)| v.has_alias()),
        }
    }
}

/// Field names of the job format, so that generated documents reach deep into validation.
const KEYS: &[&str] = &[
    "job_queue",
    "job_id",
    "name",
    "tags",
    "global_timeout",
    "output_timeout",
    "allocation_timeout",
    "job_priority",
    "exclude_agents",
    "job_status_webhook",
    "parent_job_id",
    "provision_data",
    "firmware_update_data",
    "test_data",
    "allocate_data",
    "reserve_data",
    "url",
    "attachments",
    "local",
    "agent",
    "device",
    "use_attachment",
    "test_cmds",
    "secrets",
    "ssh_keys",
    "timeout",
    "phasebox",
    "plugin",
    "grants",
    "files",
    "path",
    "source",
    "access",
    "network",
    "connect",
    "bind",
    "udp",
    "http",
    "dns",
    "env",
    "client_id",
    "attachments_status",
    "started_at",
    "<<",
];

/// Scalar tokens that each exercise a resolution rule, a tag or a field check.
const YAML_SCALARS: &[&str] = &[
    "yes",
    "No",
    "on",
    "~",
    "null",
    "''",
    "0o17",
    "017",
    "09",
    "0x1F",
    "0x_",
    "0b101",
    "-1_000",
    "1:30",
    "190:20:30",
    "1e3",
    "1.0e+3",
    ".inf",
    "-.INF",
    ".nan",
    "2024-01-01",
    "123456789012345678901234567890123456789012345678901234567890",
    "-170141183460469231731687303715884105729",
    "3h",
    "45m",
    "2h30m",
    "1d2h",
    "-5s",
    "99999999999999999999d",
    "0s",
    "example.com:443",
    "10.1.0.0/16:22",
    "\"[2001:db8::1]:443\"",
    "\"dut:*\"",
    "http://x:80",
    "https://example.com:443",
    "/scratch",
    "attachments/test",
    "..",
    "../..",
    "/etc/passwd",
    ".",
    "rw",
    "ro",
    "lp:alice",
    "\"\\x00\\u263a\\U0001F600\\N\\_\"",
    "'it''s'",
    "!!str 5",
    "!!int 0x",
    "!!int 12",
    "!!float abc",
    "!!float 1.5",
    "!!bool maybe",
    "!!null x",
    "!custom x",
    "! 12",
    "!!binary aGk=",
    "!<tag:yaml.org,2002:int> 7",
    "!!timestamp 2001-12-14",
    "\"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"",
    "12345678-1234-5678-1234-567812345678",
    "a@b.c",
];

/// Raw JSON tokens: numbers serde_json and Python disagree on, and the usual values.
const JSON_SCALARS: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-0",
    "0.1",
    "1E2",
    "123456789012345678901234567890",
    "18446744073709551616",
    "-9223372036854775809",
    "\"\"",
    "\"\\u0000\"",
    "\"3h\"",
    "\"..\"",
];
fn plain_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9_./:*@-]{0,15}"
}

fn yaml_scalar() -> impl Strategy<Value = Tree> {
    prop_oneof![
        4 => prop::sample::select(YAML_SCALARS).prop_map(|s| Tree::Scalar(s.to_owned())),
        2 => plain_text().prop_map(Tree::Scalar),
        // JSON string escapes are valid YAML double-quoted escapes.
        2 => any::<String>().prop_map(|s| Tree::Scalar(serde_json::to_string(&s).expect("a string"))),
        1 => prop::collection::vec("[a-z0-9$=/][a-z0-9 $=/:]{0,20}", 1..4).prop_map(|l| Tree::Literal(l.join("\n"))),
    ]
}

fn json_scalar() -> impl Strategy<Value = Tree> {
    prop_oneof![
        4 => prop::sample::select(JSON_SCALARS).prop_map(|s| Tree::Scalar(s.to_owned())),
        2 => any::<i64>().prop_map(|i| Tree::Scalar(i.to_string())),
        2 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| Tree::Scalar(f.to_string())),
        6 => prop::sample::select(YAML_SCALARS)
            .prop_map(|s| Tree::Scalar(serde_json::to_string(s).expect("a string"))),
        4 => any::<String>().prop_map(|s| Tree::Scalar(serde_json::to_string(&s).expect("a string"))),
    ]
}

/// Keys: mostly the format's field names; sometimes long, written as explicit keys past the
/// YAML 1024-character limit on implicit keys.
fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        8 => prop::sample::select(KEYS).prop_map(|k| Key(k.to_owned(), false)),
        2 => "[a-zA-Z_][a-zA-Z0-9_]{0,12}".prop_map(|k| Key(k, false)),
        1 => (1usize..2048, any::<bool>()).prop_map(|(n, explicit)| Key("k".repeat(n), explicit || n > 1000)),
    ]
}

/// A tree over `leaf`: nested sequences and mappings, wide sequences of one leaf, and (for
/// YAML) anchors and aliases. Sizes stay small; `long_paths` makes the large documents.
fn tree(leaf: BoxedStrategy<Tree>, anchors: bool) -> BoxedStrategy<Tree> {
    let style = prop_oneof![Just(Style::Block), Just(Style::Flow)];
    let wide_leaf = leaf.clone();
    leaf.prop_recursive(6, 48, 6, move |inner| {
        let mut branches = vec![
            (3, (prop::collection::vec(inner.clone(), 0..6), style.clone()).prop_map(|(i, s)| Tree::Seq(i, s)).boxed()),
            (
                4,
                (prop::collection::vec((key(), inner.clone()), 0..6), style.clone())
                    .prop_map(|(e, s)| Tree::Map(e, s))
                    .boxed(),
            ),
            (1, (wide_leaf.clone(), 1usize..300).prop_map(|(t, n)| Tree::Seq(vec![t; n], Style::Flow)).boxed()),
        ];
        if anchors {
            branches.push((1, (0u8..4, inner.clone()).prop_map(|(a, t)| Tree::Anchored(a, Box::new(t))).boxed()));
            branches.push((1, (0u8..4).prop_map(Tree::Alias).boxed()));
        }
        proptest::strategy::Union::new_weighted(branches)
    })
    .boxed()
}

/// A mapping of some of `keys` (in order) to values.
fn fields(keys: &'static [&'static str], value: BoxedStrategy<Tree>) -> BoxedStrategy<Tree> {
    let style = prop_oneof![3 => Just(Style::Block), 1 => Just(Style::Flow)];
    (prop::sample::subsequence(keys, 0..=keys.len()), prop::collection::vec(value, keys.len()), style)
        .prop_map(|(chosen, values, style)| {
            Tree::Map(chosen.into_iter().map(|k| Key(k.to_owned(), false)).zip(values).collect(), style)
        })
        .boxed()
}

/// A job in the format's own shape — phase data, `phasebox` blocks, grants — with generated
/// values, so that documents get past the first checks and reach every field's validation.
fn job_shaped(leaf: BoxedStrategy<Tree>) -> BoxedStrategy<Tree> {
    let list = prop::collection::vec(leaf.clone(), 0..3).prop_map(|v| Tree::Seq(v, Style::Flow));
    let value = prop_oneof![6 => leaf.clone(), 2 => list, 1 => tree(leaf.clone(), false)].boxed();
    let file = fields(&["path", "source", "access"], value.clone());
    let grant = prop_oneof![
        4 => value.clone(),
        2 => prop::collection::vec(file, 0..3).prop_map(|f| Tree::Seq(f, Style::Block)),
        2 => fields(&["connect", "bind", "udp"], value.clone()),
        1 => fields(&["KEY", "LOG_LEVEL"], value.clone()),
    ]
    .boxed();
    let grants = fields(&["files", "network", "http", "dns", "env"], grant);
    let block = prop_oneof![4 => value.clone(), 1 => grants].boxed();
    let phasebox = fields(&["plugin", "secrets", "timeout", "output_timeout", "grants"], block);
    let data_value = prop_oneof![4 => value.clone(), 1 => phasebox].boxed();
    let data = fields(
        &[
            "url",
            "attachments",
            "use_attachment",
            "test_cmds",
            "secrets",
            "ssh_keys",
            "timeout",
            "allocate",
            "phasebox",
        ],
        data_value,
    );
    let top_value = prop_oneof![1 => value, 3 => data].boxed();
    fields(
        &[
            "name",
            "global_timeout",
            "output_timeout",
            "job_priority",
            "provision_data",
            "firmware_update_data",
            "test_data",
            "allocate_data",
            "reserve_data",
        ],
        top_value,
    )
}

/// A YAML job document: job-shaped, or a mapping of anything; `job_queue` most of the time.
pub fn yaml_document() -> impl Strategy<Value = Tree> {
    let body = prop::collection::vec((key(), tree(yaml_scalar().boxed(), true)), 0..8)
        .prop_map(|entries| Tree::Map(entries, Style::Block));
    (prop::bool::weighted(0.9), prop_oneof![job_shaped(yaml_scalar().boxed()), body])
        .prop_map(|(queue, doc)| with_queue(doc, queue, "q"))
        .prop_map(|mut doc| {
            to_defined_anchors(&mut doc, &mut Vec::new());
            doc
        })
        // Item 4 of the security review bounds alias expansion by bytes; until then, keep the
        // generator away from alias bombs: at most a few aliases per document.
        .prop_filter("at most 4 aliases", |t| count_aliases(t) <= 4)
}

pub fn json_document() -> impl Strategy<Value = Tree> {
    let body = prop::collection::vec((key(), tree(json_scalar().boxed(), false)), 0..8)
        .prop_map(|entries| Tree::Map(entries, Style::Flow));
    (prop::bool::weighted(0.9), prop_oneof![job_shaped(json_scalar().boxed()), body])
        .prop_map(|(queue, doc)| with_queue(doc, queue, "\"q\""))
}

/// `doc` with a valid `job_queue` first, when `queue` and it has none.
fn with_queue(doc: Tree, queue: bool, value: &str) -> Tree {
    match doc {
        Tree::Map(mut entries, style) if queue && !entries.iter().any(|(k, _)| k.0 == "job_queue") => {
            entries.insert(0, (Key("job_queue".into(), false), Tree::Scalar(value.into())));
            Tree::Map(entries, style)
        }
        other => other,
    }
}

/// Points each alias at an anchor defined before it (in document order), or replaces it with
/// a null when there is none yet: an alias to nothing only tests one error message.
fn to_defined_anchors(t: &mut Tree, defined: &mut Vec<u8>) {
    match t {
        Tree::Alias(_) if defined.is_empty() => *t = Tree::Scalar("~".into()),
        Tree::Alias(a) => *a = defined[usize::from(*a) % defined.len()],
        Tree::Scalar(_) | Tree::Literal(_) => {}
        Tree::Anchored(a, inner) => {
            to_defined_anchors(inner, defined);
            defined.push(*a);
        }
        Tree::Seq(items, _) => items.iter_mut().for_each(|i| to_defined_anchors(i, defined)),
        Tree::Map(entries, _) => entries.iter_mut().for_each(|(_, v)| to_defined_anchors(v, defined)),
    }
}

fn count_aliases(t: &Tree) -> usize {
    match t {
        Tree::Alias(_) => 1,
        Tree::Scalar(_) | Tree::Literal(_) => 0,
        Tree::Anchored(_, t) => count_aliases(t),
        Tree::Seq(items, _) => items.iter().map(count_aliases).sum(),
        Tree::Map(entries, _) => entries.iter().map(|(_, v)| count_aliases(v)).sum(),
    }
}

/// `depth` nested collections around a valid job field, in block or flow style.
pub fn nested(depth: usize, style: Style) -> String {
    match style {
        Style::Flow => format!("job_queue: q\ntest_data: {{x: {}1{}}}\n", "[".repeat(depth), "]".repeat(depth)),
        Style::Block => {
            let mut out = String::from("job_queue: q\ntest_data:\n");
            for level in 0..depth {
                pad(&mut out, 2 * (level + 1));
                out.push_str("k:\n");
            }
            pad(&mut out, 2 * (depth + 1));
            out.push_str("v: 1\n");
            out
        }
    }
}

/// A job whose `provision_data` (free-form) holds `depth` mappings under keys of `key_len`
/// characters around one collection of `width` items: every node's field path is long, and
/// there are many nodes.
pub fn long_paths(key_len: usize, depth: usize, width: usize, mapping: bool) -> Tree {
    let key = Key("k".repeat(key_len), true);
    let mut inner = if mapping {
        Tree::Map((0..width).map(|i| (Key(format!("k{i}"), false), Tree::Scalar("0".into()))).collect(), Style::Flow)
    } else {
        Tree::Seq(vec![Tree::Scalar("0".into()); width], Style::Flow)
    };
    for _ in 0..depth {
        inner = Tree::Map(vec![(key.clone(), inner)], Style::Block);
    }
    Tree::Map(
        vec![
            (Key("job_queue".into(), false), Tree::Scalar("\"q\"".into())),
            (Key("provision_data".into(), false), inner),
        ],
        Style::Block,
    )
}
