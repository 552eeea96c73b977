//! The merged-channel redactor: its output, concatenated, is the one-shot redaction of the
//! concatenated input; every piece belongs to the segment it came from; every segment
//! completes exactly once, in order; a secret split across channels is caught.

use phasebox_redact::{Redactor, Released, Secret, mask_token};
use proptest::prelude::*;

const SECRET: &str = "split-across-channels-42";

fn redactor() -> Redactor {
    Redactor::new([("S", Secret::new(SECRET))]).unwrap()
}

/// Streams `(tag, bytes)` segments through a tagged stream; returns every released piece.
fn run(r: &Redactor, segments: &[(u8, Vec<u8>)]) -> Vec<Released<(u8, usize)>> {
    let mut stream = r.tagged_stream();
    let mut out = Vec::new();
    for (i, (tag, bytes)) in segments.iter().enumerate() {
        out.extend(stream.push((*tag, i), bytes));
    }
    out.extend(stream.finish());
    out
}

#[test]
fn a_secret_split_across_channels_is_masked_in_the_channel_it_started_in() {
    let r = redactor();
    let (a, b) = SECRET.split_at(10);
    let segments = vec![(0, format!("out: {a}").into_bytes()), (1, format!("{b}\nerr\n").into_bytes())];
    let out = run(&r, &segments);
    let token = mask_token(&Secret::new(SECRET));
    let of = |tag: u8| -> String {
        out.iter().filter(|p| p.tag.0 == tag).map(|p| String::from_utf8_lossy(&p.bytes).into_owned()).collect()
    };
    assert_eq!(of(0), format!("out: {token}"));
    assert_eq!(of(1), "\nerr\n");
}

#[test]
fn a_segment_swallowed_by_a_match_still_completes() {
    let r = redactor();
    let (a, rest) = SECRET.split_at(8);
    let (b, c) = rest.split_at(6);
    let segments = vec![(0, a.as_bytes().to_vec()), (1, b.as_bytes().to_vec()), (0, c.as_bytes().to_vec())];
    let out = run(&r, &segments);
    let completed: Vec<usize> = out.iter().filter(|p| p.complete).map(|p| p.tag.1).collect();
    assert_eq!(completed, [0, 1, 2]);
    assert!(out.iter().filter(|p| p.tag.1 == 1).all(|p| p.bytes.is_empty()));
}

fn segments() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    let piece = prop_oneof![
        3 => proptest::collection::vec(prop_oneof![0x20u8..0x7f, Just(b'\n')], 0..40),
        1 => (0..SECRET.len(), 0..SECRET.len()).prop_map(|(i, j)| SECRET.as_bytes()[i.min(j)..i.max(j)].to_vec()),
        1 => Just(SECRET.as_bytes().to_vec()),
    ];
    proptest::collection::vec((0u8..3, piece), 0..30)
}

proptest! {
    #[test]
    fn output_is_the_one_shot_redaction_and_segments_complete_in_order(segments in segments()) {
        let r = redactor();
        let out = run(&r, &segments);
        let input: Vec<u8> = segments.iter().flat_map(|(_, b)| b.clone()).collect();
        let output: Vec<u8> = out.iter().flat_map(|p| p.bytes.clone()).collect();
        prop_assert_eq!(output, r.redact_bytes(&input));
        // Pieces come in segment order, each segment's pieces with its own tag.
        let order: Vec<usize> = out.iter().map(|p| p.tag.1).collect();
        prop_assert!(order.windows(2).all(|w| w[0] <= w[1]), "{:?}", order);
        let completed: Vec<usize> = out.iter().filter(|p| p.complete).map(|p| p.tag.1).collect();
        prop_assert_eq!(completed, (0..segments.len()).collect::<Vec<_>>());
        for p in &out {
            prop_assert_eq!(p.tag.0, segments[p.tag.1].0);
        }
    }
}
