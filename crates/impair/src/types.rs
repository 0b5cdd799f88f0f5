//! What an impairment is: the five netem keys, in typed units.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A share from 0 to 100 %, kept in parts per million (0.0001 % steps), as berth-topology
/// parses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Percent(u32);

impl Percent {
    /// `None` above 1 000 000 (100 %).
    pub fn from_ppm(ppm: u32) -> Option<Percent> {
        (ppm <= 1_000_000).then_some(Percent(ppm))
    }

    /// Whole percent: `Percent::whole(5)` is 5 %. `None` above 100.
    pub fn whole(percent: u32) -> Option<Percent> {
        percent.checked_mul(10_000).and_then(Percent::from_ppm)
    }

    pub fn ppm(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Percent {
    type Error = String;
    fn try_from(ppm: u32) -> Result<Self, String> {
        Percent::from_ppm(ppm).ok_or_else(|| format!("{ppm} parts per million is more than 100%"))
    }
}

impl From<Percent> for u32 {
    fn from(p: Percent) -> u32 {
        p.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / 10_000, self.0 % 10_000);
        if frac == 0 {
            write!(f, "{int}%")
        } else {
            write!(f, "{int}.{}%", format!("{frac:04}").trim_end_matches('0'))
        }
    }
}

/// A rate in bits per second, more than 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Rate(u64);

impl Rate {
    /// `None` for 0.
    pub fn bits_per_second(bits: u64) -> Option<Rate> {
        (bits > 0).then_some(Rate(bits))
    }

    pub fn bits(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Rate {
    type Error = &'static str;
    fn try_from(bits: u64) -> Result<Self, &'static str> {
        Rate::bits_per_second(bits).ok_or("a rate must be more than 0 bit/s")
    }
}

impl From<Rate> for u64 {
    fn from(r: Rate) -> u64 {
        r.0
    }
}

/// The impairments of one interface's egress, as `tc qdisc … netem` takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Impairment {
    #[serde(default, with = "micros", skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    #[serde(default, with = "micros", skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<Percent>,
}

impl Impairment {
    pub fn is_empty(&self) -> bool {
        *self == Impairment::default()
    }

    /// Whether frames need the delay line (or netem): a delay, a jitter or corruption.
    pub fn needs_delay_line(&self) -> bool {
        self.delay.is_some_and(|d| !d.is_zero())
            || self.jitter.is_some_and(|j| !j.is_zero())
            || self.corrupt.is_some_and(|c| c.ppm() > 0)
    }
}

/// berth-topology's parsed `impairments` block, as applied to one end.
impl From<&berth_topology::Impairments> for Impairment {
    fn from(t: &berth_topology::Impairments) -> Impairment {
        Impairment {
            delay: t.delay.map(|d| d.duration()),
            jitter: t.jitter.map(|j| j.duration()),
            // berth-topology's percentages are at most 1 000 000 ppm already;
            // `from_ppm` keeps the check rather than trusting it.
            loss: t.loss.and_then(|l| Percent::from_ppm(l.ppm())),
            rate: t
                .rate
                .and_then(|r| Rate::bits_per_second(r.bits_per_second())),
            corrupt: t.corrupt.and_then(|c| Percent::from_ppm(c.ppm())),
        }
    }
}

/// `delay 20ms±2ms loss 5% rate 10000000bit/s`.
impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(d) = self.delay {
            match self.jitter {
                Some(j) => parts.push(format!("delay {d:?}±{j:?}")),
                None => parts.push(format!("delay {d:?}")),
            }
        }
        if let Some(l) = self.loss {
            parts.push(format!("loss {l}"));
        }
        if let Some(r) = self.rate {
            parts.push(format!("rate {}bit/s", r.bits()));
        }
        if let Some(c) = self.corrupt {
            parts.push(format!("corrupt {c}"));
        }
        if parts.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&parts.join(" "))
    }
}

/// Durations as whole microseconds in the state file.
mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_micros))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn from_topology_keeps_every_key() {
        let t = berth_topology::Impairments {
            delay: Some(berth_topology::Delay::try_from("20ms").unwrap()),
            jitter: Some(berth_topology::Delay::try_from("2ms").unwrap()),
            loss: Some(berth_topology::Percent::try_from("5%").unwrap()),
            rate: Some(berth_topology::Rate::try_from("10mbit").unwrap()),
            corrupt: Some(berth_topology::Percent::try_from("0.1%").unwrap()),
        };
        let i = Impairment::from(&t);
        assert_eq!(i.delay, Some(Duration::from_millis(20)));
        assert_eq!(i.jitter, Some(Duration::from_millis(2)));
        assert_eq!(i.loss, Percent::whole(5));
        assert_eq!(i.rate.map(Rate::bits), Some(10_000_000));
        assert_eq!(i.corrupt.map(Percent::ppm), Some(1_000));
        assert!(i.needs_delay_line());
        let json = serde_json::to_string(&i).unwrap();
        assert_eq!(
            json,
            r#"{"delay":20000,"jitter":2000,"loss":50000,"rate":10000000,"corrupt":1000}"#
        );
        assert_eq!(serde_json::from_str::<Impairment>(&json).unwrap(), i);
        assert!(serde_json::from_str::<Impairment>(r#"{"loss":1000001}"#).is_err());
        assert!(serde_json::from_str::<Impairment>(r#"{"rate":0}"#).is_err());
    }
}
