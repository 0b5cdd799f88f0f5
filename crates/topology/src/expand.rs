//! Environment variables in a topology file, expanded in the text before YAML parsing, as
//! containerlab does: its `LoadTopologyFromFile` (core/topology.go) runs the file through
//! `envsubst.BytesRestrictedNoReplace` (github.com/hellt/envsubst) and then
//! `yaml.UnmarshalStrict`. The rules of that call, kept here:
//!
//! - `$VAR` and `${VAR}` become VAR's value when VAR is set, and are left as written when
//!   it is not (so `sh -c 'echo $HOSTNAME'` reaches the node's shell unless the host has
//!   HOSTNAME set: the same trap as in containerlab);
//! - `${VAR:=default}` and `${VAR:-default}` give the default when VAR is unset or empty,
//!   `${VAR=default}` and `${VAR-default}` when it is unset;
//! - `$$` is a literal `$`.
//!
//! A `${VAR}` left as written is reported as a warning naming its line. containerlab's Go
//! templating (`{{ … }}` with `_vars` files), which runs before envsubst, is not supported.

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
    /// `${VAR}`s left as written: VAR was unset and had no default.
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
            if let Some(escaped) = after.strip_prefix('$') {
                out.push('$');
                rest = escaped;
                column += 2;
                continue;
            }
            let Some(body_and_rest) = after.strip_prefix('{') else {
                // `$VAR`: replaced when set, kept otherwise; any other `$` is text.
                let name_len = if after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                    after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len())
                } else {
                    0
                };
                let name = &after[..name_len];
                match (name_len > 0).then(|| lookup(name)).flatten() {
                    Some(value) => out.push_str(&value),
                    None => {
                        out.push('$');
                        out.push_str(name);
                    }
                }
                column += 1 + name.chars().count();
                rest = &after[name_len..];
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
            match (op, lookup(name)) {
                (":=" | ":-", Some(v)) if v.is_empty() => out.push_str(default),
                (_, Some(v)) => out.push_str(&v),
                ("", None) => {
                    unset.push((pos, name.to_owned()));
                    out.push_str("${");
                    out.push_str(body);
                    out.push('}');
                }
                (_, None) => out.push_str(default),
            }
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
            "a: ${IMAGE}\nb: ${NOPE:=x}\nc: ${EMPTY:-y}\nd: ${EMPTY-z}\ne: $HOME ${NOPE}\nf: $$IMAGE $IMAGE-x $1 $\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            e.text,
            "a: busybox:1.36\nb: x\nc: y\nd: \ne: $HOME ${NOPE}\nf: $IMAGE busybox:1.36-x $1 $\n"
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
