//! Store integration tests: the shared conformance suite against real SQLite and PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should panic"
)]

mod postgres;
mod sqlite;
