//! A YAML document loaded into a tree whose every node knows its line and column.
//!
//! serde-based YAML crates lose positions once a value is typed, so the topology would not
//! be able to say *where* an unknown key or a bad interface name is. Instead the event
//! stream of `saphyr-parser` is folded into [`Node`]s here, and `parse` converts them to
//! typed structs by hand, with the position at hand for every message.
//!
//! What this loader adds to the YAML events:
//! - duplicate keys are an error naming both lines (YAML forbids them; Go's yaml.v2, which
//!   containerlab used for years, silently kept the last one);
//! - aliases are resolved to a copy of their anchor's node;
//! - `<<` merge keys (YAML 1.1, supported by Go's yaml and so used in containerlab files)
//!   insert the merged mapping's entries that the mapping does not set itself;
//! - a second document in the stream is an error (a topology is one document);
//! - nesting deeper than [`MAX_DEPTH`] is an error rather than a stack overflow.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

/// Deepest nesting accepted; a topology file needs about six levels.
pub const MAX_DEPTH: usize = 64;

/// A position in the source text, both numbers counted from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            // saphyr counts columns from 0; editors and compilers from 1.
            column: span.start.col() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One node of the document.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// The value of a node. Scalars stay text: the schema decides what each one means.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An empty value, `~` or `null` (plain, not quoted).
    Null,
    /// A scalar; `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in document order; keys are unique (checked while loading).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What a node is, for messages such as "expected a mapping, found a sequence".
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Null => "an empty value",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }

    /// The key text when this node is used as a mapping key.
    pub fn key_text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// A YAML document that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    #[error("invalid YAML: {info}")]
    Syntax { info: String },
    #[error("invalid YAML: {info} (the '{open}' at line {line}, column {column} is never closed)")]
    Unclosed {
        info: String,
        open: char,
        line: usize,
        column: usize,
    },
    #[error("duplicate key {key:?} (first at line {first_line})")]
    DuplicateKey { key: String, first_line: usize },
    #[error("mapping keys must be scalars, found {found}")]
    ComplexKey { found: &'static str },
    #[error("a `<<` merge key takes a mapping or a list of mappings, found {found}")]
    BadMerge { found: &'static str },
    #[error("alias to an unknown anchor")]
    UnknownAnchor,
    #[error("more than one YAML document: a topology is one document")]
    SecondDocument,
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// A [`YamlError`] and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub pos: Pos,
    pub error: YamlError,
}

/// Loads the single document of `text`; `Ok(None)` for a stream with no document at all.
pub fn load(text: &str) -> Result<Option<Node>, Located> {
    let mut loader = Loader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        last: Pos { line: 1, column: 1 },
    };
    loader.document().map_err(|mut e| {
        // The scanner reports an unclosed `[` or `{` where it gives up, often lines later
        // ("invalid indentation"); point at the bracket too.
        if let YamlError::Syntax { info } = &e.error {
            if let Some((open, at)) = unclosed_before(text, e.pos) {
                e.error = YamlError::Unclosed {
                    info: info.clone(),
                    open,
                    line: at.line,
                    column: at.column,
                };
            }
        }
        e
    })
}

/// The innermost flow bracket opened on an earlier line than `pos` and still open there.
/// A heuristic for messages only: quotes and comments are skipped, block scalars are not
/// understood (a bracket inside one might be counted).
fn unclosed_before(text: &str, pos: Pos) -> Option<(char, Pos)> {
    let mut stack: Vec<(char, Pos)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line_no >= pos.line {
            break;
        }
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for (col, c) in line.chars().enumerate() {
            match quote {
                Some(q) => {
                    if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    '#' if previous.is_whitespace() => break,
                    '\'' | '"' if !previous.is_alphanumeric() => quote = Some(c),
                    '[' | '{' => stack.push((
                        c,
                        Pos {
                            line: line_no,
                            column: col + 1,
                        },
                    )),
                    ']' | '}' => {
                        stack.pop();
                    }
                    _ => {}
                },
            }
            previous = c;
        }
    }
    stack.pop()
}

struct Loader<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    /// Position of the last event, for errors at the end of the input.
    last: Pos,
}

