//! Berth's extension to containerlab's format: link impairments declared in the topology.
//!
//! An `impairments` block on a link applies to both of its ends; one on an endpoint (the
//! extended link form) applies to that end and overrides the link's keys one by one. Every
//! value applies to the *egress* of the interface it is attached to, as
//! `containerlab tools netem set -i IF` and `tc qdisc … netem` do: a link with
//! `delay: 20ms` therefore delays each direction by 20 ms and adds 40 ms to a ping's RTT.
//!
//! The units are tc's (tc(8) "PARAMETERS"), so a value reads the same here and in
//! `tc qdisc add … netem delay 20ms rate 10mbit`.

use std::fmt;
use std::time::Duration;

/// The impairment keys, in the order they are written back.
pub const KEYS: &[&str] = &["delay", "jitter", "loss", "rate", "corrupt"];

/// Longest delay accepted; netem's own limit is larger, but more than a minute is a typo.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// A value that is not a valid impairment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImpairError {
    #[error(
        "invalid time {value:?}: expected a number and a unit of us, ms or s (tc's usec, msec, sec also), such as 20ms"
    )]
    Time { value: String },
    #[error("time {value:?} is longer than the 60s limit")]
    TimeTooLong { value: String },
    #[error(
        "invalid rate {value:?}: expected a number and one of tc's units bit, kbit, mbit, gbit, tbit, kibit…tibit, bps, kbps, mbps, gbps, tbps, kibps…tibps, such as 10mbit"
    )]
    Rate { value: String },
    #[error("rate {value:?} must be more than 0")]
    ZeroRate { value: String },
    #[error("invalid percentage {value:?}: expected a number from 0 to 100, such as 5% or 0.1%")]
    Percent { value: String },
    #[error("jitter {jitter} needs a delay: jitter varies the delay around its value")]
    JitterWithoutDelay { jitter: Delay },
}

/// A time as tc writes it, kept to the microsecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Delay(Duration);

impl Delay {
    pub fn duration(self) -> Duration {
        self.0
    }
}

/// Splits "12.5ms" into ("12.5", "ms"); the number may have a fraction.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..end], s[end..].trim_start())
}

/// Parses a non-negative decimal into an integer number of `scale`ths without floating
/// point, so "0.1" percent and "1.5" ms are exact. `None` for anything else, and for more
/// fractional digits than the scale can hold.
pub(crate) fn decimal(number: &str, scale: u64) -> Option<u64> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || frac.len() > 18
    {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(scale)?;
    if !frac.is_empty() {
        // frac / 10^digits of a unit, kept only when it is a whole number of `scale`ths.
        let digits: u128 = frac.parse().ok()?;
        let unit = 10u128.pow(u32::try_from(frac.len()).ok()?);
        let scaled = digits * u128::from(scale);
        if scaled % unit != 0 {
            return None;
        }
        value = value.checked_add(u64::try_from(scaled / unit).ok()?)?;
    }
    Some(value)
}

impl TryFrom<&str> for Delay {
    type Error = ImpairError;
    fn try_from(value: &str) -> Result<Self, ImpairError> {
        let bad = || ImpairError::Time {
            value: value.to_owned(),
        };
        let (number, unit) = split_number(value.trim());
        let micros_per_unit = match unit.to_ascii_lowercase().as_str() {
            "us" | "usec" | "usecs" | "µs" => 1,
            "ms" | "msec" | "msecs" => 1_000,
            "s" | "sec" | "secs" => 1_000_000,
            _ => return Err(bad()),
        };
        let micros = decimal(number, micros_per_unit).ok_or_else(bad)?;
        let delay = Duration::from_micros(micros);
        if delay > MAX_DELAY {
            return Err(ImpairError::TimeTooLong {
                value: value.to_owned(),
            });
        }
        Ok(Delay(delay))
    }
}

impl fmt::Display for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        if us != 0 && us % 1_000_000 == 0 {
            write!(f, "{}s", us / 1_000_000)
        } else if us % 1_000 == 0 {
            write!(f, "{}ms", us / 1_000)
        } else {
            write!(f, "{us}us")
        }
    }
}

/// A rate in bits per second, written with tc's units (SI for `kbit`, binary for `kibit`;
/// `bps` is *bytes* per second, as in tc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    pub fn bits_per_second(self) -> u64 {
        self.0
    }
}

