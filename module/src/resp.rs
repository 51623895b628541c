//! Reports written straight into RESP replies, without building a JSON tree first.
//!
//! Structured replies used to go through `serde_json::to_value`, then a walk of that tree. The
//! tree costs an allocation per field name, string and map, through Redis' allocator: an
//! OPT.HOTKEYS COUNT 4096 reply spent about 7 of its 11.6 ms building it. Here a serde
//! `Serializer` writes each value to a [`Sink`] as it is visited. The replies are the ones the
//! tree gave, element for element (the unit tests compare both for every report type):
//! - a struct or map is a map (a flat array for RESP2 clients, which Redis does by itself),
//!   fields in declaration order, fields skipped by `skip_serializing_if` left out;
//! - integers up to `i64::MAX` are integers, larger ones and floats are doubles, a float that
//!   is not finite is a null (JSON has no NaN);
//! - `None` and unit values are nulls, a unit enum variant is its name, other enum variants
//!   are a one-entry map from the variant's name to its content;
//! - a sequence or map whose length is not known up front is gathered into a tree first, so
//!   every length written ahead is exact.

use std::fmt::Display;

use serde::ser::{self, Serialize};
use serde_json::Value;

/// Where a reply goes: the client's reply through the module API, or a recorder in tests.
pub trait Sink {
    /// A map of `len` key-value pairs follows.
    fn map(&mut self, len: usize);
    /// An array of `len` elements follows.
    fn array(&mut self, len: usize);
    /// A bulk string.
    fn bulk(&mut self, bytes: &[u8]);
    /// An integer.
    fn int(&mut self, value: i64);
    /// A double.
    fn double(&mut self, value: f64);
    /// A boolean.
    fn boolean(&mut self, value: bool);
    /// A null.
    fn null(&mut self);
}

/// Writes a JSON tree: a sequence or map whose length was not known up front, gathered.
fn write_value<S: Sink>(sink: &mut S, value: &Value) {
    match value {
        Value::Null => sink.null(),
        Value::Bool(b) => sink.boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => sink.int(i),
            None => sink.double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => sink.bulk(s.as_bytes()),
        Value::Array(items) => {
            sink.array(items.len());
            for item in items {
                write_value(sink, item);
            }
        }
        Value::Object(map) => {
            sink.map(map.len());
            for (key, item) in map {
                sink.bulk(key.as_bytes());
                write_value(sink, item);
            }
        }
    }
}

/// Writes `value` as a reply; false if its serialization failed part way (a value that
/// serde_json could not represent either; none of the reports has one). Every length written
/// ahead is kept even then: the aggregates left open are filled with nulls, so the client's
/// protocol stream stays whole.
pub fn write<S: Sink, T: Serialize + ?Sized>(sink: &mut S, value: &T) -> bool {
    let mut balanced = Balanced {
        sink,
        open: Vec::new(),
    };
    let ok = value
        .serialize(Writer {
            sink: &mut balanced,
        })
        .is_ok();
    while !balanced.open.is_empty() {
        balanced.null();
    }
    ok
}

/// A sink that counts what each open aggregate still expects (a map counts keys and values),
/// so that [`write`] can close them.
struct Balanced<'a, S: Sink> {
    sink: &'a mut S,
    open: Vec<usize>,
}

impl<S: Sink> Balanced<'_, S> {
    fn element(&mut self) {
        while let Some(left) = self.open.last_mut() {
            *left -= 1;
            if *left > 0 {
                break;
            }
            self.open.pop();
        }
    }

    fn aggregate(&mut self, elements: usize) {
        if elements == 0 {
            self.element();
        } else {
            self.open.push(elements);
        }
    }
}

impl<S: Sink> Sink for Balanced<'_, S> {
    fn map(&mut self, len: usize) {
        self.sink.map(len);
        self.aggregate(len * 2);
    }
    fn array(&mut self, len: usize) {
        self.sink.array(len);
        self.aggregate(len);
    }
    fn bulk(&mut self, bytes: &[u8]) {
        self.sink.bulk(bytes);
        self.element();
    }
    fn int(&mut self, value: i64) {
        self.sink.int(value);
        self.element();
    }
    fn double(&mut self, value: f64) {
        self.sink.double(value);
        self.element();
    }
    fn boolean(&mut self, value: bool) {
        self.sink.boolean(value);
        self.element();
    }
    fn null(&mut self) {
        self.sink.null();
        self.element();
    }
}

