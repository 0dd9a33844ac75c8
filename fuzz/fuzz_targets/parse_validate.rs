//! Playbook text → parse → validate, and every diagnostic rendered and located.
//!
//! Nothing here may panic on any input: not the TOML parser, not the step deserialisers, not
//! the Jinja checks, and not the miette renderer (spans at the end of the text, past it, or
//! inside a multi-byte character included).

#![no_main]

use bosun_model::playbook::{self, Diagnostic, Diagnostics, Source};
use libfuzzer_sys::fuzz_target;

/// `BOSUN_FUZZ_SHOW=1` prints what each input parses to (for checking seeds and crashes).
static SHOW: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("BOSUN_FUZZ_SHOW").is_some());

fn exercise(d: &Diagnostics) {
    let located = d.located();
    assert_eq!(located.len(), d.items.len());
    let plain = d.render(false);
    let _ = d.render(true);
    // `file:line:col: error:` header per diagnostic, then a summary line.
    assert!(plain.ends_with("found; nothing was run\n"), "{plain}");
    let _ = d.to_string();
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match playbook::parse(Source::new("fuzz.toml", text)) {
        Ok(pb) => {
            let outside = ["root".to_string(), "env_name".to_string()];
            let diags = playbook::validate(&pb, &outside);
            if *SHOW {
                eprintln!("parsed `{}`: {} steps, {} handlers", pb.name, pb.steps.len(), pb.handlers.len());
                eprintln!("{}", Diagnostics::new(pb.source.clone(), diags.clone()).render(false));
            }
            let _ = playbook::validate(&pb, &[]);
            // Also render spans the engine never produces: end of text, past it, and the
            // middle of the last character (multi-byte or not).
            let len = text.len();
            let mut items = diags;
            items.push(Diagnostic::new(len..len, "at end"));
            items.push(Diagnostic::new(len.saturating_sub(1)..len + 3, "past end").with_help("h"));
            if let Some((i, c)) = text.char_indices().next_back() {
                let mid = i + c.len_utf8() / 2;
                items.push(Diagnostic::new(mid..mid + 1, "mid char"));
            }
            if let Some((i, c)) = text.char_indices().find(|(_, c)| c.len_utf8() > 1) {
                items.push(Diagnostic::new(i + 1..i + c.len_utf8() + 2, "first multi-byte char"));
            }
            exercise(&Diagnostics::new(pb.source.clone(), items));
        }
        Err(d) => {
            assert!(!d.items.is_empty(), "parse failed with no diagnostic");
            if *SHOW {
                eprintln!("parse error:\n{}", d.render(false));
            }
            exercise(&d);
        }
    }
});
