//! Key wrap/unwrap throughput (filled in by the next commit).

fn main() {}
