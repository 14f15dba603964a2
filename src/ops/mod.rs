//! Beside the path: what an operator needs at 3 a.m. — health, metrics and
//! structured logs.

pub mod health;
pub mod http;

pub use health::Health;
