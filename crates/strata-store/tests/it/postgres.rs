//! PostgreSQL backend: the same conformance suite against a real server.
//!
//! `STRATA_TEST_POSTGRES_URL` must point at a server where the user may create databases
//! (`cargo xtask ci` starts one). Without it this test fails loudly instead of skipping.

use strata_store::{PgStore, conformance};

fn admin_url() -> String {
    std::env::var("STRATA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "STRATA_TEST_POSTGRES_URL is not set: run the suite with `cargo xtask ci`, which starts a local PostgreSQL"
        )
    })
}

/// Creates a fresh, empty database and returns its URL.
pub fn fresh_database(prefix: &str) -> String {
    let admin = admin_url();
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    let name = format!("{prefix}_{}_{}", std::process::id(), rand_suffix());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("STRATA_TEST_POSTGRES_URL must end in /DBNAME"),
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

#[test]
fn postgres_passes_conformance() {
    let url = fresh_database("strata_store");
    let store = PgStore::connect(&url).unwrap();
    conformance::run_all(&store);
}
