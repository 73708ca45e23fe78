//! The control plane on PostgreSQL: the same flows work and survive a restart.

use crate::harness::Server;
use serde_json::json;

fn fresh_database() -> String {
    let admin = std::env::var("STRATA_TEST_POSTGRES_URL")
        .expect("STRATA_TEST_POSTGRES_URL is not set: run the suite with `cargo xtask ci`, which starts a local PostgreSQL");
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    let name = format!(
        "strata_cp_{}_{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

#[test]
fn control_plane_runs_on_postgres() {
    let url = fresh_database();
    let s = Server::start_with(|c| c.database = Some(url.clone()));
    assert_eq!(s.running().app.store.backend(), "postgres");
    let (st, v) = s.admin("PUT", &s.rg("pg"), Some(json!({})));
    assert_eq!(st, 201, "{v}");
    let (oid, client, secret) = s.new_sp("pgreader");
    s.assign(&oid, "Reader", "");
    let t = s.sp_token(&client, &secret).unwrap();
    assert_eq!(s.req("GET", &s.rg("pg"), Some(&t), None, &[]).0, 200);
    assert_eq!(s.req("DELETE", &s.rg("pg"), Some(&t), None, &[]).0, 403);
    s.rt.block_on(s.running().checkpoint_now());
    let cps = s.running().app.store.checkpoints().unwrap();
    let key = s.running().app.audit_signer.public_key();
    let rows = s.running().app.store.audit_rows(0, 100_000).unwrap();
    let report = strata_audit::verify_log(
        rows.into_iter().map(|r| strata_audit::StoredEntry {
            seq: r.seq,
            entry_json: r.entry,
            stored_leaf_hash: r.leaf_hash,
        }),
        &cps,
        &key,
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.verified_tree_size > 0);
}
