//! The crypto-agile event log parser, replay and typed event data: never panic, and a log
//! that parses re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_attest::HashAlg;
use strata_attest::eventlog::{EventLog, replay};

fuzz_target!(|data: &[u8]| {
    let Ok(log) = EventLog::parse(data) else {
        return;
    };
    assert_eq!(log.encode(), data);
    for bank in HashAlg::ALL {
        let _ = replay(&log, bank);
    }
    for e in &log.events {
        let _ = e.description();
        let _ = e.kernel_cmdline();
        let _ = e.data_is_bound(HashAlg::Sha256);
        if let Some(Ok(i)) = e.image_load() {
            let _ = i.file_path();
        }
    }
});
