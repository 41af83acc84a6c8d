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
                let is_break = |c: char| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}');
                let mut lines = 1 + text.chars().filter(|&c| is_break(c)).count();
                // Known and tolerated (regressions/hermes_yaml/crash-528a8e65…): libyaml ends a
                // stream that lacks a final line break with an implied one, so an error at the very
                // end of `name: x\nvehnaem` is reported at line 3 of a 2-line text.
                if !text.ends_with(is_break) {
                    lines += 1;
                }
                assert!(
                    line >= 1 && line <= lines,
                    "error {shown:?} names line {line} of a text with {lines} line starts"
                );
            }
        }
    }
});
