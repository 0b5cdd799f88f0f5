//! Environment variables in a topology file, expanded in the text before YAML parsing, as
//! containerlab does (it runs the whole file through an envsubst library; see "Environment
//! variables" in containerlab's docs/manual/topo-def-file.md).
//!
//! Forms expanded: `${VAR}`, `${VAR:=default}` and `${VAR:-default}` (the default when VAR
//! is unset or empty), `${VAR=default}` and `${VAR-default}` (the default when VAR is
//! unset). A bare `$VAR` is left as it is: exec lines such as `sh -c 'echo $HOSTNAME'` are
//! meant for the node's shell (a deliberate difference from envsubst, which would have
//! replaced it with the host's value or nothing). `$${VAR}` escapes to a literal `${VAR}`.
//!
//! A variable that is unset and has no default expands to nothing, as with envsubst, and
//! is reported as a warning naming its line.

use crate::yaml::Pos;

/// A `${…}` that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("unterminated ${{…}}: expected a closing '}}' on the same line")]
    Unterminated,
    #[error(
        "invalid variable name {name:?} in ${{…}}: expected [A-Za-z_][A-Za-z0-9_]*, optionally followed by :=, :-, = or - and a default"
    )]
    BadName { name: String },
}

/// The result of expanding a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub text: String,
    /// Variables that were unset, had no default and so expanded to nothing.
    pub unset: Vec<(Pos, String)>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands `text` with `lookup` (the process environment for a file, a map in tests).
pub fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, (Pos, ExpandError)> {
    let mut out = String::with_capacity(text.len());
    let mut unset = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        let mut column = 1;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            column += rest[..at].chars().count();
            let pos = Pos {
                line: index + 1,
                column,
            };
            let after = &rest[at + 1..];
            if let Some(escaped) = after.strip_prefix("${") {
                // `$${` is a literal `${`.
                out.push_str("${");
                rest = escaped;
                column += 3;
                continue;
            }
            let Some(body_and_rest) = after.strip_prefix('{') else {
                out.push('$');
                rest = after;
                column += 1;
                continue;
            };
            let Some(close) = body_and_rest.find('}') else {
                return Err((pos, ExpandError::Unterminated));
            };
            let body = &body_and_rest[..close];
            let (name, op, default) = split_body(body);
            if !valid_name(name) {
                return Err((
                    pos,
                    ExpandError::BadName {
                        name: name.to_owned(),
                    },
                ));
            }
            let value = lookup(name);
            let chosen = match (op, value) {
                (":=" | ":-", Some(v)) if v.is_empty() => default.to_owned(),
                (_, Some(v)) => v,
                ("", None) => {
                    unset.push((pos, name.to_owned()));
                    String::new()
                }
                (_, None) => default.to_owned(),
            };
            out.push_str(&chosen);
            column += 2 + body.chars().count() + 1;
            rest = &body_and_rest[close + 1..];
        }
        out.push_str(rest);
    }
    Ok(Expanded { text: out, unset })
}

/// Splits `VAR:=default` into ("VAR", ":=", "default").
fn split_body(body: &str) -> (&str, &str, &str) {
    let name_end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, tail) = body.split_at(name_end);
    for op in [":=", ":-", "=", "-"] {
        if let Some(default) = tail.strip_prefix(op) {
            return (name, op, default);
        }
    }
    // Anything else after the name makes the whole body the (invalid) name.
    if tail.is_empty() {
        (name, "", "")
    } else {
        (body, "", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "IMAGE" => Some("busybox:1.36".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn forms() {
        let e = expand(
            "a: ${IMAGE}\nb: ${NOPE:=x}\nc: ${EMPTY:-y}\nd: ${EMPTY-z}\ne: $HOME ${NOPE}\nf: $${IMAGE}\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            e.text,
            "a: busybox:1.36\nb: x\nc: y\nd: \ne: $HOME \nf: ${IMAGE}\n"
        );
        assert_eq!(
            e.unset,
            vec![(
                Pos {
                    line: 5,
                    column: 10
                },
                "NOPE".into()
            )]
        );
    }

    #[test]
    fn errors_name_the_place() {
        let (pos, err) = expand("a: 1\nb: x ${IMAGE\n", &env).unwrap_err();
        assert_eq!(pos, Pos { line: 2, column: 6 });
        assert_eq!(err, ExpandError::Unterminated);
        let (pos, err) = expand("b: ${1X}\n", &env).unwrap_err();
        assert_eq!(pos, Pos { line: 1, column: 4 });
        assert!(matches!(err, ExpandError::BadName { .. }));
        assert!(expand("b: ${A B}\n", &env).is_err());
    }
}
