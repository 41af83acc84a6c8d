//! `hermes_schemas::decode_log` (what the projector and the live log read from a log subject, which
//! any NATS client with publish rights can write) on arbitrary bytes.
//!
//! Checks: no panic; the two readers agree (`decode_log` and deserialising a `LogEvent`); the
//! lines of one event belong to one build and attempt and are numbered without gaps; and they
//! survive being published again as one `log.lines` event.

#![no_main]

use hermes_schemas::events::{LogEntry, LogLines, LogLinesType};
use hermes_schemas::{LogEvent, decode_log};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = decode_log(data);
    let event = serde_json::from_slice::<LogEvent>(data);
    assert_eq!(decoded.is_ok(), event.is_ok(), "the two readers disagree");
    let Ok(lines) = decoded else { return };
    assert_eq!(lines, event.expect("agreed").lines);
    let Some(first) = lines.first() else { return };
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l.build_id, first.build_id);
        assert_eq!(l.attempt, first.attempt);
        assert_eq!(Some(l.line), first.line.checked_add(i as u64), "numbers have a gap");
    }
    let again = LogLines {
        kind: LogLinesType::LogLines,
        version: 1,
        build_id: first.build_id.clone(),
        repo: first.repo.clone(),
        attempt: first.attempt,
        first_line: first.line,
        lines: lines
            .iter()
            .map(|l| LogEntry {
                time: l.time,
                stream: l.stream,
                text: l.text.clone(),
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&again).expect("a log event serialises");
    assert_eq!(decode_log(&bytes).expect("its own output decodes"), lines);
});
