//! The chain transaction signed for an approved intent.
//!
//! Approvals bind a transfer intent (the withdrawal's fields and fee cap,
//! `custos_policy::intent_digest`); on chains with a transaction adapter the
//! signers sign the transaction built from it, whose digest differs. The
//! coordinator logs each such transaction (`transaction_prepared`) before
//! its signing session, so the replay links the two: the signed digest is
//! the signing digest of a logged transaction, and that transaction pays the
//! approved destination exactly the approved amount, with fees within the
//! approved cap.
//!
//! Not re-checked: the chain id and an ERC-20 token's contract address
//! (chain configuration the log does not carry); the signers check both
//! against their own configuration.
//!
//! UTXO chains: the logged PSBT must have the signed digest among its
//! inputs' digests, pay the approved destination exactly the approved amount
//! in output 0, send anything else back to the script its inputs spend
//! (change), and pay a fee within the approved cap. That the spent script is
//! the wallet key's is the signers' check (the log's PSBT carries no key).

use custos_audit::{Entry, EntryBody};
use custos_chains::U256;
use custos_chains::evm::address::parse_address;
use custos_chains::evm::tx::{decode_unsigned, decode_unsigned_transfer, signing_digest};
use custos_chains::family::{ChainFamily, family_of};
use custos_chains::utxo::{self, UtxoNetwork};
use custos_policy::{ApprovalStatement, Withdrawal, intent_digest};

use crate::VerifyError;

/// Checks that `message_digest`, signed for the approved `statement` (first
/// logged in approval entry `approval`) of `withdrawal` (the logged
/// request), is a logged transaction that moves what was approved.
/// `history` is the withdrawal's entries before the signature.
pub(crate) fn check_prepared_transaction(
    history: &[&Entry],
    withdrawal: &Withdrawal,
    statement: &ApprovalStatement,
    message_digest: &[u8],
    approval: u64,
) -> Result<(), VerifyError> {
    let w = check_intent(withdrawal, statement, message_digest, approval)?;
    match family_of(&w.chain) {
        Some(ChainFamily::Utxo(network)) => {
            return check_prepared_psbt(history, &w, network, message_digest, approval);
        }
        Some(ChainFamily::Message) => {
            return check_prepared_message(history, &w, message_digest, approval);
        }
        _ => {}
    }
    let Some((entry, tx)) = history.iter().find_map(|e| match &e.body {
        EntryBody::TransactionPrepared { unsigned_tx, .. }
            if decode_unsigned(unsigned_tx)
                .is_ok_and(|u| signing_digest(&u).as_slice() == message_digest) =>
        {
            Some((e.index, unsigned_tx))
        }
        _ => None,
    }) else {
        return Err(VerifyError::NoPreparedTransaction {
            approval,
            digest: hex::encode(message_digest),
            withdrawal: w.id,
        });
    };
    let (_, transfer) =
        decode_unsigned_transfer(tx).map_err(|source| VerifyError::NotATransfer {
            approval,
            entry,
            source: Box::new(source),
        })?;
    let destination =
        parse_address(&w.destination).map_err(|source| VerifyError::BadDestination {
            approval,
            destination: w.destination.clone(),
            source: Box::new(source),
        })?;
    if transfer.recipient != destination {
        return Err(VerifyError::WrongRecipient {
            approval,
            entry,
            pays: transfer.recipient.to_string(),
            approved: destination.to_string(),
        });
    }
    if transfer.amount != U256::from(w.amount.0) {
        return Err(VerifyError::WrongAmount {
            approval,
            entry,
            moves: transfer.amount,
            approved: w.amount,
        });
    }
    if transfer.fee_cap_wei > U256::from(statement.fee_cap.0) {
        return Err(VerifyError::FeeAboveCap {
            approval,
            entry,
            fee: transfer.fee_cap_wei,
            cap: statement.fee_cap,
        });
    }
    Ok(())
}

/// The `message` chain: the signed digest is the SHA-256 of the approved
/// message (the destination), which was logged as what is signed.
fn check_prepared_message(
    history: &[&Entry],
    w: &Withdrawal,
    message_digest: &[u8],
    approval: u64,
) -> Result<(), VerifyError> {
    let message = custos_chains::message::parse_message(&w.destination).map_err(|source| {
        VerifyError::BadDestination {
            approval,
            destination: w.destination.clone(),
            source: Box::new(source),
        }
    })?;
    let logged = history.iter().any(|e| {
        matches!(&e.body, EntryBody::TransactionPrepared { unsigned_tx, .. } if *unsigned_tx == message)
    });
    if !logged || custos_chains::message::message_digest(&message).as_slice() != message_digest {
        return Err(VerifyError::NoPreparedTransaction {
            approval,
            digest: hex::encode(message_digest),
            withdrawal: w.id.clone(),
        });
    }
    Ok(())
}

