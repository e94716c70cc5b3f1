//! The correlation state survives serialisation at any point: a follower that persists it
//! with its output, restarts and continues emits exactly what an uninterrupted run emits.

mod common;

use common::*;
use mailaudit_source_dovecot::{DovecotConfig, DovecotSource};

fn reload(src: &DovecotSource) -> DovecotSource {
    let json = serde_json::to_string(src).unwrap();
    let back: DovecotSource = serde_json::from_str(&json).unwrap();
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        json,
        "serialisation is stable"
    );
    back
}

fn check_every_cut(inputs: &[Input], ties: Ties, flush_each: bool) {
    let cfg = DovecotConfig::default();
    let (expected, expected_src) = if flush_each {
        run_batch(&cfg, inputs, ties)
    } else {
        run_then_flush(&cfg, inputs)
    };
    for cut in 0..=inputs.len() {
        let mut src = DovecotSource::new();
        let mut out = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            if i == cut {
                src = reload(&src);
            }
            out.extend(push(&mut src, &cfg, input));
            if flush_each {
                out.extend(src.flush_due(&cfg, sort_time(input, ties)));
            }
        }
        if cut == inputs.len() {
            src = reload(&src);
        }
        out.extend(src.flush_all(&cfg));
        assert_eq!(
            out, expected,
            "restart before input {cut} changed the output"
        );
        assert_eq!(
            src.stats(),
            expected_src.stats(),
            "restart before input {cut} changed the stats"
        );
    }
}

#[test]
fn restart_anywhere_in_batch_mode() {
    check_every_cut(&merged(Ties::EventsFirst), Ties::EventsFirst, true);
}

#[test]
fn restart_anywhere_with_everything_pending() {
    // No flush until the end: the state holds every draft, line and sub-event at the cut.
    check_every_cut(&merged(Ties::LinesFirst), Ties::LinesFirst, false);
}

#[test]
fn restart_anywhere_on_events_alone() {
    check_every_cut(&events(), Ties::EventsFirst, true);
}