fn syntax(e: ScanError) -> Located {
    Located {
        pos: Pos {
            line: e.marker().line(),
            column: e.marker().col() + 1,
        },
        error: YamlError::Syntax {
            info: e.info().to_owned(),
        },
    }
}

impl<'a> Loader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Pos), Located> {
        match self.parser.next() {
            Some(Ok((event, span))) => {
                let pos = Pos::of(&span);
                self.last = pos;
                Ok((event, pos))
            }
            Some(Err(e)) => Err(syntax(e)),
            // The parser ends every stream with StreamEnd; running out early only follows
            // an error it already reported, but say something rather than panic.
            None => Err(Located {
                pos: self.last,
                error: YamlError::Syntax {
                    info: "unexpected end of input".to_owned(),
                },
            }),
        }
    }

    fn document(&mut self) -> Result<Option<Node>, Located> {
        let mut root = None;
        loop {
            let (event, pos) = self.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return Ok(root),
                Event::DocumentStart(_) => {
                    if root.is_some() {
                        return Err(Located {
                            pos,
                            error: YamlError::SecondDocument,
                        });
                    }
                    let (event, pos) = self.next()?;
                    root = Some(self.node(event, pos, 0)?);
                }
                other => {
                    // A node outside a document cannot come out of a well-formed stream.
                    return Err(Located {
                        pos,
                        error: YamlError::Syntax {
                            info: format!("unexpected event {other:?}"),
                        },
                    });
                }
            }
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }

    fn node(&mut self, event: Event<'a>, pos: Pos, depth: usize) -> Result<Node, Located> {
        if depth > MAX_DEPTH {
            return Err(Located {
                pos,
                error: YamlError::TooDeep,
            });
        }
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == ScalarStyle::Plain;
                let value = if plain && matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: text.into_owned(),
                        plain,
                    }
                };
                let node = Node { value, pos };
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::Alias(anchor) => match self.anchors.get(&anchor) {
                // The copy points at the alias, so a message about it names the line that
                // used it; the nodes inside keep their anchor's positions.
                Some(node) => Ok(Node {
                    value: node.value.clone(),
                    pos,
                }),
                None => Err(Located {
                    pos,
                    error: YamlError::UnknownAnchor,
                }),
            },
            Event::SequenceStart(anchor, _tag) => {
                let mut items = Vec::new();
                loop {
                    let (event, item_pos) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(event, item_pos, depth + 1)?);
                }
                let node = Node {
                    value: Value::Seq(items),
                    pos,
                };
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::MappingStart(anchor, _tag) => {
                let node = Node {
                    value: Value::Map(self.mapping(depth)?),
                    pos,
                };
                self.remember(anchor, &node);
                Ok(node)
            }
            other => Err(Located {
                pos,
                error: YamlError::Syntax {
                    info: format!("unexpected event {other:?}"),
                },
            }),
        }
    }

    fn mapping(&mut self, depth: usize) -> Result<Vec<(Node, Node)>, Located> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut merged: Vec<(Node, Node)> = Vec::new();
        loop {
            let (event, key_pos) = self.next()?;
            if matches!(event, Event::MappingEnd) {
                break;
            }
            let key = self.node(event, key_pos, depth + 1)?;
            let (event, value_pos) = self.next()?;
            let value = self.node(event, value_pos, depth + 1)?;
            let Some(text) = key.key_text() else {
                return Err(Located {
                    pos: key.pos,
                    error: YamlError::ComplexKey {
                        found: key.describe(),
                    },
                });
            };
            if text == "<<" && matches!(key.value, Value::Scalar { plain: true, .. }) {
                merge_into(&mut merged, value)?;
                continue;
            }
            if let Some((first, _)) = entries.iter().find(|(k, _)| k.key_text() == Some(text)) {
                return Err(Located {
                    pos: key.pos,
                    error: YamlError::DuplicateKey {
                        key: text.to_owned(),
                        first_line: first.pos.line,
                    },
                });
            }
            entries.push((key, value));
        }
        // Keys set in the mapping itself win over merged ones, wherever the `<<` stands.
        for (key, value) in merged {
            if !entries.iter().any(|(k, _)| k.key_text() == key.key_text()) {
                entries.push((key, value));
            }
        }
        Ok(entries)
    }
}

