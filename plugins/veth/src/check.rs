//! CHECK: compare what is on the system with what ADD would have set up for `prevResult`, and
//! report every difference, not just the first.

use std::fmt::Write as _;

use berth_netlink::{Errno, IpFamily, Link, Netlink, Route, error_chain, format_mac};

use crate::pair;
use crate::routing::EndPlan;

/// What CHECK found wrong. A struct rather than an enum: its one "variant" is a list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CHECK found {}: {}", plural(.problems.len()), .problems.join("; "))]
pub struct CheckError {
    pub problems: Vec<String>,
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 problem".to_owned()
    } else {
        format!("{n} problems")
    }
}

/// What a link must look like.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect<'a> {
    pub mtu: Option<u32>,
    /// As `prevResult` reports it (`aa:bb:…`), or the mark of a peer end.
    pub mac: Option<&'a str>,
}

/// The problems found so far.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    pub fn extend(&mut self, problems: impl IntoIterator<Item = String>) {
        self.0.extend(problems);
    }

    pub fn finish(self) -> Result<(), CheckError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CheckError { problems: self.0 })
        }
    }

    /// The link `name`, if it exists and is a veth; its state is checked against `expect`.
    pub fn link(&mut self, nl: &Netlink, name: &str, expect: Expect<'_>) -> Option<Link> {
        let link = match pair::lookup(nl, name) {
            Ok(Some(link)) => link,
            Ok(None) => {
                self.push(format!("interface {name} is missing in {}", nl.netns()));
                return None;
            }
            Err(e) => {
                self.push(error_chain(&e));
                return None;
            }
        };
        let mut wrong = String::new();
        if !pair::is_veth(&link) {
            let kind = link.kind.as_deref().unwrap_or("none");
            let _ = write!(wrong, " is not a veth (kind {kind})");
        }
        if !link.up {
            wrong.push_str(" is down");
        }
        if let Some(mtu) = expect.mtu.filter(|m| *m != link.mtu) {
            let _ = write!(wrong, " has mtu {} instead of {mtu}", link.mtu);
        }
        let actual_mac = link.mac.as_ref().map(format_mac);
        if let Some(mac) = expect.mac {
            if actual_mac.as_deref() != Some(&mac.to_ascii_lowercase()) {
                let shown = actual_mac.as_deref().unwrap_or("none");
                let _ = write!(wrong, " has mac {shown} instead of {mac}");
            }
        }
        if !wrong.is_empty() {
            self.push(format!("interface {name} in {}{wrong}", nl.netns()));
        }
        Some(link)
    }

    /// `a` and `b` (in two namespaces) are the two ends of one veth pair.
    pub fn pair(&mut self, a: &Link, b: &Link) {
        if a.link_index != Some(b.index) || b.link_index != Some(a.index) {
            self.push(format!(
                "{} and {} are not the two ends of one veth pair",
                a.name, b.name
            ));
        }
    }

    /// The plan's addresses are on `link`.
    pub fn addrs(&mut self, nl: &Netlink, link: &Link, plan: &EndPlan) {
        let actual = match nl.addrs(Some(link.index)) {
            Ok(addrs) => addrs,
            Err(e) => return self.push(error_chain(&e)),
        };
        for want in &plan.addrs {
            if !actual.iter().any(|a| a.net == *want) {
                self.push(format!(
                    "address {want} is missing on {} in {}",
                    link.name,
                    nl.netns()
                ));
            }
        }
    }

    /// The plan's routes exist (matched on destination, gateway, interface and table).
    pub fn routes(&mut self, nl: &Netlink, link: &Link, plan: &EndPlan) {
        let mut tables: Vec<(IpFamily, Option<u32>, Vec<Route>)> = Vec::new();
        for want in &plan.routes {
            let family = IpFamily::of(want.dst.ip());
            let index = match tables
                .iter()
                .position(|(f, t, _)| *f == family && *t == want.table)
            {
                Some(i) => i,
                None => match nl.routes(family, want.table) {
                    Ok(routes) => {
                        tables.push((family, want.table, routes));
                        tables.len() - 1
                    }
                    Err(e) if e.is_not_found() => {
                        tables.push((family, want.table, Vec::new()));
                        tables.len() - 1
                    }
                    Err(e) => {
                        self.push(error_chain(&e));
                        continue;
                    }
                },
            };
            let found = tables[index]
                .2
                .iter()
                .any(|r| r.dst == want.dst && r.gateway == want.gateway && r.oif == want.oif);
            if !found {
                self.push(format!(
                    "route {} is missing in {}",
                    shown(want, &link.name),
                    nl.netns()
                ));
            }
        }
    }
}

/// A route as `ip route` would show it, with the interface's name instead of its index.
fn shown(route: &Route, name: &str) -> String {
    let mut s = route.dst.to_string();
    if let Some(gw) = route.gateway {
        let _ = write!(s, " via {gw}");
    }
    let _ = write!(s, " dev {name}");
    if let Some(table) = route.table {
        let _ = write!(s, " table {table}");
    }
    s
}
