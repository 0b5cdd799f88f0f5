//! The interface attributes: MAC, promiscuous mode, MTU, all-multicast mode, transmit queue
//! length. ADD saves what it is about to change and changes it (each step with its undo), DEL
//! puts the saved values back, CHECK compares.

use berth_netlink::{Link, LinkError, Netlink, Rollback, format_mac};

use crate::config::{Attrs, parse_mac};
use crate::state::Saved;

/// CHECK: an attribute is not what the configuration asks for.
#[derive(Debug, thiserror::Error)]
#[error("{attr} of {ifname} is {got}, configured {want}")]
pub struct Mismatch {
    pub ifname: String,
    pub attr: &'static str,
    pub want: String,
    pub got: String,
}

/// DEL: a saved value that cannot be put back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("saved mac {value:?} is not a usable address: {reason}")]
    BadMac { value: String, reason: &'static str },
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Whether the kernel takes `mac` as a link's address (`set_mac`): not multicast, not all
/// zeros. A link may still *have* such an address (`lo`), which then cannot be put back.
pub fn assignable(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

/// The current values of the attributes `attrs` changes: what DEL must put back.
pub fn snapshot(link: &Link, attrs: &Attrs) -> Saved {
    Saved {
        mac: attrs.mac.and(link.mac).map(|m| format_mac(&m)),
        promisc: attrs.promisc.then_some(link.promisc),
        mtu: attrs.mtu.map(|_| link.mtu),
        allmulti: attrs.allmulti.map(|_| link.allmulti),
        tx_q_len: attrs.txqlen.map(|_| link.txqlen),
        ..Saved::default()
    }
}

/// Changes the attributes in the reference's order (MAC, promiscuous, MTU, all-multicast, then
/// the queue length), registering the old value of each in `rb` right after it changed.
pub fn apply<'a>(
    nl: &'a Netlink,
    link: &Link,
    attrs: &Attrs,
    rb: &mut Rollback<'a>,
) -> Result<(), LinkError> {
    let index = link.index;
    if let Some(mac) = attrs.mac {
        nl.set_mac(index, mac)?;
        if let Some(old) = link.mac {
            rb.push(format!("put mac {} back", format_mac(&old)), move || {
                nl.set_mac(index, old)
            });
        }
    }
    if attrs.promisc {
        nl.set_promisc(index, true)?;
        let old = link.promisc;
        rb.push("put promiscuous mode back", move || {
            nl.set_promisc(index, old)
        });
    }
    if let Some(mtu) = attrs.mtu {
        nl.set_mtu(index, mtu)?;
        let old = link.mtu;
        rb.push(format!("put mtu {old} back"), move || {
            nl.set_mtu(index, old)
        });
    }
    if let Some(on) = attrs.allmulti {
        nl.set_allmulti(index, on)?;
        let old = link.allmulti;
        rb.push("put all-multicast mode back", move || {
            nl.set_allmulti(index, old)
        });
    }
    if let Some(len) = attrs.txqlen {
        nl.set_txqlen(index, len)?;
        let old = link.txqlen;
        rb.push(format!("put txqlen {old} back"), move || {
            nl.set_txqlen(index, old)
        });
    }
    Ok(())
}

/// Puts `saved` back on link `index`, in the reference's order (MTU, MAC, promiscuous,
/// all-multicast, queue length). Keeps going after a failure; returns every failure.
pub fn restore(nl: &Netlink, index: u32, saved: &Saved) -> Vec<RestoreError> {
    let mut errors = Vec::new();
    if let Some(mtu) = saved.mtu.filter(|m| *m != 0) {
        errors.extend(nl.set_mtu(index, mtu).err().map(RestoreError::from));
    }
    if let Some(value) = saved.mac.as_deref().filter(|m| !m.is_empty()) {
        match parse_mac(value) {
            Ok(mac) => errors.extend(nl.set_mac(index, mac).err().map(RestoreError::from)),
            Err(reason) => errors.push(RestoreError::BadMac {
                value: value.to_owned(),
                reason,
            }),
        }
    }
    if let Some(on) = saved.promisc {
        errors.extend(nl.set_promisc(index, on).err().map(RestoreError::from));
    }
    if let Some(on) = saved.allmulti {
        errors.extend(nl.set_allmulti(index, on).err().map(RestoreError::from));
    }
    if let Some(len) = saved.tx_q_len {
        errors.extend(nl.set_txqlen(index, len).err().map(RestoreError::from));
    }
    errors
}

/// CHECK: the link has every configured value. `promisc: false` is not checked: ADD never
/// turns promiscuous mode off, so it cannot promise that it is off (the reference fails CHECK
/// there when something else turned it on).
pub fn check(link: &Link, attrs: &Attrs) -> Result<(), Mismatch> {
    let mismatch = |attr, want: String, got: String| Mismatch {
        ifname: link.name.clone(),
        attr,
        want,
        got,
    };
    if let Some(mac) = attrs.mac {
        if link.mac != Some(mac) {
            let got = link
                .mac
                .map_or_else(|| "none".to_owned(), |m| format_mac(&m));
            return Err(mismatch("mac", format_mac(&mac), got));
        }
    }
    if attrs.promisc && !link.promisc {
        return Err(mismatch("promiscuous mode", "on".into(), "off".into()));
    }
    if let Some(mtu) = attrs.mtu.filter(|m| *m != link.mtu) {
        return Err(mismatch("mtu", mtu.to_string(), link.mtu.to_string()));
    }
    if let Some(on) = attrs.allmulti.filter(|on| *on != link.allmulti) {
        return Err(mismatch(
            "all-multicast mode",
            on.to_string(),
            link.allmulti.to_string(),
        ));
    }
    if let Some(len) = attrs.txqlen.filter(|l| *l != link.txqlen) {
        return Err(mismatch("txqlen", len.to_string(), link.txqlen.to_string()));
    }
    Ok(())
}
