//! A small YAML writer for the shapes a topology has: block mappings and sequences,
//! flow sequences of strings (brief endpoints), and inline JSON (valid YAML flow) for
//! containerlab's free-form `vars`.

/// A value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Y {
    /// A string: written plain when that reads back as the same string, quoted otherwise.
    Str(String),
    /// Written as it is: numbers, booleans, inline JSON.
    Raw(String),
    Seq(Vec<Y>),
    /// A sequence written on one line, each item double-quoted.
    FlowStrings(Vec<String>),
    Map(Vec<(String, Y)>),
}

/// The document for `root`, which should be a mapping.
pub fn document(header: &str, root: &Y) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    match root {
        Y::Map(entries) => map(&mut out, entries, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    // A topology file goes through environment expansion before YAML: every `$` written
    // must come back as itself, not as the reader's $HOME.
    out.replace('$', "$$")
}

/// A scalar that a YAML 1.1 or 1.2 reader takes for something other than this string
/// (null, a boolean, a number) or cannot read plain at all.
fn needs_quotes(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return true;
    };
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "~" | "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
    ) {
        return true;
    }
    // Numbers, and anything a YAML 1.1 reader might read as one (1_000, 1:30, 0x1f).
    if s.parse::<f64>().is_ok()
        || (s.chars().any(|c| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() || "+-._:xXoO".contains(c)))
    {
        return true;
    }
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || first.is_whitespace() {
        return true;
    }
    if s.ends_with(char::is_whitespace) || s.ends_with(':') {
        return true;
    }
    s.contains(": ") || s.contains(" #") || s.chars().any(char::is_control)
}

/// A double-quoted YAML (and JSON) string.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn scalar(s: &str) -> String {
    if needs_quotes(s) {
        quoted(s)
    } else {
        s.to_owned()
    }
}

fn inline(y: &Y) -> String {
    match y {
        Y::Str(s) => scalar(s),
        Y::Raw(r) => r.clone(),
        Y::FlowStrings(items) => {
            let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
            format!("[{}]", items.join(", "))
        }
        Y::Seq(items) if items.is_empty() => "[]".to_owned(),
        Y::Map(entries) if entries.is_empty() => "{}".to_owned(),
        // Collections in inline position only come from the callers above.
        Y::Seq(_) | Y::Map(_) => String::new(),
    }
}

fn is_block(y: &Y) -> bool {
    matches!(y, Y::Seq(items) if !items.is_empty()) || matches!(y, Y::Map(e) if !e.is_empty())
}

fn map(out: &mut String, entries: &[(String, Y)], indent: usize) {
    let pad = " ".repeat(indent);
    for (key, value) in entries {
        out.push_str(&pad);
        out.push_str(&scalar(key));
        out.push(':');
        match value {
            Y::Map(inner) if !inner.is_empty() => {
                out.push('\n');
                map(out, inner, indent + 2);
            }
            Y::Seq(items) if !items.is_empty() => {
                out.push('\n');
                seq(out, items, indent + 2);
            }
            other => {
                out.push(' ');
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

fn seq(out: &mut String, items: &[Y], indent: usize) {
    let pad = " ".repeat(indent);
    for item in items {
        if is_block(item) {
            // Write the item as a block two columns deeper, then put the dash in the
            // first line's indentation: "    key: v" becomes "  - key: v".
            let mut block = String::new();
            match item {
                Y::Map(entries) => map(&mut block, entries, indent + 2),
                Y::Seq(inner) => seq(&mut block, inner, indent + 2),
                _ => {}
            }
            out.push_str(&pad);
            out.push_str("- ");
            out.push_str(&block[indent + 2..]);
        } else {
            out.push_str(&pad);
            out.push_str("- ");
            out.push_str(&inline(item));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        for plain in [
            "busybox:1.36",
            "eth1",
            "10ms",
            "sleep infinity",
            "a-b",
            "/srv/a:/a",
        ] {
            assert_eq!(scalar(plain), plain, "{plain}");
        }
        for q in [
            "", "yes", "No", "1", "1.5", "8080:80", "0x1f", "1_000", "a: b", "- x", "#x", "x ",
            "*a", "~",
        ] {
            assert!(scalar(q).starts_with('"'), "{q:?}");
        }
        assert_eq!(quoted("a\"b\\c\n"), r#""a\"b\\c\n""#);
    }

    #[test]
    fn blocks() {
        let doc = Y::Map(vec![
            ("name".into(), Y::Str("x".into())),
            (
                "links".into(),
                Y::Seq(vec![
                    Y::Map(vec![(
                        "endpoints".into(),
                        Y::FlowStrings(vec!["a:eth1".into(), "b:eth1".into()]),
                    )]),
                    Y::Map(vec![
                        ("type".into(), Y::Str("veth".into())),
                        (
                            "endpoints".into(),
                            Y::Seq(vec![Y::Map(vec![
                                ("node".into(), Y::Str("a".into())),
                                ("interface".into(), Y::Str("eth2".into())),
                            ])]),
                        ),
                    ]),
                ]),
            ),
            ("empty".into(), Y::Map(vec![])),
        ]);
        assert_eq!(
            document("hi", &doc),
            "# hi\nname: x\nlinks:\n  - endpoints: [\"a:eth1\", \"b:eth1\"]\n  - type: veth\n    endpoints:\n      - node: a\n        interface: eth2\nempty: {}\n"
        );
    }
}
