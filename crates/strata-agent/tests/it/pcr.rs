//! PCR extend, event and read against swtpm.

use strata_agent::tpm::PcrBank;

use crate::support;

fn extend(old: &[u8], digest: &[u8], bank: PcrBank) -> Vec<u8> {
    let mut buf = old.to_vec();
    buf.extend_from_slice(digest);
    bank.hash(&buf)
}

#[test]
fn extend_and_event_update_both_banks() {
    let (_ca, hosts) = support::hosts(1);
    let mut tpm = hosts[0].open().unwrap();

    let before: Vec<_> = PcrBank::ALL
        .iter()
        .map(|b| tpm.read_pcrs(*b, &[16]).unwrap()[0].1.clone())
        .collect();
    assert_eq!(before[0], vec![0; 20]);
    assert_eq!(before[1], vec![0; 32]);

    let d1 = vec![
        (PcrBank::Sha1, vec![0x11; 20]),
        (PcrBank::Sha256, vec![0x22; 32]),
    ];
    tpm.extend(16, &d1).unwrap();
    let d2 = tpm.pcr_event(16, b"agent binary").unwrap();
    assert_eq!(
        d2[1],
        (PcrBank::Sha256, PcrBank::Sha256.hash(b"agent binary"))
    );

    for (i, bank) in PcrBank::ALL.iter().enumerate() {
        let want = extend(&extend(&before[i], &d1[i].1, *bank), &d2[i].1, *bank);
        assert_eq!(tpm.read_pcrs(*bank, &[16]).unwrap(), vec![(16, want)]);
    }

    // Wrong digest sizes and out-of-range PCRs are refused before reaching the TPM.
    assert!(tpm.extend(16, &[(PcrBank::Sha256, vec![0; 20])]).is_err());
    assert!(tpm.extend(24, &d1).is_err());
    // More than eight PCRs in one read is split across calls.
    let all: Vec<u32> = (0..24).collect();
    let vals = tpm.read_pcrs(PcrBank::Sha256, &all).unwrap();
    assert_eq!(vals.iter().map(|v| v.0).collect::<Vec<_>>(), all);
}
