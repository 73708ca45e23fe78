//! Strata host agent: the registration and attestation loop (`agent`), TPM access (`tpm`),
//! the host's VMs reconciled against the control plane's assignments (`vms`, over a
//! `strata_compute` hypervisor chosen in `drivers`), base images (`images`), swtpm-backed
//! test hosts (`testhost`) and a measured-boot plan for the boot simulator (`bootplan`).

pub mod agent;
pub mod bootplan;
pub mod devtpm;
pub mod drivers;
pub mod images;
pub mod release;
pub mod testhost;
pub mod tpm;
pub mod vms;
