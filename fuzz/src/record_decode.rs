//! `record_decode`: the commitlog record decoder.
//!
//! Input: one mode byte, then the bytes of (a piece of) a segment. With the mode's low bit set the
//! record CRCs are repaired first ([`crate::fixup::fix_record_crcs`]).
//!
//! The bytes are walked the way recovery walks a segment: [`record::read_slot`] at the current
//! position, then past each record, until an end-of-segment marker, an empty slot or an error.
//! Properties checked:
//! * no input panics;
//! * `read_slot`, `decode` and `decode_trusted` agree on every record;
//! * a record that decodes re-encodes, from its fields, with `record::encode_into`, to exactly the
//!   same bytes (so no field is lost or normalised on the way through the decoder);
//! * an end-of-segment marker claims exactly the bytes left;
//! * `cq_tag_hash` is the delivery time for a scheduled record and the tag hash otherwise.

use tern_engine::format::record::{self, RecordFields, RecordView, Slot, HEADER_LEN};
use tern_engine::tag::fnv1a_64;

use crate::fixup;

/// The check.
pub fn run(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        let mut owned = bytes.to_vec();
        fixup::fix_record_crcs(&mut owned);
        walk(&owned);
    } else {
        walk(bytes);
    }
    // The decoder on its own, at every position a record could start in a short input.
    if bytes.len() <= 512 {
        for start in 0..bytes.len() {
            if let Ok(view) = record::decode(&bytes[start..]) {
                check_record(&view);
            }
        }
    }
}

fn walk(bytes: &[u8]) {
    let mut pos = 0;
    while pos < bytes.len() {
        match record::read_slot(&bytes[pos..]) {
            Ok(Slot::Record(view)) => {
                check_record(&view);
                let size = view.total_size() as usize;
                assert!(
                    size >= HEADER_LEN,
                    "a record shorter than its header decoded"
                );
                pos += size;
            }
            Ok(Slot::EndOfSegment { remaining }) => {
                assert_eq!(
                    remaining as usize,
                    bytes.len() - pos,
                    "end-of-segment marker accepted with the wrong length"
                );
                return;
            }
            Ok(Slot::Empty) | Err(_) => return,
        }
    }
}

fn check_record(view: &RecordView<'_>) {
    let bytes = view.bytes();
    assert_eq!(view.total_size() as usize, bytes.len());

    let again = record::decode(bytes).expect("a decoded record's own bytes must decode");
    assert_eq!(again.bytes(), bytes);
    let trusted = record::decode_trusted(bytes).expect("decode_trusted refused a valid record");
    assert_eq!(trusted.bytes(), bytes);
    match record::read_slot(bytes) {
        Ok(Slot::Record(v)) => assert_eq!(v.bytes(), bytes),
        other => panic!("read_slot disagrees with decode: {other:?}"),
    }

    // Every accessor, as a reader would use them.
    let keys: Vec<String> = view.keys().map(str::to_owned).collect();
    let properties: Vec<(String, String)> = view
        .properties()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    for (name, _) in &properties {
        assert!(view.property(name).is_some());
    }
    let expected_hash = if view.flags() & record::flags::SCHEDULED != 0 {
        view.deliver_at_ms()
    } else {
        fnv1a_64(view.tag().as_bytes())
    };
    assert_eq!(view.cq_tag_hash(fnv1a_64), expected_hash);
    let _ = format!("{view:?}");

    // Round trip: the fields re-encode to the identical bytes.
    let fields = RecordFields {
        flags: view.flags(),
        commitlog_offset: view.commitlog_offset(),
        queue_offset: view.queue_offset(),
        store_timestamp_ms: view.store_timestamp_ms(),
        born_timestamp_ms: view.born_timestamp_ms(),
        deliver_at_ms: view.deliver_at_ms(),
        message_id: view.message_id(),
        queue_id: view.queue_id(),
        reconsume_count: view.reconsume_count(),
        topic: view.topic(),
        tag: view.tag(),
        keys: &keys,
        properties: &properties,
        body: view.body(),
    };
    assert_eq!(record::encoded_len(&fields), bytes.len(), "encoded_len");
    let mut out = Vec::with_capacity(bytes.len());
    let written = record::encode_into(&mut out, &fields);
    assert_eq!(written, bytes.len());
    assert!(
        out == bytes,
        "re-encoding a decoded record changed its bytes"
    );
}
