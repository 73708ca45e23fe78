//! Integration tests for strata-netdp: real namespaces, bridges, veths and nftables, with real
//! TCP and UDP packets. They need root and the `ip`, `bridge`, `nft` and `conntrack` commands
//! (Debian: iproute2, nftables, conntrack; `cargo xtask ci` installs them) and fail, not skip,
//! without them. Every test makes its own "host" namespace and VM namespaces (`sdp-<pid>-<n>`)
//! and removes them when it ends, also on panic; nothing touches the machine's own networking.

// clippy.toml only allows unwrap/expect inside #[test] fns; fixtures here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;
mod ddos;
mod props;
mod reconcile;
mod support;
