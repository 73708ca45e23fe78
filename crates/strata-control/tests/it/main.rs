//! Control-plane integration tests: a real HTTPS server on loopback per test, real SQLite (and
//! PostgreSQL in `postgres`), driven the way a client would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should panic"
)]

mod harness;

mod api;
mod authn;
mod authz;
mod compute;
mod disks;
mod fabric;
mod hostnet;
mod images;
mod keysweep;
mod keyvault;
mod network;
mod openapi;
mod postgres;
mod release;
mod rootkey;
mod snapshots;