/// Adds the entries of a `<<` value to `merged`; an earlier merged mapping wins (YAML 1.1).
fn merge_into(merged: &mut Vec<(Node, Node)>, value: Node) -> Result<(), Located> {
    let maps = match value.value {
        Value::Map(entries) => vec![entries],
        Value::Seq(items) => {
            let mut maps = Vec::new();
            for item in items {
                match item.value {
                    Value::Map(entries) => maps.push(entries),
                    _ => {
                        return Err(Located {
                            pos: item.pos,
                            error: YamlError::BadMerge {
                                found: item.describe(),
                            },
                        });
                    }
                }
            }
            maps
        }
        _ => {
            return Err(Located {
                pos: value.pos,
                error: YamlError::BadMerge {
                    found: value.describe(),
                },
            });
        }
    };
    for entries in maps {
        for (key, value) in entries {
            if !merged.iter().any(|(k, _)| k.key_text() == key.key_text()) {
                merged.push((key, value));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[(Node, Node)] {
        match &node.value {
            Value::Map(entries) => entries,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let doc = load("name: lab\ntopology:\n  nodes:\n    r1: {kind: linux}\n")
            .unwrap()
            .unwrap();
        let entries = map(&doc);
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, column: 7 });
        let nodes = map(&map(&entries[1].1)[0].1);
        assert_eq!(nodes[0].0.pos, Pos { line: 4, column: 5 });
    }

    #[test]
    fn nulls_and_quoted_scalars() {
        let doc = load("a:\nb: ~\nc: 'null'\nd: 5\n").unwrap().unwrap();
        let e = map(&doc);
        assert_eq!(e[0].1.value, Value::Null);
        assert_eq!(e[1].1.value, Value::Null);
        assert_eq!(
            e[2].1.value,
            Value::Scalar {
                text: "null".into(),
                plain: false
            }
        );
        assert_eq!(
            e[3].1.value,
            Value::Scalar {
                text: "5".into(),
                plain: true
            }
        );
    }

    #[test]
    fn duplicate_key_names_both_lines() {
        let err = load("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, column: 1 });
        assert_eq!(
            err.error,
            YamlError::DuplicateKey {
                key: "a".into(),
                first_line: 1
            }
        );
    }

    #[test]
    fn aliases_and_merge_keys() {
        let doc = load("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\ncopy: *b\n")
            .unwrap()
            .unwrap();
        let e = map(&doc);
        let used = map(&e[1].1);
        let keys: Vec<_> = used.iter().map(|(k, _)| k.key_text().unwrap()).collect();
        assert_eq!(keys, ["y", "x"]);
        assert_eq!(
            used[0].1.value,
            Value::Scalar {
                text: "3".into(),
                plain: true
            }
        );
        assert_eq!(e[2].1.pos.line, 5);
        assert_eq!(map(&e[2].1).len(), 2);
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = load("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(
            matches!(err.error, YamlError::Unclosed { line: 1, .. }),
            "{err:?}"
        );
        assert!(err.pos.line >= 2, "{err:?}");
    }

    #[test]
    fn unclosed_bracket_is_pointed_at() {
        let text = "a:\n  - endpoints: [\"r1:eth1\", \"r2:eth1\"\n  - endpoints: [\"x\", \"y\"]\n";
        let err = load(text).unwrap_err();
        match err.error {
            YamlError::Unclosed {
                open, line, column, ..
            } => assert_eq!((open, line, column), ('[', 2, 16)),
            other => panic!("{other:?}"),
        }
        // Brackets inside quotes and comments do not count.
        assert_eq!(
            unclosed_before("a: \"[x\" # [\nb: [\n", Pos { line: 3, column: 1 }),
            Some(('[', Pos { line: 2, column: 4 }))
        );
        assert_eq!(
            unclosed_before("a: \"[x\" # [\n", Pos { line: 3, column: 1 }),
            None
        );
    }

    #[test]
    fn second_document_and_empty_stream() {
        assert_eq!(load("").unwrap(), None);
        let err = load("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.error, YamlError::SecondDocument);
        assert_eq!(err.pos.line, 2);
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let text = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(load(&text).unwrap_err().error, YamlError::TooDeep);
    }
}
