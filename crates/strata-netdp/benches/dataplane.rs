//! Placeholder until the dataplane benchmark lands.
fn main() {}
