//! Parsing `nft -a list table|chain` text: chains with their rules (text and handle), maps
//! and sets with their elements.
//!
//! Text rather than JSON: Berth renders its rules in the canonical form nft prints, so a
//! rule it wrote compares equal to the listed line; and element keys print in a form nft
//! accepts back (`tcp . 8080`, `192.0.2.1 . tcp . 8080`, `"br0"`), which is what deleting an
//! element needs.

use std::collections::BTreeMap;

/// A listed rule: its text (without the `# handle` suffix) and handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    pub text: String,
    pub handle: u64,
    pub comment: Option<String>,
}

/// A listed map or set element: the key and data as printed (`jump x` for a verdict
/// map), and its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: String,
    pub comment: Option<String>,
    pub data: Option<String>,
}

impl Element {
    /// The chain a verdict map element jumps to.
    pub fn jump(&self) -> Option<&str> {
        let d = self.data.as_deref()?;
        d.strip_prefix("jump ").or_else(|| d.strip_prefix("goto "))
    }
}

/// What `nft -a list table inet berth` printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub present: bool,
    pub chains: BTreeMap<String, Vec<ListedRule>>,
    /// Maps and sets by name.
    pub maps: BTreeMap<String, Vec<Element>>,
}

impl Table {
    pub fn parse(text: &str) -> Table {
        let mut table = Table::default();
        let mut chain: Option<String> = None;
        let mut map: Option<String> = None;
        let mut elements: Option<String> = None;
        for raw in text.lines() {
            let line = raw.trim();
            if let Some(acc) = elements.as_mut() {
                acc.push(' ');
                acc.push_str(line);
                if line.ends_with('}') {
                    let text = elements.take().unwrap_or_default();
                    if let Some(name) = &map {
                        table
                            .maps
                            .entry(name.clone())
                            .or_default()
                            .extend(parse_elements(&text));
                    }
                }
                continue;
            }
            let (body, handle) = split_handle(line);
            if body.starts_with("table ") {
                table.present = true;
            } else if let Some(name) = block_name(body, "chain ") {
                table.chains.entry(name.clone()).or_default();
                chain = Some(name);
            } else if let Some(name) = block_name(body, "map ").or_else(|| block_name(body, "set "))
            {
                table.maps.entry(name.clone()).or_default();
                map = Some(name);
            } else if body == "}" {
                if map.take().is_none() {
                    chain = None;
                }
            } else if let (Some(name), Some(_)) = (&map, body.strip_prefix("elements = {")) {
                if body.ends_with('}') {
                    let parsed = parse_elements(body);
                    table.maps.entry(name.clone()).or_default().extend(parsed);
                } else {
                    elements = Some(body.to_owned());
                }
            } else if let (Some(name), Some(handle)) = (&chain, handle) {
                table
                    .chains
                    .entry(name.clone())
                    .or_default()
                    .push(ListedRule {
                        text: body.to_owned(),
                        handle,
                        comment: comment_of(body),
                    });
            }
        }
        table
    }

    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.contains_key(name)
    }

    pub fn rules(&self, chain: &str) -> &[ListedRule] {
        self.chains.get(chain).map_or(&[], Vec::as_slice)
    }

    pub fn has_map(&self, name: &str) -> bool {
        self.maps.contains_key(name)
    }

    pub fn elements(&self, map: &str) -> &[Element] {
        self.maps.get(map).map_or(&[], Vec::as_slice)
    }

    /// `(map, key)` of every element, in any map, that jumps to `chain`.
    pub fn elements_to<'a>(
        &'a self,
        chain: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Element)> + 'a {
        self.maps.iter().flat_map(move |(map, elems)| {
            elems
                .iter()
                .filter(move |e| e.jump() == Some(chain))
                .map(move |e| (map.as_str(), e))
        })
    }
}

/// `chain NAME {` → NAME.
fn block_name(line: &str, keyword: &str) -> Option<String> {
    let rest = line.strip_prefix(keyword)?;
    let name = rest.strip_suffix('{')?.trim();
    (!name.is_empty() && !name.contains(' ')).then(|| name.to_owned())
}

/// `text # handle 7` → (`text`, Some(7)).
fn split_handle(line: &str) -> (&str, Option<u64>) {
    match line.rsplit_once(" # handle ") {
        Some((body, handle)) => (body.trim_end(), handle.trim().parse().ok()),
        None => match line.strip_prefix("# handle ") {
            Some(handle) => ("", handle.trim().parse().ok()),
            None => (line, None),
        },
    }
}