/// The serializer's error type (never produced by the reports; required by serde).
#[derive(Debug)]
pub struct Error(String);

impl Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// Writes values to a sink as they are visited.
struct Writer<'a, S: Sink> {
    sink: &'a mut S,
}

/// Integer widths that fit an i64 are written as one.
macro_rules! widened_to_i64 {
    ($($method:ident: $t:ty),+) => {$(
        fn $method(self, v: $t) -> Result<(), Error> {
            self.serialize_i64(v.into())
        }
    )+};
}

impl<'a, S: Sink> ser::Serializer for Writer<'a, S> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a, S>;
    type SerializeTuple = Seq<'a, S>;
    type SerializeTupleStruct = Seq<'a, S>;
    type SerializeTupleVariant = Seq<'a, S>;
    type SerializeMap = Map<'a, S>;
    type SerializeStruct = Map<'a, S>;
    type SerializeStructVariant = Map<'a, S>;

    widened_to_i64!(
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32
    );

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.sink.boolean(v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.sink.int(v);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        match i64::try_from(v) {
            Ok(i) => self.sink.int(i),
            Err(_) => self.sink.double(v as f64),
        }
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        if v.is_finite() {
            self.sink.double(v);
        } else {
            self.sink.null();
        }
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.sink.bulk(v.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.sink.bulk(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        // serde_json writes bytes as an array of numbers.
        self.sink.array(v.len());
        for &b in v {
            self.sink.int(b.into());
        }
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.sink.null();
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.sink.null();
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        open_variant(self.sink, variant);
        value.serialize(Writer { sink: self.sink })
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq<'a, S>, Error> {
        Ok(Seq::start(self.sink, len))
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a, S>, Error> {
        Ok(Seq::start(self.sink, Some(len)))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq<'a, S>, Error> {
        Ok(Seq::start(self.sink, Some(len)))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Seq<'a, S>, Error> {
        open_variant(self.sink, variant);
        Ok(Seq::start(self.sink, Some(len)))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Map<'a, S>, Error> {
        Ok(Map::start(self.sink, len))
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Map<'a, S>, Error> {
        Ok(Map::start(self.sink, Some(len)))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Map<'a, S>, Error> {
        open_variant(self.sink, variant);
        Ok(Map::start(self.sink, Some(len)))
    }
}

/// Starts a non-unit enum variant: a one-entry map from its name to its content.
fn open_variant<S: Sink>(sink: &mut S, variant: &str) {
    sink.map(1);
    sink.bulk(variant.as_bytes());
}

/// A value of a gathered aggregate as a tree; a failure fails the whole reply, as it does
/// where values are written straight.
fn to_tree<T: Serialize + ?Sized>(value: &T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|e| Error(e.to_string()))
}

/// A sequence being written: straight to the sink when its length was given, else gathered.
pub struct Seq<'a, S: Sink> {
    sink: &'a mut S,
    gathered: Option<Vec<Value>>,
}

impl<'a, S: Sink> Seq<'a, S> {
    fn start(sink: &'a mut S, len: Option<usize>) -> Self {
        match len {
            Some(n) => {
                sink.array(n);
                Seq {
                    sink,
                    gathered: None,
                }
            }
            None => Seq {
                sink,
                gathered: Some(Vec::new()),
            },
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        match &mut self.gathered {
            Some(items) => items.push(to_tree(value)?),
            None => value.serialize(Writer {
                sink: &mut *self.sink,
            })?,
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        if let Some(items) = self.gathered {
            write_value(self.sink, &Value::Array(items));
        }
        Ok(())
    }
}

/// The four sequence traits of serde differ only in the name of their element method.
macro_rules! sequence_impl {
    ($($trait:ident :: $method:ident),+) => {$(
        impl<S: Sink> ser::$trait for Seq<'_, S> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }
            fn end(self) -> Result<(), Error> {
                self.finish()
            }
        }
    )+};
}

sequence_impl!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// A map or struct being written: straight to the sink when its length was given, else
/// gathered.
pub struct Map<'a, S: Sink> {
    sink: &'a mut S,
    gathered: Option<serde_json::Map<String, Value>>,
    /// The key of a map entry whose value comes next.
    pending_key: Option<String>,
}

