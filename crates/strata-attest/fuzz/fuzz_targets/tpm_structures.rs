//! TPMS_ATTEST, TPMT_SIGNATURE and TPM2B_PUBLIC parsers: never panic, and whatever parses
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_attest::tpm::{Attest, Public, Signature, peek_header};

fuzz_target!(|data: &[u8]| {
    let _ = peek_header(data);
    if let Ok(a) = Attest::parse(data) {
        assert_eq!(a.encode(), data);
    }
    if let Ok(s) = Signature::parse(data) {
        assert_eq!(s.encode(), data);
    }
    if let Ok(p) = Public::parse(data) {
        assert_eq!(p.encode_tpm2b(), data);
        let _ = p.name();
    }
    if let Ok(p) = Public::parse_tpmt(data) {
        assert_eq!(p.encode(), data);
    }
});