/// The text of `comment "…"` at the end of a rule (our comments have no quotes).
fn comment_of(rule: &str) -> Option<String> {
    let start = rule.rfind(" comment \"")? + " comment \"".len();
    let rest = &rule[start..];
    let end = rest.find('"')?;
    Some(rest[..end].to_owned())
}

/// `elements = { a : jump x, b : jump y }` → elements. Commas inside quotes (interface
/// names may hold them) do not split.
fn parse_elements(text: &str) -> Vec<Element> {
    let Some(start) = text.find('{') else {
        return Vec::new();
    };
    let Some(end) = text.rfind('}') else {
        return Vec::new();
    };
    let inner = &text[start + 1..end];
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in inner.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => items.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    items.push(cur);
    items
        .iter()
        .map(|item| item.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (key, data) = match item.rsplit_once(" : ") {
                Some((key, data)) => (key.to_owned(), Some(data.to_owned())),
                None => (item, None),
            };
            let (key, comment) = match key.split_once(" comment \"") {
                Some((k, rest)) => (k.to_owned(), Some(rest.trim_end_matches('"').to_owned())),
                None => (key, None),
            };
            Element { key, comment, data }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "table inet berth { # handle 1
\tmap hp { # handle 1
\t\ttype inet_proto . inet_service : verdict
\t}

\tmap hp6 { # handle 2
\t\ttype ipv6_addr . inet_proto . inet_service : verdict
\t\telements = { fd00::1 . tcp . 80 : jump x,
\t\t\t     fd00::1 . udp . 80 comment \"berth a b c\" : jump x,
\t\t\t     fd00::1 . sctp . 81 : jump y }
\t}

\tset isolated { # handle 3
\t\ttype ifname
\t\telements = { \"br,0\", \"br1\" }
\t}

\tchain output { # handle 3
\t\ttype nat hook output priority -100; policy accept;
\t\tfib daddr type local jump hd # handle 5
\t}

\tchain x { # handle 10
\t\tmeta nfproto ipv6 tcp dport 8000-8002 dnat ip6 to fd00::5 comment \"berth a b c\" # handle 13
\t}

\tchain empty { # handle 11
\t}
}
";

    #[test]
    fn parses_chains_rules_and_elements() {
        let t = Table::parse(LISTING);
        assert!(t.present);
        assert_eq!(t.rules("output").len(), 1);
        assert_eq!(t.rules("output")[0].text, "fib daddr type local jump hd");
        assert_eq!(t.rules("output")[0].handle, 5);
        let x = &t.rules("x")[0];
        assert_eq!(x.comment.as_deref(), Some("berth a b c"));
        assert!(x.text.ends_with("comment \"berth a b c\""));
        assert!(t.has_chain("empty") && t.rules("empty").is_empty());
        assert!(t.has_map("hp") && t.elements("hp").is_empty());
        assert_eq!(
            t.elements("hp6"),
            [
                Element {
                    key: "fd00::1 . tcp . 80".into(),
                    comment: None,
                    data: Some("jump x".into())
                },
                Element {
                    key: "fd00::1 . udp . 80".into(),
                    comment: Some("berth a b c".into()),
                    data: Some("jump x".into())
                },
                Element {
                    key: "fd00::1 . sctp . 81".into(),
                    comment: None,
                    data: Some("jump y".into())
                },
            ]
        );
        assert_eq!(t.elements_to("x").count(), 2);
        let iso: Vec<&str> = t
            .elements("isolated")
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(iso, ["\"br,0\"", "\"br1\""]);
    }

    #[test]
    fn a_missing_table_is_empty() {
        let t = Table::parse("");
        assert!(!t.present && t.chains.is_empty());
    }

    #[test]
    fn single_line_elements() {
        let t = Table::parse(
            "table inet berth {\n\tmap m { # handle 2\n\t\ttype ipv4_addr : verdict\n\t\telements = { 10.0.0.1 : jump a }\n\t}\n}\n",
        );
        assert_eq!(
            t.elements("m"),
            [Element {
                key: "10.0.0.1".into(),
                comment: None,
                data: Some("jump a".into())
            }]
        );
    }
}
