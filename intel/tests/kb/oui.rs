//! The embedded IEEE table answers with the registered organisation, prefers the longest
//! (MA-S/MA-M) block, and refuses addresses that name no manufacturer.

use wardline_common::MacAddr;
use wardline_intel::oui::{lookup, lookup_oui, table_sizes};

fn mac(s: &str) -> MacAddr {
    s.parse().expect("test MAC")
}

#[test]
fn ma_l_blocks_from_ieee_data() {
    assert_eq!(lookup(&mac("00:00:0c:01:02:03")), Some("Cisco Systems, Inc"));
    // kb-sources: the GE B40 monitor's EUI-64 starts 08:00:19 = General Electric.
    assert_eq!(lookup(&mac("08:00:19:aa:bb:cc")), Some("GENERAL ELECTRIC CORPORATION"));
    assert_eq!(lookup(&mac("00:03:93:00:00:01")), Some("Apple, Inc."));
    assert_eq!(lookup_oui([0x08, 0x00, 0x19]), Some("GENERAL ELECTRIC CORPORATION"));
}

#[test]
fn longest_block_wins_over_ieee_registration_authority() {
    // 70:B3:D5 is an MA-L held by the IEEE RA and split into MA-S blocks.
    assert_eq!(lookup(&mac("70:b3:d5:f2:f1:23")), Some("TELEPLATFORMS"));
    assert_eq!(lookup(&mac("00:50:c2:7d:51:00")), Some("DEUTA-WERKE GmbH"));
    // An MA-M block.
    assert_eq!(lookup(&mac("00:55:da:01:02:03")), Some("Shinko Technos co.,ltd."));
    // Falling back to the MA-L owner when no smaller block matches.
    let (mal, mam, mas) = table_sizes();
    assert!(mal > 30_000 && mam > 4_000 && mas > 9_000, "{mal} {mam} {mas}");
}

#[test]
fn addresses_without_a_manufacturer() {
    assert_eq!(lookup(&mac("02:42:ac:11:00:02")), None, "locally administered (docker)");
    assert_eq!(lookup(&mac("da:a1:19:00:00:01")), None, "randomised Wi-Fi MAC");
    assert_eq!(lookup(&mac("01:00:5e:7f:ff:fa")), None, "IPv4 multicast");
    assert_eq!(lookup(&MacAddr::BROADCAST), None);
    assert_eq!(lookup_oui([0x02, 0x00, 0x00]), None);
}
