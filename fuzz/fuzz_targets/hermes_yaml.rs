//! `hermes_runner::pipeline::parse` on arbitrary UTF-8 (inputs that are not UTF-8 are skipped).
//!
//! Checks: no panic; an error's message starts with `Hermes.yaml` and any line it names is
//! within the text; a parsed pipeline has the one schema there is.

#![no_main]

use hermes_runner::pipeline::{Schema, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(p) => assert_eq!(p.schema, Schema::Docker),
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("Hermes.yaml"), "error {shown:?} does not name the file");
            if let Some(line) = e.line {
                // Lines are counted from 1. YAML breaks lines at \n, \r, \r\n and (YAML 1.1)
                // NEL, LS and PS; the end of the text may be one past the last break.
                let lines = 1 + text
                    .chars()
                    .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
                    .count();
                assert!(
                    line >= 1 && line <= lines,
                    "error {shown:?} names line {line} of a {lines}-line text"
                );
            }
        }
    }
});
