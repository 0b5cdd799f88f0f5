//! Whatever the text, parsing returns a topology or errors with places: never a panic, and
//! every error points inside the text.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use berth_topology::parse_str;
use berth_topology::render::{RuntimeState, save};

fn texts() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["tests/fixtures", "../../examples/labs"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.to_string_lossy().ends_with(".clab.yml") {
                    out.push(std::fs::read_to_string(path).unwrap());
                }
            }
        }
    }
    assert!(out.len() > 20);
    out
}

fn check(text: &str) {
    let lines = text.lines().count().max(1) + 1;
    match parse_str(text, None, &|_| None) {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "no error given for:\n{text}");
            for e in errors.iter() {
                assert!(
                    e.at.pos.line >= 1 && e.at.pos.line <= lines,
                    "{e} outside the {lines} lines of:\n{text}"
                );
            }
        }
        // Whatever parses also saves to a file that parses back to the same lab.
        Ok(parsed) => {
            let saved = save(&parsed.topology, &RuntimeState::default());
            match parse_str(&saved, None, &|_| None) {
                Ok(back) => assert_eq!(back.topology, parsed.topology, "{text}\n----\n{saved}"),
                Err(e) => panic!("{e}\n{text}\n----\n{saved}"),
            }
        }
    }
}

#[test]
fn every_prefix_of_every_file() {
    for text in texts() {
        // About 200 cuts per file keeps the test to a second or two (each cut parses up to
        // the whole file); over the files, cuts land on every kind of place.
        let step = (text.len() / 200).max(1);
        for (i, _) in text.char_indices().step_by(step) {
            check(&text[..i]);
        }
    }
}

#[test]
fn mutated_files() {
    // A fixed linear congruential generator: the same mutations on every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let alphabet = [
        ":",
        "-",
        " ",
        "\n",
        "[",
        "]",
        "{",
        "}",
        "\"",
        "'",
        "&a",
        "*a",
        "<<",
        "#",
        "${X",
        "\t",
        "9999999999999999999999",
        "eth1",
        "~",
        "!!str ",
    ];
    for text in texts() {
        for _ in 0..60 {
            let mut t = text.clone();
            for _ in 0..1 + next() % 3 {
                let mut at = next() % (t.len() + 1);
                while !t.is_char_boundary(at) {
                    at -= 1;
                }
                match next() % 3 {
                    0 => t.insert_str(at, alphabet[next() % alphabet.len()]),
                    1 => {
                        let mut end = (at + 1 + next() % 8).min(t.len());
                        while !t.is_char_boundary(end) {
                            end -= 1;
                        }
                        t.replace_range(at..end, "");
                    }
                    _ => {
                        let dup = t[at..].lines().next().unwrap_or("").to_owned();
                        t.insert_str(at, &format!("{dup}\n"));
                    }
                }
            }
            check(&t);
        }
    }
}
