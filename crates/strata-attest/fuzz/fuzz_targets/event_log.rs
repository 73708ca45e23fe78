//! The crypto-agile event log parser (owned and in place), replay (whole and selected) and
//! typed event data: never panic, a log that parses re-encodes to the same bytes, and the
//! in-place view agrees with the owned log.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_attest::HashAlg;
use strata_attest::eventlog::{EventLog, LogView, initial_pcr_value, replay, replay_selected};
use strata_attest::policy::EventClass;

fuzz_target!(|data: &[u8]| {
    let view = LogView::parse(data);
    let Ok(log) = EventLog::parse(data) else {
        assert!(view.is_err());
        return;
    };
    let Ok(view) = view else {
        panic!("the owned parser accepted a log the in-place one refused");
    };
    assert_eq!(log.encode(), data);
    assert_eq!(view.to_log(), log);
    let selection: Vec<u32> = (0..24).chain([255, 300]).collect();
    for bank in HashAlg::ALL {
        let all = replay(&log, bank);
        let selected = replay_selected(&view, bank, &selection);
        match (&all, &selected) {
            (Ok(all), Ok(selected)) => {
                for (pcr, v) in selection.iter().zip(selected) {
                    let want = all
                        .get(pcr)
                        .cloned()
                        .unwrap_or_else(|| initial_pcr_value(*pcr, bank));
                    assert_eq!(v.as_bytes(), want.as_slice());
                }
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("replay and replay_selected disagree"),
        }
    }
    for (e, (_, v)) in log.events.iter().zip(view.numbered(HashAlg::Sha256)) {
        let _ = e.description();
        let _ = e.kernel_cmdline();
        assert_eq!(e.data_is_bound(HashAlg::Sha256), v.data_is_bound());
        assert_eq!(EventClass::of(e), EventClass::of_view(&v));
        if let Some(Ok(i)) = e.image_load() {
            let _ = i.file_path();
        }
    }
});
