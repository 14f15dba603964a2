//! The property test: valid records mutated the way broken producers break
//! them (dropped fields, swapped JSON types, numbers as strings, nulls,
//! changed keys, truncation) decode alike on the fast and general paths:
//! the same change, or the same error.

use super::*;

/// A small deterministic PRNG (xorshift64*), so the property test needs no
/// crate and a failure replays exactly.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }
}

/// Every path to a value inside `v` (object keys and array indices).
fn json_paths(v: &Json, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Json::Object(m) => {
            for (k, child) in m {
                at.push(k.clone());
                out.push(at.clone());
                json_paths(child, at, out);
                at.pop();
            }
        }
        Json::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                at.push(i.to_string());
                out.push(at.clone());
                json_paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

/// One random mutation of the kind a broken producer makes: a dropped
/// field, a swapped JSON type, a number turned into a string, a null, a
/// changed number or string.
fn mutate(v: &mut Json, rng: &mut Prng) {
    use serde_json::json;
    let mut paths = Vec::new();
    json_paths(v, &mut Vec::new(), &mut paths);
    if paths.is_empty() {
        return;
    }
    let path = &paths[rng.below(paths.len())];
    let (last, parent) = path.split_last().unwrap();
    let mut node = &mut *v;
    for seg in parent {
        node = match node {
            Json::Object(m) => m.get_mut(seg).unwrap(),
            Json::Array(a) => &mut a[seg.parse::<usize>().unwrap()],
            _ => unreachable!(),
        };
    }
    if rng.below(6) == 0 {
        match node {
            Json::Object(m) => drop(m.shift_remove(last)),
            Json::Array(a) => drop(a.remove(last.parse::<usize>().unwrap())),
            _ => unreachable!(),
        }
        return;
    }
    let slot = match node {
        Json::Object(m) => m.get_mut(last).unwrap(),
        Json::Array(a) => &mut a[last.parse::<usize>().unwrap()],
        _ => unreachable!(),
    };
    let choices = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(7),
        json!(2.5),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x"),
        json!("AQ=="),
        json!("0000002a:00000310:0003"),
        json!(crate::decode::value::UNAVAILABLE_PLACEHOLDER),
        json!([]),
        json!({}),
        json!({"scale": 3, "value": "AQ=="}),
    ];
    *slot = match (rng.below(4), &*slot) {
        (0, Json::Number(n)) => json!(n.to_string()),
        (0, Json::String(s)) => s.parse::<i64>().map_or_else(|_| json!(s.len()), |n| json!(n)),
        (1, Json::Number(n)) => json!(n.as_i64().map_or(1, |n| n.wrapping_add(1))),
        (1, Json::String(s)) => json!(s.chars().take(s.chars().count() / 2).collect::<String>()),
        _ => choices[rng.below(choices.len())].clone(),
    };
}

/// Records of several shapes, each with the schema inline, to mutate.
fn property_fixtures() -> Vec<SourceRecord> {
    use serde_json::json;
    let table = fast_path_table();
    let db = BusBooking::new("vexere");
    let mut t = Timeline::default();
    let snap = t.snapshot();
    let mut out = vec![
        source_record(&table.event('r', None, Some(&fast_path_row(3, 1, json!(null))), snap, t.ts_ms, true), 0),
        source_record(&table.event('c', None, Some(&fast_path_row(4, 1, json!("n"))), t.commit(1), t.ts_ms, true), 1),
        source_record(
            &table.event(
                'u',
                Some(&fast_path_row(5, 1, json!(crate::decode::value::UNAVAILABLE_PLACEHOLDER))),
                Some(&fast_path_row(5, 2, json!("second"))),
                t.commit(3),
                t.ts_ms,
                true,
            ),
            2,
        ),
        source_record(
            &table.event('d', Some(&fast_path_row(6, 3, json!("gone"))), None, t.commit(1), t.ts_ms, true),
            3,
        ),
        source_record(&db.trips.event('c', None, Some(&trip(7, 35_000_000, 1)), t.commit(1), t.ts_ms, true), 4),
        source_record(
            &db.bookings.event(
                'u',
                Some(&booking(1, 1, 3, "held")),
                Some(&booking(1, 1, 3, "ok")),
                t.commit(1),
                t.ts_ms,
                true,
            ),
            5,
        ),
        source_record(&db.seats.event('c', None, Some(&seat(3, 12, false)), t.commit(1), t.ts_ms, true), 6),
    ];
    for name in ["read.json", "create.json", "update.json", "delete.json"] {
        out.push(real_fixture(name));
    }
    out
}

#[test]
fn mutated_records_decode_alike_on_the_fast_and_general_paths() {
    let mut rng = Prng(0x9e37_79b9_7f4a_7c15);
    let (mut cases, mut decoded, mut refused, mut fast_taken) = (0, 0, 0, 0);
    for base in property_fixtures() {
        // The valid record itself takes the fast path (strictness costs no fallback).
        let warmed = DecodeOptions::default();
        decode(&base, &warmed).unwrap();
        let (schema, payload) =
            warmed.schemas.split(avro::Part::Value, &base.lineage.topic, base.value.as_deref().unwrap()).unwrap();
        assert!(
            fast::envelope(base.value.as_ref().unwrap(), payload, schema.fast_envelope().unwrap()).is_some(),
            "{:?} left the fast path",
            base.lineage
        );
        let (_, payload) = schema_and_payload(&base);
        let payload: Json = serde_json::from_str(&payload).unwrap();
        let key_record = SourceRecord { value: base.key.clone(), ..base.clone() };
        let (_, key) = schema_and_payload(&key_record);
        let key: Json = serde_json::from_str(&key).unwrap();
        for _ in 0..400 {
            let (mut p, mut k) = (payload.clone(), key.clone());
            for _ in 0..=rng.below(3) {
                if rng.below(5) == 0 { mutate(&mut k, &mut rng) } else { mutate(&mut p, &mut rng) }
            }
            let mut r = with_key(&with_payload(&base, &p.to_string()), &k);
            if rng.below(10) == 0 {
                let bytes = r.value.as_mut().unwrap();
                bytes.truncate(rng.below(bytes.len()));
            }
            cases += 1;
            if let Some((schema, payload)) =
                warmed.schemas.split(avro::Part::Value, &r.lineage.topic, r.value.as_deref().unwrap())
                && fast::envelope(r.value.as_ref().unwrap(), payload, schema.fast_envelope().unwrap()).is_some()
            {
                fast_taken += 1;
            }
            match fast_and_general_agree(&base, &r) {
                Ok(_) => decoded += 1,
                Err(_) => refused += 1,
            }
        }
    }
    assert!(cases >= 4_000, "{cases} cases");
    assert!(
        decoded > 100 && refused > 1_000 && fast_taken > 100,
        "{decoded} decoded, {refused} refused, {fast_taken} on the fast path"
    );
}
