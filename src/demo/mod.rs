//! Demo and test fixtures: SQL Server-shaped Debezium events for the
//! bus-booking database, and a producer that writes them to Kafka.

pub mod bus_booking;
pub mod produce;
pub mod sqlserver;
