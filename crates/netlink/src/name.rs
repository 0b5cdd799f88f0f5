//! Interface names as the kernel reads them. Some characters are not names but instructions:
//! `%` makes the kernel expand a template (`veth%d` becomes `veth0`, a link nobody asked for
//! under a name nobody will look for), and `dev_valid_name` refuses `/`, `:`, whitespace, `.`
//! and `..` and 16 bytes or more. A NUL would cut the name short on its way in. Every name
//! this crate sends for a new link or a rename passes [`check_ifname`] first, and `berth-cni`
//! checks `CNI_IFNAME` with the same function, so the rule exists once.

/// `IFNAMSIZ` less the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

/// Why a string cannot be an interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfNameError {
    #[error("interface name is empty")]
    Empty,
    #[error("interface name {0:?} is longer than {MAX_IFNAME_LEN} bytes")]
    TooLong(String),
    #[error("interface name {0:?} is '.' or '..'")]
    Dots(String),
    #[error("interface name {name:?} contains {what}, which the kernel does not allow in a name")]
    BadChar { name: String, what: &'static str },
    #[error(
        "interface name {0:?} contains '%', which the kernel expands as a name template (eth%d -> eth0)"
    )]
    Template(String),
}

/// Checks `name` against what the kernel refuses or interprets (see the module docs).
pub fn check_ifname(name: &str) -> Result<(), IfNameError> {
    if name.is_empty() {
        return Err(IfNameError::Empty);
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(IfNameError::TooLong(name.to_owned()));
    }
    if name == "." || name == ".." {
        return Err(IfNameError::Dots(name.to_owned()));
    }
    if name.contains('%') {
        return Err(IfNameError::Template(name.to_owned()));
    }
    // The kernel's isspace(): space, \t, \n, \v, \f, \r.
    let bad = name.bytes().find_map(|b| match b {
        b'/' => Some("'/'"),
        b':' => Some("':'"),
        b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' => Some("whitespace"),
        0 => Some("a NUL byte"),
        _ => None,
    });
    match bad {
        Some(what) => Err(IfNameError::BadChar {
            name: name.to_owned(),
            what,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_rules() {
        for ok in ["eth0", "a23456789012345", "veth-x_1.2", "é"] {
            assert_eq!(check_ifname(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(check_ifname(""), Err(IfNameError::Empty));
        assert!(matches!(
            check_ifname("a234567890123456"),
            Err(IfNameError::TooLong(_))
        ));
        for dots in [".", ".."] {
            assert!(matches!(check_ifname(dots), Err(IfNameError::Dots(_))));
        }
        for template in ["%d", "veth%d", "a%"] {
            assert!(
                matches!(check_ifname(template), Err(IfNameError::Template(_))),
                "{template:?}"
            );
        }
        for bad in [
            "a/b", "a:b", "a b", "a\tb", "a\nb", "a\u{b}b", "a\u{c}b", "a\rb", "a\0b",
        ] {
            assert!(
                matches!(check_ifname(bad), Err(IfNameError::BadChar { .. })),
                "{bad:?}"
            );
        }
    }
}
