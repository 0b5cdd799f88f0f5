//! JSON read the way Go's `encoding/json` reads it, for every configuration Berth accepts.
//!
//! The reference plugins, libcni and the runtimes that feed them are Go programs, and Go
//! matches object keys to struct fields **case-insensitively** (an exact match first): the
//! reference accepts `"IPMasq"` for `ipMasq`, and containerd 1.6 really sends
//! `{"HostPort":…,"ContainerPort":…}` (a Go struct without json tags). Every configuration a
//! user or a Go client ever wrote for the reference was written against that rule, so a
//! drop-in must read them the same way.
//!
//! The rule lives here once: [`from_value`] deserializes through [`GoValue`], a deserializer
//! over a `serde_json::Value` that renames an object's keys to the struct's own field names
//! whenever serde asks for a struct (`deserialize_struct` names the fields), and wraps nested
//! values so the rule holds at every depth. Config types need nothing but plain serde derives
//! — no per-field aliases — with one restriction: no `#[serde(flatten)]`, whose fields serde
//! matches from a private buffer this wrapper cannot reach (`NetConf` therefore reads the
//! plugin's keys in a second pass over the same object).
//!
//! What else Go does and this keeps:
//! - a key matching no field is ignored (unless the type denies unknown fields);
//! - when several keys land on one field (`"mtu"` and `"MTU"`), the last one wins;
//! - `null` for a field leaves it at its default, as Go leaves the zero value;
//! - map keys (`capabilities`, `sysctl`, …) are data, never folded; enum variants and other
//!   string *values* are compared exactly, as the reference compares them;
//! - value types stay strict: `"mtu": "1500"` is refused, as Go refuses it ("cannot unmarshal
//!   string into … of type int").

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde_json::{Map, Value};

/// Deserializes `T` from `value` with Go's key matching (see the module docs).
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(GoValue(value))
}

/// [`from_value`] from bytes: malformed JSON fails as in `serde_json::from_slice`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let value: Value = serde_json::from_slice(bytes)?;
    from_value(&value)
}

/// The value Go would decode into a field named `key`: the last entry whose key equals `key`
/// or folds to it. For code that reads one key of an untyped object.
pub fn get<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object
        .iter()
        .rev()
        .find(|(k, _)| fold_eq(k, key))
        .map(|(_, v)| v)
}

/// [`get`] for changing the value in place.
pub fn get_mut<'a>(object: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Value> {
    object
        .iter_mut()
        .rev()
        .find(|(k, _)| fold_eq(k, key))
        .map(|(_, v)| v)
}

/// Go's `bytes.EqualFold` on UTF-8: equal under simple Unicode case folding, so `K` (Kelvin
/// sign) matches `k` and `ſ` (long s) matches `s`, as they do in Go.
pub fn fold_eq(a: &str, b: &str) -> bool {
    if a.len() == b.len() && a.eq_ignore_ascii_case(b) {
        return true;
    }
    if a.is_ascii() && b.is_ascii() {
        return false;
    }
    let fold = |c: char| c.to_uppercase().flat_map(char::to_lowercase);
    a.chars().flat_map(fold).eq(b.chars().flat_map(fold))
}

/// The field a key decodes into: the field of that exact name, else the first field equal to
/// it under case folding, else none (the key is unknown to the struct).
fn field_for<'f>(key: &str, fields: &[&'f str]) -> Option<&'f str> {
    fields
        .iter()
        .find(|f| **f == key)
        .or_else(|| fields.iter().find(|f| fold_eq(f, key)))
        .copied()
}

