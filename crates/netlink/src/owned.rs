//! Links that belong to someone: created under the first free name of a candidate list and
//! marked with the owner's alias (`IFLA_IFALIAS`), found again by that alias among the same
//! candidates. A name derived from a hash can collide with another owner's; the alias tells
//! the two apart, so a collision costs a second name instead of a failed ADD, and a DEL never
//! deletes a link that merely has the expected name.

use crate::link::{Link, LinkError, VethPair};
use crate::netlink::Netlink;
use crate::socket::Errno;

/// A link's candidate names, in order, and the alias that marks it as its owner's.
#[derive(Debug, Clone, Copy)]
pub struct OwnedName<'a> {
    pub candidates: &'a [String],
    pub alias: &'a str,
}

impl Netlink {
    /// Creates `pair` (its `name` is ignored) under the first candidate that is not held by
    /// another owner, and sets the alias on this end. A candidate held by a link without this
    /// alias is skipped; a candidate held by this owner's own link is EEXIST, as is the peer's
    /// name being taken. Returns this end, alias included.
    pub fn add_owned_veth_pair(
        &self,
        name: OwnedName<'_>,
        pair: &VethPair<'_>,
    ) -> Result<Link, LinkError> {
        for candidate in name.candidates {
            let pair = VethPair {
                name: candidate,
                ..*pair
            };
            match self.add_veth_pair(&pair) {
                Ok(mut link) => {
                    if let Err(e) = self.set_alias(link.index, name.alias) {
                        // Unmarked, the link would look like a stranger's to DEL: undo it.
                        let _ = self.del_link(link.index);
                        return Err(e);
                    }
                    link.alias = Some(name.alias.to_owned());
                    return Ok(link);
                }
                Err(e) if e.is_exists() => match self.link_by_name(candidate)? {
                    // Another owner's link (or one whose owner never marked it): next name.
                    Some(held) if held.alias.as_deref() != Some(name.alias) => continue,
                    // Ours already, or the candidate is free and the peer's name is taken.
                    _ => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        Err(LinkError::NamesTaken {
            names: name.candidates.join(", "),
            netns: self.label(),
        })
    }

    /// The owner's link among the candidates, if it exists. Every candidate is looked at: an
    /// earlier one may have been freed since the link was created under a later one.
    pub fn owned_link(&self, name: OwnedName<'_>) -> Result<Option<Link>, LinkError> {
        for candidate in name.candidates {
            if let Some(link) = self.link_by_name(candidate)?
                && link.alias.as_deref() == Some(name.alias)
            {
                return Ok(Some(link));
            }
        }
        Ok(None)
    }
}
