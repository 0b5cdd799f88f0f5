//! Reading typed values out of the YAML tree, collecting every error and warning with its
//! position instead of stopping at the first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Location, Warning, WarningKind};
use crate::impair::{Delay, ImpairError, Impairments, Percent, Rate};
use crate::yaml::{Node, Pos, Value};

/// The entries of a mapping.
pub type Entries = [(Node, Node)];

/// Collects diagnostics for one file.
pub struct Cx {
    pub file: Option<PathBuf>,
    pub errors: Vec<Error>,
    pub warnings: Vec<Warning>,
}

impl Cx {
    pub fn new(file: Option<PathBuf>) -> Cx {
        Cx {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn at(&self, pos: Pos) -> Location {
        Location {
            file: self.file.clone(),
            pos,
        }
    }

    pub fn error(&mut self, pos: Pos, kind: ErrorKind) {
        let at = self.at(pos);
        self.errors.push(Error { at, kind });
    }

    pub fn warn(&mut self, pos: Pos, kind: WarningKind) {
        let at = self.at(pos);
        self.warnings.push(Warning { at, kind });
    }

    /// The entries of a mapping; an empty value counts as an empty mapping (`r1:` with
    /// nothing under it is a node with every default, as in containerlab).
    pub fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n Entries> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            Value::Null => Some(&[]),
            _ => {
                self.error(
                    node.pos,
                    ErrorKind::Type {
                        what: what.to_owned(),
                        expected: "a mapping",
                        found: node.describe(),
                    },
                );
                None
            }
        }
    }

    /// Checks the keys of a mapping: `known` ones are read by the caller, `ignored` ones get
    /// a warning with the reason, anything else is an error listing `known`.
    pub fn check_keys(
        &mut self,
        entries: &Entries,
        section: &str,
        known: &'static [&'static str],
        ignored: &[(&str, &'static str)],
    ) {
        for (key, _) in entries {
            let Some(text) = key.key_text() else { continue };
            if known.contains(&text) {
                continue;
            }
            if let Some((_, why)) = ignored.iter().find(|(k, _)| *k == text) {
                self.warn(
                    key.pos,
                    WarningKind::IgnoredKey {
                        key: text.to_owned(),
                        section: section.to_owned(),
                        why,
                    },
                );
            } else {
                self.error(
                    key.pos,
                    ErrorKind::UnknownKey {
                        key: text.to_owned(),
                        section: section.to_owned(),
                        expected: known,
                        suggestion: closest(text, known),
                    },
                );
            }
        }
    }

    /// A scalar as text; `None` for an empty value, and for a collection (an error).
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            Value::Null => None,
            _ => {
                self.error(
                    node.pos,
                    ErrorKind::Type {
                        what: what.to_owned(),
                        expected: "a scalar",
                        found: node.describe(),
                    },
                );
                None
            }
        }
    }

    /// A scalar that must be there: an empty value is an error saying what was expected.
    pub fn required(&mut self, node: &Node, what: &str, expected: &'static str) -> Option<String> {
        if node.value == Value::Null {
            self.error(
                node.pos,
                ErrorKind::Type {
                    what: what.to_owned(),
                    expected,
                    found: node.describe(),
                },
            );
            return None;
        }
        self.string(node, what)
    }

    /// A number of type `T`.
    pub fn number<T: FromStr>(
        &mut self,
        node: &Node,
        what: &str,
        expected: &'static str,
    ) -> Option<T> {
        let text = self.string(node, what)?;
        match text.trim().parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(
                    node.pos,
                    ErrorKind::BadValue {
                        what: what.to_owned(),
                        value: text,
                        expected,
                    },
                );
                None
            }
        }
    }

    /// A boolean, with the YAML 1.1 spellings Go's yaml accepts.
    pub fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        let text = self.string(node, what)?;
        match text.as_str() {
            "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
            "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
            _ => {
                self.error(
                    node.pos,
                    ErrorKind::BadValue {
                        what: what.to_owned(),
                        value: text,
                        expected: "true or false",
                    },
                );
                None
            }
        }
    }

    /// A list of scalars, each with its position.
    pub fn strings(&mut self, node: &Node, what: &str) -> Vec<(String, Pos)> {
        match &node.value {
            Value::Null => Vec::new(),
            Value::Seq(items) => items
                .iter()
                .filter_map(|item| self.string(item, what).map(|s| (s, item.pos)))
                .collect(),
            _ => {
                self.error(
                    node.pos,
                    ErrorKind::Type {
                        what: what.to_owned(),
                        expected: "a list",
                        found: node.describe(),
                    },
                );
                Vec::new()
            }
        }
    }

    /// A mapping of scalars to scalars (`env`, `labels`, `sysctls`); an empty value is "".
    pub fn string_map(&mut self, node: &Node, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(entries) = self.map(node, what) else {
            return out;
        };
        for (key, value) in entries {
            let Some(k) = key.key_text() else { continue };
            let v = self
                .string(value, &format!("{what}.{k}"))
                .unwrap_or_default();
            out.insert(k.to_owned(), v);
        }
        out
    }

    /// Converts a value through `TryFrom<&str>`, reporting failure with `wrap`.
    pub fn typed<T, E>(
        &mut self,
        node: &Node,
        what: &str,
        convert: impl FnOnce(&str) -> Result<T, E>,
        wrap: impl FnOnce(String, E) -> ErrorKind,
    ) -> Option<T> {
        let text = self.string(node, what)?;
        match convert(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(node.pos, wrap(what.to_owned(), e));
                None
            }
        }
    }

    /// Berth's `impairments:` block.
    pub fn impairments(&mut self, node: &Node, what: &str) -> Impairments {
        let mut out = Impairments::default();
        let section = format!("{what}.impairments");
        let Some(entries) = self.map(node, &section) else {
            return out;
        };
        self.check_keys(entries, &section, crate::impair::KEYS, &[]);
        let wrap = |what: String, error: ImpairError| ErrorKind::Impairment { what, error };
        for (key, value) in entries {
            let k = key.key_text().unwrap_or_default();
            let what = format!("{section}.{k}");
            match k {
                "delay" => out.delay = self.typed(value, &what, |s: &str| Delay::try_from(s), wrap),
                "jitter" => {
                    out.jitter = self.typed(value, &what, |s: &str| Delay::try_from(s), wrap)
                }
                "loss" => out.loss = self.typed(value, &what, |s: &str| Percent::try_from(s), wrap),
                "rate" => out.rate = self.typed(value, &what, |s: &str| Rate::try_from(s), wrap),
                "corrupt" => {
                    out.corrupt = self.typed(value, &what, |s: &str| Percent::try_from(s), wrap)
                }
                _ => {}
            }
        }
        // Jitter without delay is checked by the caller on the effective values: an
        // endpoint's jitter may rely on its link's delay.
        out
    }
}