impl TryFrom<&str> for Rate {
    type Error = ImpairError;
    fn try_from(value: &str) -> Result<Self, ImpairError> {
        let bad = || ImpairError::Rate {
            value: value.to_owned(),
        };
        let (number, unit) = split_number(value.trim());
        let unit = unit.to_ascii_lowercase();
        let bits: u64 = match unit.as_str() {
            // tc: "bit or a bare number: bits per second".
            "" | "bit" => 1,
            "kbit" => 1_000,
            "mbit" => 1_000_000,
            "gbit" => 1_000_000_000,
            "tbit" => 1_000_000_000_000,
            "kibit" => 1 << 10,
            "mibit" => 1 << 20,
            "gibit" => 1 << 30,
            "tibit" => 1 << 40,
            "bps" => 8,
            "kbps" => 8_000,
            "mbps" => 8_000_000,
            "gbps" => 8_000_000_000,
            "tbps" => 8_000_000_000_000,
            "kibps" => 8 << 10,
            "mibps" => 8 << 20,
            "gibps" => 8 << 30,
            "tibps" => 8 << 40,
            _ => return Err(bad()),
        };
        let rate = decimal(number, bits).ok_or_else(bad)?;
        if rate == 0 {
            return Err(ImpairError::ZeroRate {
                value: value.to_owned(),
            });
        }
        Ok(Rate(rate))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.0;
        for (unit, size) in [
            ("tbit", 1_000_000_000_000),
            ("gbit", 1_000_000_000),
            ("mbit", 1_000_000),
            ("kbit", 1_000),
        ] {
            if bits % size == 0 {
                return write!(f, "{}{unit}", bits / size);
            }
        }
        write!(f, "{bits}bit")
    }
}

/// A percentage from 0 to 100, kept in millionths of the whole (0.0001 % steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u32);

impl Percent {
    /// Parts per million: 5 % is 50 000.
    pub fn ppm(self) -> u32 {
        self.0
    }

    /// The percentage as a float, for tc's command line or a probability.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

impl TryFrom<&str> for Percent {
    type Error = ImpairError;
    fn try_from(value: &str) -> Result<Self, ImpairError> {
        let bad = || ImpairError::Percent {
            value: value.to_owned(),
        };
        let trimmed = value.trim();
        let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim_end();
        let ppm = decimal(number, 10_000).ok_or_else(bad)?;
        if ppm > 1_000_000 {
            return Err(bad());
        }
        Ok(Percent(u32::try_from(ppm).map_err(|_| bad())?))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int = self.0 / 10_000;
        let frac = self.0 % 10_000;
        if frac == 0 {
            write!(f, "{int}%")
        } else {
            let digits = format!("{frac:04}");
            write!(f, "{int}.{}%", digits.trim_end_matches('0'))
        }
    }
}

/// The impairments of one interface (or, on a link, of both of its ends).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Impairments {
    pub delay: Option<Delay>,
    pub jitter: Option<Delay>,
    pub loss: Option<Percent>,
    pub rate: Option<Rate>,
    pub corrupt: Option<Percent>,
}

impl Impairments {
    pub fn is_empty(&self) -> bool {
        *self == Impairments::default()
    }

    /// `self` with each key that `over` sets replaced by `over`'s value.
    pub fn overridden_by(&self, over: &Impairments) -> Impairments {
        Impairments {
            delay: over.delay.or(self.delay),
            jitter: over.jitter.or(self.jitter),
            loss: over.loss.or(self.loss),
            rate: over.rate.or(self.rate),
            corrupt: over.corrupt.or(self.corrupt),
        }
    }

    /// Checks the keys against each other (jitter needs a delay).
    pub fn check(&self) -> Result<(), ImpairError> {
        if let (Some(jitter), None) = (self.jitter, self.delay) {
            return Err(ImpairError::JitterWithoutDelay { jitter });
        }
        Ok(())
    }

    /// The arguments of `tc qdisc add dev IF root netem …` for these impairments, where the
    /// kernel has netem (`delay 20ms 2ms loss 5% rate 10mbit corrupt 0.1%`); empty when
    /// nothing is set. Kernels without netem need other mechanisms (tbf for the rate, a
    /// netdev drop rule for loss…): that choice belongs to the runtime.
    pub fn netem_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(d) = self.delay {
            args.push("delay".to_owned());
            args.push(d.to_string());
            if let Some(j) = self.jitter {
                args.push(j.to_string());
            }
        }
        if let Some(l) = self.loss {
            args.push("loss".to_owned());
            args.push(l.to_string());
        }
        if let Some(r) = self.rate {
            args.push("rate".to_owned());
            args.push(r.to_string());
        }
        if let Some(c) = self.corrupt {
            args.push("corrupt".to_owned());
            args.push(c.to_string());
        }
        args
    }

    /// The set keys and their values as written in a file, in [`KEYS`] order.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(d) = self.delay {
            out.push(("delay", d.to_string()));
        }
        if let Some(j) = self.jitter {
            out.push(("jitter", j.to_string()));
        }
        if let Some(l) = self.loss {
            out.push(("loss", l.to_string()));
        }
        if let Some(r) = self.rate {
            out.push(("rate", r.to_string()));
        }
        if let Some(c) = self.corrupt {
            out.push(("corrupt", c.to_string()));
        }
        out
    }
}