/// Checks that the approved `statement`'s digest (first logged in approval
/// entry `approval`) is the transfer intent of `withdrawal` (the logged
/// request) with the approved fee cap, which it returns; `message_digest`
/// (what was signed) is for the message.
pub(crate) fn check_intent(
    withdrawal: &Withdrawal,
    statement: &ApprovalStatement,
    message_digest: &[u8],
    approval: u64,
) -> Result<Withdrawal, VerifyError> {
    // The source of a withdrawal from a derived address is not in the
    // request entry; the approved statement binds it (version 2), so the
    // intent is the request's from that source.
    let w = Withdrawal {
        fee_cap: statement.fee_cap,
        source: statement.source.clone(),
        ..withdrawal.clone()
    };
    let intent = intent_digest(&w);
    if statement.tx_digest.as_slice() != intent.as_slice() {
        return Err(VerifyError::IntentMismatch {
            approval,
            approved: hex::encode(&statement.tx_digest),
            signed: hex::encode(message_digest),
            intent: hex::encode(intent),
        });
    }
    Ok(w)
}

/// [`check_prepared_transaction`] on a UTXO chain (module docs).
fn check_prepared_psbt(
    history: &[&Entry],
    w: &Withdrawal,
    network: UtxoNetwork,
    message_digest: &[u8],
    approval: u64,
) -> Result<(), VerifyError> {
    let destination = utxo::parse_address(network, &w.destination).map_err(|source| {
        VerifyError::BadDestination {
            approval,
            destination: w.destination.clone(),
            source: Box::new(source),
        }
    })?;
    let payout = utxo::Payout {
        withdrawal_id: w.id.clone(),
        script_pubkey: destination.script_pubkey,
        amount: u64::try_from(w.amount.0).unwrap_or(u64::MAX),
        fee_cap: u64::try_from(w.fee_cap.0).unwrap_or(u64::MAX),
    };
    let mut refusal = None;
    for e in history {
        let EntryBody::TransactionPrepared { unsigned_tx, .. } = &e.body else {
            continue;
        };
        let checked = utxo::spent_script(unsigned_tx)
            .and_then(|own| utxo::check_psbt(unsigned_tx, std::slice::from_ref(&payout), &[own]));
        match checked {
            Ok(c) if c.digests.iter().any(|d| d.as_slice() == message_digest) => return Ok(()),
            Ok(_) => {}
            // A logged PSBT that moves something other than approved (its
            // digests are not trusted then): named if nothing else matches.
            Err(source) => {
                refusal.get_or_insert(VerifyError::NotATransfer {
                    approval,
                    entry: e.index,
                    source: Box::new(source),
                });
            }
        }
    }
    Err(refusal.unwrap_or(VerifyError::NoPreparedTransaction {
        approval,
        digest: hex::encode(message_digest),
        withdrawal: w.id.clone(),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use custos_chains::evm::asset::Asset;
    use custos_chains::evm::tx::{TransferRequest, build_unsigned, encode_unsigned};
    use custos_policy::{Amount, PolicyHash, Timestamp};

    const TO: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    const OTHER: &str = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";
    const FEE_CAP: u128 = 2_100_000_000_000_000;

    fn withdrawal() -> Withdrawal {
        Withdrawal {
            source: None,
            id: "wd-1".into(),
            wallet: "w-eth".into(),
            chain: "anvil".into(),
            asset: "ETH".into(),
            destination: TO.into(),
            amount: Amount(1_500_000_000_000_000_000),
            fee_cap: Amount(FEE_CAP),
            initiator: "payments-backend".into(),
            tx_digest: String::new(),
        }
    }

    fn statement(w: &Withdrawal) -> ApprovalStatement {
        ApprovalStatement {
            source: None,
            withdrawal_id: w.id.clone(),
            chain: w.chain.clone(),
            asset: w.asset.clone(),
            source_wallet: w.wallet.clone(),
            destination: w.destination.clone(),
            amount: w.amount,
            fee_cap: Amount(FEE_CAP),
            tx_digest: intent_digest(w).to_vec(),
            policy_hash: PolicyHash([1; 32]),
            rule_id: "two".into(),
            expiry: Timestamp(2_000_000_000),
        }
    }

    /// An unsigned EIP-1559 ETH transfer from a fixed wallet.
    pub(crate) fn tx(to: &str, amount: u128, max_fee_per_gas: u128) -> Vec<u8> {
        encode_unsigned(
            &build_unsigned(&TransferRequest {
                chain_id: 31337,
                from: parse_address("0x90F79bf6EB2c4f870365E785982E1f101E93b906").unwrap(),
                recipient: parse_address(to).unwrap(),
                asset: Asset::eth(),
                amount: U256::from(amount),
                nonce: 0,
                gas_limit: 21_000,
                max_fee_per_gas,
                max_priority_fee_per_gas: 1,
            })
            .unwrap(),
        )
    }

    /// Its signing digest.
    pub(crate) fn digest(tx: &[u8]) -> Vec<u8> {
        signing_digest(&decode_unsigned(tx).unwrap()).to_vec()
    }

    fn prepared(index: u64, unsigned_tx: Vec<u8>) -> Entry {
        Entry {
            index,
            timestamp_ms: 1_700_000_000_000 + index,
            body: EntryBody::TransactionPrepared {
                withdrawal_id: "wd-1".into(),
                chain: "anvil".into(),
                unsigned_tx,
            },
        }
    }

    fn check(entries: &[Entry], st: &ApprovalStatement, d: &[u8]) -> Result<(), String> {
        let history: Vec<&Entry> = entries.iter().collect();
        check_prepared_transaction(&history, &withdrawal(), st, d, 7).map_err(|e| e.explain())
    }

    #[test]
    fn a_logged_transaction_of_the_approved_transfer_links_the_digests() {
        let w = withdrawal();
        let st = statement(&w);
        let good = tx(TO, w.amount.0, 1_000_000_000);
        assert_eq!(
            check(&[prepared(1, good.clone())], &st, &digest(&good)),
            Ok(())
        );
        // Nothing logged with that digest.
        let e = check(&[], &st, &digest(&good)).unwrap_err();
        assert!(e.contains("no transaction_prepared entry"), "{e}");
        // Logged, but paying someone else, another amount, or above the cap.
        for (bad, why) in [
            (tx(OTHER, w.amount.0, 1_000_000_000), "pays"),
            (tx(TO, w.amount.0 + 1, 1_000_000_000), "moves"),
            (
                tx(TO, w.amount.0, FEE_CAP / 21_000 + 1),
                "above the approved fee cap",
            ),
        ] {
            let e = check(&[prepared(2, bad.clone())], &st, &digest(&bad)).unwrap_err();
            assert!(
                e.starts_with("approval entry 7: transaction_prepared entry 2 ") && e.contains(why),
                "{why}: {e}"
            );
        }
        // A statement whose digest is not the request's intent.
        let mut other = st.clone();
        other.tx_digest = vec![9; 32];
        let e = check(&[prepared(1, good.clone())], &other, &digest(&good)).unwrap_err();
        assert!(e.contains("transfer intent"), "{e}");
    }

    /// On a UTXO chain the logged PSBT links the digests: any input's
    /// digest of a PSBT paying the approved output, change back to the
    /// spent script and a fee within the cap; a PSBT with an extra output
    /// is named.
    #[test]
    fn a_logged_psbt_of_the_approved_payout_links_each_input_digest() {
        use custos_chains::utxo::{BuildRequest, Payout, testing, wallet_address};
        let net = UtxoNetwork::LitecoinRegtest;
        let key = |seed: u8| {
            let sk = k256::SecretKey::from_slice(&[seed; 32]).unwrap();
            k256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&sk.public_key(), true)
                .as_bytes()
                .to_vec()
        };
        let wallet = wallet_address(net, &key(1)).unwrap();
        let payee = wallet_address(net, &key(2)).unwrap();
        let thief = wallet_address(net, &key(3)).unwrap();
        let mut w = withdrawal();
        w.chain = "litecoin-regtest".into();
        w.asset = "LTC".into();
        w.destination = payee.text.clone();
        w.amount = Amount(150_000);
        w.fee_cap = Amount(10_000);
        let mut st = statement(&w);
        st.tx_digest = intent_digest(&w).to_vec();
        st.fee_cap = Amount(10_000);
        let coins = testing::coins(&wallet.script_pubkey, &[100_000, 90_000]);
        let build = |payouts: &[Payout]| {
            utxo::build_unsigned(&BuildRequest {
                coins: &coins,
                required: &[],
                payouts,
                change_script: &wallet.script_pubkey,
                fee_rate_sat_per_kvb: 2_000,
            })
            .unwrap()
            .psbt
        };
        let pay = |script: &custos_chains::utxo::UtxoAddress, amount| Payout {
            withdrawal_id: w.id.clone(),
            script_pubkey: script.script_pubkey.clone(),
            amount,
            fee_cap: 10_000,
        };
        let good = build(&[pay(&payee, 150_000)]);
        let digests = utxo::check_psbt(
            &good,
            &[pay(&payee, 150_000)],
            std::slice::from_ref(&wallet.script_pubkey),
        )
        .unwrap()
        .digests;
        assert_eq!(digests.len(), 2);
        let run = |tx: Vec<u8>, d: &[u8]| {
            let e = prepared(1, tx);
            check_prepared_transaction(&[&e], &w, &st, d, 7).map_err(|e| e.explain())
        };
        for d in &digests {
            assert_eq!(run(good.clone(), d), Ok(()));
        }
        let e = run(good.clone(), &[9; 32]).unwrap_err();
        assert!(e.contains("no transaction_prepared entry"), "{e}");
        let stolen = build(&[pay(&payee, 150_000), pay(&thief, 10_000)]);
        let e = run(stolen, &digests[0]).unwrap_err();
        assert!(
            e.contains("not a transfer") && e.contains("outputs beyond"),
            "{e}"
        );
    }
}
