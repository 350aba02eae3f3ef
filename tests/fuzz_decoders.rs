//! The decoders a node runs on bytes from the network, fed arbitrary and mutated input under
//! proptest on every `cargo test` (the same entry points `fuzz/`'s `cargo fuzz` targets drive for
//! longer): none may panic. Each property runs a bounded number of cases, so this takes seconds.
//!
//! **Modes.** Neither: no runtime is started; these are the pure decoders.

use lumen::fuzzing;
use proptest::prelude::*;

/// Cases per property: enough to reach past the length checks into the bodies, few enough to
/// keep this file a few seconds long on two cores.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every message tag (computed once).
fn tags() -> &'static [u16] {
    static TAGS: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TAGS.get_or_init(fuzzing::tags)
}

/// A 13-byte control frame header (length, kind, id) followed by `body`.
fn framed(kind: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::frames(&data);
    }

    #[test]
    fn well_formed_frames_decode(kind in 1u8..=3, id: u64, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut data = framed(kind, id, &body);
        data.extend(framed(kind, id, &body));
        prop_assert_eq!(fuzzing::frames(&data), 2);
    }

    #[test]
    fn handshakes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(!fuzzing::handshake(&data), "random bytes passed as a hello with the token");
    }

    #[test]
    fn length_prefixed_handshakes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut data = (body.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(&body);
        prop_assert!(!fuzzing::handshake(&data));
    }

    #[test]
    fn messages_with_real_tags_never_panic(
        tag_index: prop::sample::Index,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let tag = tags()[tag_index.index(tags().len())];
        let mut data = tag.to_be_bytes().to_vec();
        data.extend_from_slice(&body);
        prop_assert!(fuzzing::message(&data).is_some());
    }

    #[test]
    fn messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::message(&data);
    }
}

/// Every message kind is reachable by the message fuzzer.
#[test]
fn the_message_fuzzer_knows_every_tag() {
    let tags = tags();
    // 46 when this was written; fewer means the fuzzer lost some.
    assert!(
        tags.len() >= 46,
        "only {} message tags: {tags:?}",
        tags.len()
    );
}