/// The known key a typo most likely meant: at most two edits away (one for short keys).
fn closest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let limit = if key.len() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, with a swap of two neighbours counting as one edit (`imgae`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The value of `key` in a mapping.
pub fn get<'n>(entries: &'n Entries, key: &str) -> Option<&'n Node> {
    entries
        .iter()
        .find(|(k, _)| k.key_text() == Some(key))
        .map(|(_, v)| v)
}

/// A YAML value as JSON, scalars typed as YAML 1.2's core schema does (plain `1` is a
/// number, `true` a boolean, quoted ones strings), for containerlab's free-form `vars`.
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Null => J::Null,
        Value::Scalar { text, plain: false } => J::String(text.clone()),
        Value::Scalar { text, plain: true } => match text.as_str() {
            "true" | "True" | "TRUE" => J::Bool(true),
            "false" | "False" | "FALSE" => J::Bool(false),
            t => {
                if let Ok(i) = t.parse::<i64>() {
                    J::from(i)
                } else if let Some(n) = t
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && t.contains(|c: char| c.is_ascii_digit()))
                    .and_then(serde_json::Number::from_f64)
                {
                    J::Number(n)
                } else {
                    J::String(t.to_owned())
                }
            }
        },
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.key_text().unwrap_or_default().to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_for_typos() {
        let known = &[
            "image",
            "kind",
            "exec",
            "mgmt-ipv4",
            "mgmt-ipv6",
            "network-mode",
        ];
        assert_eq!(closest("imgae", known), Some("image"));
        assert_eq!(closest("knd", known), Some("kind"));
        assert_eq!(closest("mgmt_ipv4", known), Some("mgmt-ipv4"));
        assert_eq!(closest("networkmode", known), Some("network-mode"));
        assert_eq!(closest("startup-config", known), None);
        assert_eq!(closest("xyz", known), None);
    }
}
