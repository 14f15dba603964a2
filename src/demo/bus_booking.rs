//! The bus-booking source database of the demo (after the talk's platform):
//! `Trips`, `Bookings` and `Seats` (composite key `TripId, SeatNo`) in the
//! SQL Server database `vexere`, captured under the topic prefix `vexere`.
//!
//! [`Timeline`] hands out strictly increasing LSNs so that generated events
//! are ordered exactly like a real transaction log.

use super::sqlserver::{Column, Image, Lsns, Record, Table, decimal_base64};
use serde_json::json;

/// Builds increasing SQL Server LSNs and commit times.
#[derive(Clone, Debug)]
pub struct Timeline {
    lsn: u128,
    pub ts_ms: i64,
}

impl Default for Timeline {
    // The LSN's digits are grouped as SQL Server writes an LSN (8:8:4 hex).
    #[allow(clippy::unusual_byte_groupings)]
    fn default() -> Self {
        // Start well above zero so snapshot LSNs look real.
        Timeline { lsn: 0x0000002a_00000100_0001, ts_ms: 1_782_000_000_000 }
    }
}

impl Timeline {
    /// The snapshot's position: the max LSN at snapshot start, no change LSN.
    pub fn snapshot(&self) -> Lsns {
        Lsns { commit: self.lsn, change: None, serial: None }
    }

    /// A new single-statement transaction: returns its commit position for
    /// `serial` 1 (insert/delete) or 2 (update).
    pub fn commit(&mut self, serial: i64) -> Lsns {
        self.lsn += 0x10;
        self.ts_ms += 7;
        Lsns { commit: self.lsn + 8, change: Some(self.lsn), serial: Some(serial) }
    }
}

/// The three captured tables.
#[derive(Clone, Debug)]
pub struct BusBooking {
    pub trips: Table,
    pub bookings: Table,
    pub seats: Table,
}

impl BusBooking {
    pub fn new(prefix: &'static str) -> BusBooking {
        let table = |name, columns, key| Table { prefix, database: "vexere", schema: "dbo", name, columns, key };
        BusBooking {
            trips: table(
                "Trips",
                vec![
                    Column::new("TripId", "int32"),
                    Column::new("Route", "string"),
                    Column::new("Operator", "string"),
                    Column::new("DepartAt", "int64").semantic("io.debezium.time.NanoTimestamp"),
                    Column::new("SeatCount", "int16"),
                    Column::new("Fare", "bytes").decimal(12, 2),
                    Column::new("Status", "int16"),
                    Column::new("Note", "string").optional(),
                ],
                vec!["TripId"],
            ),
            bookings: table(
                "Bookings",
                vec![
                    Column::new("BookingId", "int64"),
                    Column::new("TripId", "int32"),
                    Column::new("SeatNo", "int16"),
                    Column::new("Customer", "string"),
                    Column::new("Amount", "bytes").decimal(12, 2),
                    Column::new("BookedAt", "int64").semantic("io.debezium.time.Timestamp"),
                    Column::new("Status", "string"),
                ],
                vec!["BookingId"],
            ),
            seats: table(
                "Seats",
                vec![
                    Column::new("TripId", "int32"),
                    Column::new("SeatNo", "int16"),
                    Column::new("Deck", "string"),
                    Column::new("Held", "boolean"),
                ],
                vec!["TripId", "SeatNo"],
            ),
        }
    }
}

const ROUTES: [&str; 6] = [
    "Ho Chi Minh City → Da Lat",
    "Ha Noi → Sa Pa",
    "Da Nang → Hue",
    "Ho Chi Minh City → Nha Trang",
    "Can Tho → Ho Chi Minh City",
    "Ha Noi → Ha Long",
];
const OPERATORS: [&str; 4] = ["Phuong Trang", "Thanh Buoi", "Hoang Long", "Sao Viet"];
const CUSTOMERS: [&str; 5] = ["Nguyen Van An", "Tran Thi Binh", "Le Minh Chau", "Pham Quoc Dung", "Vo Thi Em"];