/// One line of text for a picture or a table: `delay 20ms±2ms loss 5% rate 10mbit`.
impl fmt::Display for Impairments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        match (self.delay, self.jitter) {
            (Some(d), Some(j)) => parts.push(format!("delay {d}±{j}")),
            (Some(d), None) => parts.push(format!("delay {d}")),
            (None, Some(j)) => parts.push(format!("jitter {j}")),
            (None, None) => {}
        }
        if let Some(l) = self.loss {
            parts.push(format!("loss {l}"));
        }
        if let Some(r) = self.rate {
            parts.push(format!("rate {r}"));
        }
        if let Some(c) = self.corrupt {
            parts.push(format!("corrupt {c}"));
        }
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays() {
        assert_eq!(
            Delay::try_from("20ms").unwrap().duration(),
            Duration::from_millis(20)
        );
        assert_eq!(
            Delay::try_from("1.5ms").unwrap().duration(),
            Duration::from_micros(1500)
        );
        assert_eq!(Delay::try_from("1.5ms").unwrap().to_string(), "1500us");
        assert_eq!(Delay::try_from("2 sec").unwrap().to_string(), "2s");
        assert_eq!(Delay::try_from("0ms").unwrap().to_string(), "0ms");
        for bad in ["20", "20min", "ms", "-1ms", "1.2.3ms", "0.0001ms"] {
            assert!(
                matches!(Delay::try_from(bad), Err(ImpairError::Time { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Delay::try_from("61s"),
            Err(ImpairError::TimeTooLong { .. })
        ));
    }

    #[test]
    fn rates_use_tc_units() {
        let bits = |s: &str| Rate::try_from(s).unwrap().bits_per_second();
        assert_eq!(bits("10mbit"), 10_000_000);
        assert_eq!(bits("1Gbit"), 1_000_000_000);
        assert_eq!(bits("1.5mbit"), 1_500_000);
        assert_eq!(bits("1kibit"), 1024);
        assert_eq!(bits("100kbps"), 800_000);
        assert_eq!(bits("64000"), 64_000);
        assert_eq!(Rate::try_from("10mbit").unwrap().to_string(), "10mbit");
        assert_eq!(Rate::try_from("100kbps").unwrap().to_string(), "800kbit");
        assert!(matches!(
            Rate::try_from("10mb"),
            Err(ImpairError::Rate { .. })
        ));
        assert!(matches!(
            Rate::try_from("0mbit"),
            Err(ImpairError::ZeroRate { .. })
        ));
    }

    #[test]
    fn percentages() {
        assert_eq!(Percent::try_from("5%").unwrap().ppm(), 50_000);
        assert_eq!(Percent::try_from("0.1%").unwrap().ppm(), 1_000);
        assert_eq!(Percent::try_from("0.1%").unwrap().to_string(), "0.1%");
        assert_eq!(Percent::try_from("100").unwrap().to_string(), "100%");
        for bad in ["101%", "-1%", "five", "5%%"] {
            assert!(Percent::try_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoint_keys_override_link_keys() {
        let link = Impairments {
            delay: Some(Delay::try_from("10ms").unwrap()),
            loss: Some(Percent::try_from("1%").unwrap()),
            ..Impairments::default()
        };
        let end = Impairments {
            delay: Some(Delay::try_from("30ms").unwrap()),
            ..Impairments::default()
        };
        let eff = link.overridden_by(&end);
        assert_eq!(eff.to_string(), "delay 30ms loss 1%");
        assert_eq!(
            link.overridden_by(&end).netem_args(),
            ["delay", "30ms", "loss", "1%"]
        );
        let all = Impairments {
            delay: Some(Delay::try_from("20ms").unwrap()),
            jitter: Some(Delay::try_from("2ms").unwrap()),
            loss: Some(Percent::try_from("5%").unwrap()),
            rate: Some(Rate::try_from("10mbit").unwrap()),
            corrupt: Some(Percent::try_from("0.1%").unwrap()),
        };
        assert_eq!(
            all.netem_args().join(" "),
            "delay 20ms 2ms loss 5% rate 10mbit corrupt 0.1%"
        );
        assert!(Impairments::default().netem_args().is_empty());
        let jitter_only = Impairments {
            jitter: Some(Delay::try_from("2ms").unwrap()),
            ..Impairments::default()
        };
        assert!(jitter_only.check().is_err());
    }
}