/// An object's entries as a struct with `fields` sees them: keys renamed to their fields,
/// `null` entries dropped, and of several keys landing on one field only the last kept.
fn struct_entries<'a>(object: &'a Map<String, Value>, fields: &[&str]) -> Vec<(String, &'a Value)> {
    let mut out: Vec<(String, &'a Value)> = Vec::with_capacity(object.len());
    for (key, value) in object {
        if value.is_null() {
            continue;
        }
        let name = field_for(key, fields).unwrap_or(key.as_str());
        if let Some(slot) = out.iter_mut().find(|(k, _)| k == name) {
            slot.1 = value;
        } else {
            out.push((name.to_owned(), value));
        }
    }
    out
}

/// A `serde_json::Value` read with Go's key matching. Everything but structs, options,
/// sequences and maps is handed to the `Value` itself.
#[derive(Clone, Copy)]
pub struct GoValue<'a>(pub &'a Value);

struct Entries<'a, I: Iterator<Item = (String, &'a Value)>> {
    iter: I,
    pending: Option<&'a Value>,
}

impl<'de, I: Iterator<Item = (String, &'de Value)>> MapAccess<'de> for Entries<'de, I> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((key, value)) => {
                self.pending = Some(value);
                seed.deserialize(key.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.pending.take() {
            Some(value) => seed.deserialize(GoValue(value)),
            None => Err(de::Error::custom("value requested before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.iter.size_hint().1
    }
}

struct Elements<'a> {
    iter: std::slice::Iter<'a, Value>,
}

impl<'de> SeqAccess<'de> for Elements<'de> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.iter
            .next()
            .map(|value| seed.deserialize(GoValue(value)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

fn visit_array<'de, V: Visitor<'de>>(
    array: &'de [Value],
    visitor: V,
) -> Result<V::Value, serde_json::Error> {
    let mut seq = Elements { iter: array.iter() };
    let value = visitor.visit_seq(&mut seq)?;
    match seq.iter.len() {
        0 => Ok(value),
        _ => Err(de::Error::invalid_length(array.len(), &"fewer elements")),
    }
}

fn visit_object<'de, V: Visitor<'de>>(
    entries: impl Iterator<Item = (String, &'de Value)>,
    visitor: V,
) -> Result<V::Value, serde_json::Error> {
    visitor.visit_map(Entries {
        iter: entries,
        pending: None,
    })
}

macro_rules! forward_to_value {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.0.$method(visitor)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for GoValue<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(array) => visit_array(array, visitor),
            Value::Object(object) => {
                visit_object(object.iter().map(|(k, v)| (k.clone(), v)), visitor)
            }
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(array) => visit_array(array, visitor),
            other => other.deserialize_seq(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            // Map keys are data (capability names, sysctl keys): never folded.
            Value::Object(object) => {
                visit_object(object.iter().map(|(k, v)| (k.clone(), v)), visitor)
            }
            other => other.deserialize_map(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(object) => {
                visit_object(struct_entries(object, fields).into_iter(), visitor)
            }
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    forward_to_value! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Mapping {
        host_port: u16,
        container_port: u16,
        #[serde(default)]
        protocol: String,
        #[serde(default, rename = "hostIP")]
        host_ip: String,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Conf {
        #[serde(default)]
        is_gateway: bool,
        #[serde(default)]
        ip_masq: bool,
        #[serde(default)]
        mtu: Option<u32>,
        #[serde(default)]
        mappings: Vec<Mapping>,
        #[serde(default)]
        nested: Option<Box<Conf>>,
        #[serde(default)]
        sysctl: BTreeMap<String, String>,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Bridge,
    }

    #[test]
    fn containerd_port_mappings_with_capitalised_keys() {
        let wire =
            json!([{"HostPort": 18081, "ContainerPort": 8081, "Protocol": "tcp", "HostIP": ""}]);
        let got: Vec<Mapping> = from_value(&wire).unwrap();
        assert_eq!(
            got,
            vec![Mapping {
                host_port: 18081,
                container_port: 8081,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }]
        );
    }

    #[test]
    fn keys_fold_at_every_depth_but_map_keys_and_values_do_not() {
        let conf: Conf = from_value(&json!({
            "IsGateway": true, "IPMASQ": true, "MTU": 1400,
            "Nested": {"ipmasq": true, "Mappings": [{"hostport": 1, "CONTAINERPORT": 2}]},
            "Sysctl": {"Net.Core.X": "1"},
        }))
        .unwrap();
        assert!(conf.is_gateway && conf.ip_masq);
        assert_eq!(conf.mtu, Some(1400));
        let nested = conf.nested.unwrap();
        assert!(nested.ip_masq);
        assert_eq!(nested.mappings[0].host_port, 1);
        assert_eq!(nested.mappings[0].container_port, 2);
        assert_eq!(conf.sysctl.keys().collect::<Vec<_>>(), ["Net.Core.X"]);
        // Enum values compare exactly, as the reference's string switches do.
        assert!(from_value::<Conf>(&json!({"mode": "Bridge"})).is_err());
        assert_eq!(
            from_value::<Conf>(&json!({"MODE": "bridge"})).unwrap().mode,
            Some(Mode::Bridge)
        );
    }

    #[test]
    fn last_key_wins_and_null_leaves_the_default() {
        let conf: Conf = from_value(&json!({"mtu": 1400, "MTU": 9000})).unwrap();
        assert_eq!(conf.mtu, Some(9000));
        let conf: Conf = from_value(&json!({"MTU": 9000, "mtu": 1400})).unwrap();
        assert_eq!(conf.mtu, Some(1400));
        let conf: Conf = from_value(&json!({"mtu": 1400, "Mtu": null})).unwrap();
        assert_eq!(conf.mtu, Some(1400));
        let conf: Conf = from_value(&json!({"isGateway": null, "mappings": null})).unwrap();
        assert_eq!(conf, Conf::default());
    }

    #[test]
    fn value_types_stay_strict_as_in_go() {
        let e = from_value::<Conf>(&json!({"mtu": "1500"})).unwrap_err();
        assert!(e.to_string().contains("invalid type: string"), "{e}");
        assert!(from_value::<Conf>(&json!({"isGateway": "true"})).is_err());
        assert!(from_value::<Conf>(&json!({"mtu": 1500.5})).is_err());
    }

    #[test]
    fn exact_field_wins_over_a_folded_one() {
        #[derive(Debug, Deserialize)]
        struct Two {
            #[serde(default)]
            a: u8,
            #[serde(default, rename = "A")]
            big_a: u8,
        }
        let two: Two = from_value(&json!({"A": 1, "a": 2})).unwrap();
        assert_eq!((two.a, two.big_a), (2, 1));
    }

    #[test]
    fn unicode_folding_matches_go() {
        assert!(fold_eq("\u{212a}ey", "key")); // Kelvin sign
        assert!(fold_eq("\u{17f}ubnet", "subnet")); // long s
        assert!(fold_eq("SUBNET", "subnet"));
        assert!(!fold_eq("subnets", "subnet"));
        assert!(!fold_eq("sübnet", "subnet"));
    }

    #[test]
    fn get_prefers_the_last_folded_key() {
        let obj = json!({"portMappings": [1], "PortMappings": [2]});
        let obj = obj.as_object().unwrap();
        assert_eq!(get(obj, "portMappings"), Some(&json!([2])));
        let obj = json!({"PORTMAPPINGS": [3]});
        assert_eq!(
            get(obj.as_object().unwrap(), "portMappings"),
            Some(&json!([3]))
        );
        assert_eq!(get(obj.as_object().unwrap(), "ips"), None);
    }

    #[test]
    fn arrays_and_values_pass_through() {
        let v: Vec<Value> = from_value(&json!([{"A": 1}, null, "x"])).unwrap();
        assert_eq!(v, vec![json!({"A": 1}), Value::Null, json!("x")]);
        let m: Map<String, Value> = from_value(&json!({"Keep": {"Case": 1}})).unwrap();
        assert_eq!(Value::Object(m), json!({"Keep": {"Case": 1}}));
    }
}