/// A trip row; `fare_cents` is the decimal(12,2) unscaled value (after the
/// second chapter's ALTER, the decimal(14,4) one).
pub fn trip(id: i32, fare_cents: i128, status: i16) -> Image {
    let depart_ns = 1_782_900_000_000_000_000_i64 + id as i64 * 3_600_000_000_000;
    vec![
        ("TripId", json!(id)),
        ("Route", json!(ROUTES[id as usize % ROUTES.len()])),
        ("Operator", json!(OPERATORS[id as usize % OPERATORS.len()])),
        ("DepartAt", json!(depart_ns)),
        ("SeatCount", json!(40)),
        ("Fare", json!(decimal_base64(fare_cents))),
        ("Status", json!(status)),
        ("Note", json!(null)),
    ]
}

/// A booking row.
pub fn booking(id: i64, trip_id: i32, seat: i16, status: &str) -> Image {
    vec![
        ("BookingId", json!(id)),
        ("TripId", json!(trip_id)),
        ("SeatNo", json!(seat)),
        ("Customer", json!(CUSTOMERS[id as usize % CUSTOMERS.len()])),
        ("Amount", json!(decimal_base64(35_000_000 + id as i128 * 100))),
        ("BookedAt", json!(1_782_000_000_000_i64 + id * 60_000)),
        ("Status", json!(status)),
    ]
}

/// A seat row (composite key).
pub fn seat(trip_id: i32, seat_no: i16, held: bool) -> Image {
    vec![
        ("TripId", json!(trip_id)),
        ("SeatNo", json!(seat_no)),
        ("Deck", json!(if seat_no > 20 { "upper" } else { "lower" })),
        ("Held", json!(held)),
    ]
}

/// The demo's story: a snapshot of trips, bookings made, one fare change,
/// one trip cancelled and deleted. Returns records in log order.
pub fn demo_story(db: &BusBooking, clock: &mut Timeline, trips: i32, schemas: bool) -> Vec<Record> {
    let mut out = Vec::new();
    let snap = clock.snapshot();
    for id in 1..=trips {
        out.push(db.trips.event(
            'r',
            None,
            Some(&trip(id, 35_000_000 + id as i128 * 1000, 1)),
            snap,
            clock.ts_ms,
            schemas,
        ));
    }
    for id in 1..=(trips as i64 * 2) {
        let trip_id = (id as i32 % trips) + 1;
        let at = clock.commit(1);
        out.push(db.bookings.event(
            'c',
            None,
            Some(&booking(id, trip_id, (id % 40) as i16 + 1, "confirmed")),
            at,
            clock.ts_ms,
            schemas,
        ));
    }
    // A fare change on trip 1.
    let at = clock.commit(2);
    out.push(db.trips.event(
        'u',
        Some(&trip(1, 35_001_000, 1)),
        Some(&trip(1, 39_900_000, 1)),
        at,
        clock.ts_ms,
        schemas,
    ));
    // Trip `trips` is cancelled and removed.
    let gone = trip(trips, 35_000_000 + trips as i128 * 1000, 1);
    let at = clock.commit(1);
    out.push(db.trips.event('d', Some(&gone), None, at, clock.ts_ms, schemas));
    out.push(db.trips.tombstone(&gone, schemas));
    out
}

/// The story's second chapter, after [`demo_story`] on the same clock: the
/// source widens `Trips.Fare` (`ALTER COLUMN Fare decimal(14,4)`), and every
/// trip still on sale is re-priced to a fare only the new type holds (four
/// decimals). Returns records in log order.
pub fn demo_alter_story(db: &BusBooking, clock: &mut Timeline, trips: i32, schemas: bool) -> Vec<Record> {
    let mut widened = db.trips.clone();
    for c in widened.columns.iter_mut().filter(|c| c.name == "Fare") {
        *c = Column::new("Fare", "bytes").decimal(14, 4);
    }
    (1..trips)
        .map(|id| {
            let at = clock.commit(2);
            let fare = 3_500_000_000 + id as i128 * 100_000 + 125;
            widened.event('u', None, Some(&trip(id, fare, 1)), at, clock.ts_ms, schemas)
        })
        .collect()
}
