//! UTXO transactions as a signer receives them: arbitrary bytes through the
//! PSBT check against a fixed approval, and the address parser of every
//! network. No panic; an accepted PSBT yields one digest per input and a fee
//! within the cap; an accepted address re-parses to the same script.
#![no_main]

use bitcoin::ScriptBuf;
use bitcoin::hashes::Hash;
use custos_chains::utxo::{Payout, UtxoNetwork, check_psbt, parse_address};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let own = [ScriptBuf::new_p2wpkh(
        &bitcoin::WPubkeyHash::from_byte_array([7; 20]),
    )];
    let payouts = [Payout {
        withdrawal_id: "w".into(),
        script_pubkey: ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([9; 20])),
        amount: 50_000,
        fee_cap: 10_000,
    }];
    if let Ok(checked) = check_psbt(data, &payouts, &own) {
        assert_eq!(checked.digests.len(), checked.tx.input.len());
        assert!(checked.fee <= 10_000);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for network in UtxoNetwork::ALL {
            if let Ok(address) = parse_address(network, text) {
                let again = parse_address(network, &address.text).map(|a| a.script_pubkey);
                assert_eq!(again.ok(), Some(address.script_pubkey));
            }
        }
    }
});
