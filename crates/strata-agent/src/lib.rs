//! Strata host agent: the registration and attestation loop (`agent`), TPM access (`tpm`),
//! the host's VMs reconciled against the control plane's assignments (`vms`, over a
//! `strata_compute` hypervisor chosen in `drivers`), base images (`images`), swtpm-backed
//! test hosts (`testhost`), a measured-boot plan for the boot simulator (`bootplan`), and the
//! control plane's root key sealed to its host's TPM (`rootseal`).

pub mod agent;
pub mod bootplan;
pub mod devtpm;
pub mod drivers;
pub mod images;
pub mod network;
pub mod release;
pub mod rootseal;
pub mod testhost;
pub mod tpm;
pub mod vms;