impl<'a, S: Sink> Map<'a, S> {
    fn start(sink: &'a mut S, len: Option<usize>) -> Self {
        match len {
            Some(n) => {
                sink.map(n);
                Map {
                    sink,
                    gathered: None,
                    pending_key: None,
                }
            }
            None => Map {
                sink,
                gathered: Some(serde_json::Map::new()),
                pending_key: None,
            },
        }
    }

    fn finish(self) -> Result<(), Error> {
        if let Some(map) = self.gathered {
            write_value(self.sink, &Value::Object(map));
        }
        Ok(())
    }
}

/// A map key as the text serde_json would use: strings as they are, numbers and booleans
/// written out, anything else as its JSON text.
fn key_text<T: Serialize + ?Sized>(key: &T) -> Result<String, Error> {
    Ok(match to_tree(key)? {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

impl<S: Sink> Map<'_, S> {
    /// One key and its value.
    fn entry<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        match &mut self.gathered {
            Some(map) => {
                map.insert(key.to_string(), to_tree(value)?);
            }
            None => {
                self.sink.bulk(key.as_bytes());
                value.serialize(Writer {
                    sink: &mut *self.sink,
                })?;
            }
        }
        Ok(())
    }
}

impl<S: Sink> ser::SerializeMap for Map<'_, S> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.pending_key = Some(key_text(key)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self.pending_key.take().unwrap_or_default();
        self.entry(&key, value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl<S: Sink> ser::SerializeStruct for Map<'_, S> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.entry(key, value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl<S: Sink> ser::SerializeStructVariant for Map<'_, S> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opt_core::advise::{advise, parse_query, Snapshot, Thresholds as AdviseThresholds};
    use opt_core::keyspace::{Aggregator, KeyFacts, Mode, Thresholds};
    use opt_core::report::{HotEntry, HotKeysReport, KeyspaceReport, TagInfoReport, TagSize};
    use serde::Serialize;
    use std::collections::BTreeMap;

    /// Records what a reply would send, and checks that every announced length is kept.
    #[derive(Default)]
    struct Recorder {
        events: Vec<String>,
        /// Elements still expected by each open aggregate (a map counts keys and values).
        open: Vec<usize>,
    }

    impl Recorder {
        fn element(&mut self, event: String) {
            self.events.push(event);
            while let Some(left) = self.open.last_mut() {
                *left -= 1;
                if *left > 0 {
                    break;
                }
                self.open.pop();
            }
        }

        fn aggregate(&mut self, event: String, elements: usize) {
            if elements == 0 {
                self.element(event);
            } else {
                self.events.push(event);
                self.open.push(elements);
            }
        }
    }

    impl Sink for Recorder {
        fn map(&mut self, len: usize) {
            self.aggregate(format!("map {len}"), len * 2);
        }
        fn array(&mut self, len: usize) {
            self.aggregate(format!("array {len}"), len);
        }
        fn bulk(&mut self, bytes: &[u8]) {
            self.element(format!("bulk {}", String::from_utf8_lossy(bytes)));
        }
        fn int(&mut self, value: i64) {
            self.element(format!("int {value}"));
        }
        fn double(&mut self, value: f64) {
            self.element(format!("double {value}"));
        }
        fn boolean(&mut self, value: bool) {
            self.element(format!("bool {value}"));
        }
        fn null(&mut self) {
            self.element("null".into());
        }
    }

    /// The events of `value` written directly and through a JSON tree: they must be equal,
    /// and every aggregate must be closed by exactly the elements it announced.
    fn same_both_ways<T: Serialize>(value: &T) -> Vec<String> {
        let mut direct = Recorder::default();
        assert!(write(&mut direct, value));
        let mut tree = Recorder::default();
        write_value(&mut tree, &serde_json::to_value(value).unwrap());
        assert!(direct.open.is_empty(), "lengths kept: {:?}", direct.events);
        assert!(tree.open.is_empty());
        assert_eq!(direct.events, tree.events);
        direct.events
    }

    fn keyspace_report(mode: Mode) -> KeyspaceReport {
        let mut agg = Aggregator::new(b":", 5, Thresholds::default());
        let keys = [
            ("user:1:profile", "hash", "listpack", 500, Some(5_000)),
            ("user:2:profile", "hash", "hashtable", 90_000, None),
            ("session:ab12", "string", "embstr", 80, Some(86_400_000)),
            ("counter", "string", "int", 56, None),
            ("feed:9", "list", "quicklist", 4_000, Some(-1)),
        ];
        for (name, type_name, encoding, bytes, ttl_ms) in keys {
            agg.add(&KeyFacts {
                name: name.as_bytes(),
                type_name,
                encoding,
                bytes,
                length: bytes / 10,
                ttl_ms,
                idle_s: Some(30),
                lfu: None,
                now_ms: 1_700_000_000_000,
                integer_members: None,
            });
        }
        agg.finish(mode, 0, 20, keys.len() as u64, 3)
    }

    fn hot_entry(rank: u64, node: Option<&str>) -> HotEntry {
        HotEntry {
            rank,
            name: format!("user:{rank}:profile"),
            truncated: rank == 2,
            count: 1000 / rank,
            error: rank,
            share: 0.25 / rank as f64,
            ops_per_sec: 12.5,
            reads: 10,
            writes: 0,
            misses: u64::MAX,
            node: node.map(str::to_string),
            slot: node.map(|_| 42),
        }
    }

    #[test]
    fn hot_key_reports_are_written_as_their_json_tree_is() {
        let report = HotKeysReport {
            window: "total".into(),
            kind: "all".into(),
            view: "keys".into(),
            seconds: f64::NAN,
            sample_ratio: 10,
            sampled_accesses: 5,
            estimated_accesses: 50,
            detection_floor: 0,
            capacity: 1024,
            tracked: 3,
            entries: vec![
                hot_entry(1, None),
                hot_entry(2, Some("n1")),
                hot_entry(3, None),
            ],
        };
        let events = same_both_ways(&report);
        assert!(events.contains(&"null".to_string()), "NaN is a null");
        assert!(events.contains(&format!("double {}", u64::MAX as f64)));
        // Entries without a node leave the node and slot fields out.
        assert_eq!(events.iter().filter(|e| *e == "bulk node").count(), 1);
        same_both_ways(&HotKeysReport {
            entries: Vec::new(),
            ..report
        });
    }

    #[test]
    fn other_reports_and_plain_values_are_written_as_their_json_tree_is() {
        same_both_ways(&keyspace_report(Mode::Full));
        let mut snap = Snapshot {
            keyspace: Some(keyspace_report(Mode::Full)),
            ..Snapshot::default()
        };
        snap.info.insert("maxmemory".into(), "0".into());
        let query = parse_query(&[]).unwrap();
        let advice = advise(&snap, &AdviseThresholds::default(), &query, &[]);
        assert!(!advice.findings.is_empty() || !advice.skipped.is_empty());
        same_both_ways(&advice);
        same_both_ways(&keyspace_report(Mode::Samples(4)));
        for tag in [None, Some("user:1".to_string())] {
            same_both_ways(&TagInfoReport {
                keys: 3,
                tags: 2,
                pairs: 4,
                memory_bytes: 100,
                digest: "00ff".into(),
                tag,
                largest: vec![TagSize {
                    tag: "t".into(),
                    keys: 3,
                }],
            });
        }
        same_both_ways(&serde_json::json!({
            "a": [1, -2, 3.5, null, true, "x", {"b": {}}, []],
            "big": u64::MAX,
        }));
        let mut by_name = BTreeMap::new();
        by_name.insert(7u32, vec![Some(1.5f32), None]);
        same_both_ways(&by_name);
        same_both_ways(&(1u8, 'c', "s", ()));
        // A sequence of unknown length is gathered first.
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<Z: serde::Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
                s.collect_seq((0..3).filter(|i| i % 2 == 0))
            }
        }
        assert_eq!(
            same_both_ways(&Unsized),
            ["array 2", "int 0", "int 2"].map(String::from)
        );
    }

    #[test]
    fn a_value_that_fails_part_way_still_closes_every_aggregate() {
        struct Failing;
        impl Serialize for Failing {
            fn serialize<Z: serde::Serializer>(&self, _s: Z) -> Result<Z::Ok, Z::Error> {
                Err(serde::ser::Error::custom("cannot"))
            }
        }
        #[derive(Serialize)]
        struct Report {
            a: u32,
            bad: Failing,
            c: Vec<u32>,
        }
        let mut r = Recorder::default();
        assert!(!write(
            &mut r,
            &Report {
                a: 1,
                bad: Failing,
                c: vec![2, 3]
            }
        ));
        assert!(r.open.is_empty(), "{:?}", r.events);
        assert_eq!(
            r.events,
            ["map 3", "bulk a", "int 1", "bulk bad", "null", "null", "null"]
        );
    }
}
