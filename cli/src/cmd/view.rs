//! Showing withdrawals: the approval statement decoded from its bytes (the truth
//! an approver signs), cross-checked against the server's plain fields.

use custos_audit::WithdrawalStatus;
use custos_policy::{ApprovalStatement, PolicyHash, Timestamp};
use custos_proto::custody::{AddressBookEntry, Withdrawal};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A terminal exit: the withdrawal left the lifecycle without paying.
fn is_exit(s: WithdrawalStatus) -> bool {
    s.is_terminal() && !matches!(s, WithdrawalStatus::Signed | WithdrawalStatus::Confirmed)
}

/// Every state name (the one list, `custos_audit::WithdrawalStatus`).
pub fn all_states() -> Vec<&'static str> {
    WithdrawalStatus::ALL.iter().map(|s| s.as_str()).collect()
}

/// Position in the lifecycle's order of progress, `None` for an exit or an
/// unknown state.
pub fn rank(state: &str) -> Option<usize> {
    let s = WithdrawalStatus::parse(state).filter(|s| !is_exit(*s))?;
    WithdrawalStatus::ALL
        .iter()
        .filter(|x| !is_exit(**x))
        .position(|x| *x == s)
}

/// Whether nothing more will happen to a withdrawal in `state` (waiting for
/// `target` does not count `confirmed` as final when waiting for it).
pub fn is_final(state: &str) -> bool {
    WithdrawalStatus::parse(state).is_some_and(|s| is_exit(s) || s == WithdrawalStatus::Confirmed)
}

/// `base` base units in human units, e.g. `1.5 ETH`, computed from the
/// statement (not taken from the server); `None` for an unknown asset.
pub fn human_amount(base: u128, asset: &str) -> Option<String> {
    custos_policy::known_decimals(asset).map(|d| custos_policy::format_units(base, d, asset))
}

/// A fee (`base` base units of `chain`'s native coin) in units and base
/// units (`0.00000141 LTC (141 base units)`), or labelled base units when
/// the coin or the number is unknown.
pub fn native_amount(chain: &str, base: &str) -> String {
    let coin = custos_chains::family::native_asset(chain);
    match (coin, base.parse::<u128>()) {
        (Some(coin), Ok(n)) => {
            custos_policy::describe_amount(n, custos_policy::known_decimals(coin), coin)
        }
        _ => format!("{base} base units of {chain}'s native coin"),
    }
}

/// Parses a human amount (`1.5`) of `asset` into base units.
pub fn parse_human(text: &str, asset: &str) -> Option<u128> {
    custos_policy::parse_units(text, custos_policy::known_decimals(asset)?)
}

fn same_address(a: &str, b: &str) -> bool {
    // EVM addresses differ only in checksum case between renderings.
    if a.starts_with("0x") && b.starts_with("0x") {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// The decoded statement of a withdrawal, the differences between it and the
/// server's plain fields, and the address-book entries of its destination.
pub struct Review {
    /// Decoded from `withdrawal.statement`.
    pub statement: ApprovalStatement,
    /// SHA-256 of the statement bytes, hex.
    pub statement_hash: String,
    /// "field: server says X, statement says Y".
    pub mismatches: Vec<String>,
    /// Address-book entries of the destination.
    pub entries: Vec<AddressBookEntry>,
}

impl Review {
    /// Decodes and cross-checks; `book` is the address book of the statement's chain
    /// (`None` if it could not be read).
    pub fn new(w: &Withdrawal, book: Option<&[AddressBookEntry]>) -> anyhow::Result<Review> {
        let statement = ApprovalStatement::decode(&w.statement).map_err(|e| {
            anyhow::anyhow!(
                "withdrawal {}: its approval statement does not decode ({e}): do not approve it",
                w.id
            )
        })?;
        let statement_hash = hex::encode(Sha256::digest(&w.statement));
        let s = &statement;
        let mut mismatches = Vec::new();
        let mut check = |field: &str, server: &str, signed: &str, same: bool| {
            if !same {
                mismatches.push(format!(
                    "{field}: server says {server:?}, the statement says {signed:?}"
                ));
            }
        };
        check("id", &w.id, &s.withdrawal_id, w.id == s.withdrawal_id);
        check("chain", &w.chain, &s.chain, w.chain == s.chain);
        check("asset", &w.asset, &s.asset, w.asset == s.asset);
        check(
            "wallet",
            &w.wallet,
            &s.source_wallet,
            w.wallet == s.source_wallet,
        );
        // Where it spends from: the signed statement's source, not the server's.
        let signed_source = s.source.as_ref().map_or(String::new(), |x| x.path.clone());
        check(
            "source path",
            &w.source_path,
            &signed_source,
            w.source_path == signed_source,
        );
        check(
            "destination",
            &w.destination,
            &s.destination,
            same_address(&w.destination, &s.destination),
        );
        let amount = s.amount.0.to_string();
        check("amount", &w.amount, &amount, w.amount == amount);
        if let Some(human) = human_amount(s.amount.0, &s.asset)
            && !w.amount_human.is_empty()
            && parse_human(
                w.amount_human
                    .trim()
                    .trim_end_matches(s.asset.as_str())
                    .trim(),
                &s.asset,
            ) != Some(s.amount.0)
        {
            check("amount_human", &w.amount_human, &human, false);
        }
        let fee_cap = s.fee_cap.0.to_string();
        check(
            "fee_cap",
            &w.fee_cap,
            &fee_cap,
            w.fee_cap.is_empty() || w.fee_cap == fee_cap,
        );
        let digest = hex::encode(&s.tx_digest);
        check(
            "tx_digest",
            &hex::encode(&w.tx_digest),
            &digest,
            w.tx_digest.is_empty() || w.tx_digest == s.tx_digest,
        );
        let policy = s.policy_hash.to_string();
        check(
            "policy_hash",
            &w.policy_hash,
            &policy,
            w.policy_hash.is_empty()
                || PolicyHash::from_hex(&w.policy_hash).ok() == Some(s.policy_hash),
        );
        check("rule", &w.rule_id, &s.rule_id, w.rule_id == s.rule_id);
        let expiry = Timestamp(s.expiry.0).to_string();
        check(
            "expires_at",
            &w.expires_at,
            &expiry,
            w.expires_at.is_empty() || Timestamp::parse(&w.expires_at).ok() == Some(s.expiry),
        );
        let entries = book
            .unwrap_or_default()
            .iter()
            .filter(|e| e.chain == s.chain && same_address(&e.address, &s.destination))
            .cloned()
            .collect::<Vec<_>>();
        if book.is_some() {
            let label = label_of(&entries);
            let server_label = w.destination_label.trim();
            if !server_label.is_empty() && !entries.iter().any(|e| label_mentions(e, server_label))
            {
                mismatches.push(format!(
                    "destination label: server says {server_label:?}, the address book says {}",
                    label
                        .as_deref()
                        .unwrap_or("the address is NOT in the address book")
                ));
            }
        }
        Ok(Review {
            statement,
            statement_hash,
            mismatches,
            entries,
        })
    }
}

fn label_mentions(e: &AddressBookEntry, text: &str) -> bool {
    text.contains(&e.id) || e.labels.iter().any(|l| text.contains(l.as_str()))
}

/// `id (label, label), whitelisted` of the entries, `None` if there are none.
pub fn label_of(entries: &[AddressBookEntry]) -> Option<String> {
    if entries.is_empty() {
        return None;
    }
    Some(
        entries
            .iter()
            .map(|e| {
                let mut t = e.id.clone();
                if !e.labels.is_empty() {
                    t.push_str(&format!(" ({})", e.labels.join(", ")));
                }
                t.push_str(if e.whitelisted {
                    ", whitelisted"
                } else {
                    ", NOT whitelisted"
                });
                if !e.usable_from.is_empty() {
                    t.push_str(&format!(", usable from {}", e.usable_from));
                }
                t
            })
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Prints the mismatches so nobody misses them (stderr, framed).
pub fn warn_mismatches(review: &Review) {
    if review.mismatches.is_empty() {
        return;
    }
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!(
        "WARNING: the server's description of withdrawal {} DIFFERS from the statement you would sign.",
        review.statement.withdrawal_id
    );
    eprintln!("Only the statement counts. Differences:");
    for m in &review.mismatches {
        eprintln!("  - {m}");
    }
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
}

/// The conclusion of the server's decision text (its last `Decision:` line; the
/// whole text when it has none). `custos show --explain` prints the full trace.
pub fn decision_summary(decision: &str) -> String {
    decision
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Decision:"))
        .map_or_else(
            || decision.trim().replace('\n', " "),
            |d| d.trim().to_string(),
        )
}

/// The full approver's view of a withdrawal as text.
pub fn render(w: &Withdrawal, review: Option<&Review>, book_note: Option<&str>) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<18} {v}\n"));
    match review {
        Some(r) => {
            let s = &r.statement;
            line("withdrawal", format!("{} ({})", s.withdrawal_id, w.state));
            line(
                "amount",
                custos_policy::describe_amount(
                    s.amount.0,
                    custos_policy::known_decimals(&s.asset),
                    &s.asset,
                ),
            );
            line("chain / asset", format!("{} / {}", s.chain, s.asset));
            line("from wallet", s.source_wallet.clone());
            if let Some(source) = &s.source {
                line(
                    "from address",
                    format!("{} (derived, path {})", source.address, source.path),
                );
            }
            line("to", s.destination.clone());
            line(
                "destination",
                match (label_of(&r.entries), book_note) {
                    (Some(l), _) => l,
                    (None, Some(note)) => format!("unknown ({note})"),
                    (None, None) => "NOT IN THE ADDRESS BOOK".into(),
                },
            );
            line("fee cap", native_amount(&s.chain, &s.fee_cap.to_string()));
            line("tx digest", hex::encode(&s.tx_digest));
            line("policy", s.policy_hash.to_string());
            line("rule", s.rule_id.clone());
        }
        None => {
            line("withdrawal", format!("{} ({})", w.id, w.state));
            line(
                "amount",
                format!("{} ({} base units)", w.amount_human, w.amount),
            );
            line("chain / asset", format!("{} / {}", w.chain, w.asset));
            line("from wallet", w.wallet.clone());
            if !w.source_path.is_empty() {
                line(
                    "from address",
                    format!("{} (derived, path {})", w.source_address, w.source_path),
                );
            }
            line("to", w.destination.clone());
            if !w.destination_label.is_empty() {
                line("destination", w.destination_label.clone());
            }
            if !w.rule_id.is_empty() {
                line("rule", w.rule_id.clone());
            }
        }
    }
    if !w.decision.is_empty() {
        line("decision", decision_summary(&w.decision));
    }
    if !w.required_approvals.is_empty() {
        line("required", w.required_approvals.clone());
    }
    line(
        "approvals so far",
        if w.approvals.is_empty() {
            "none".into()
        } else {
            w.approvals
                .iter()
                .map(|a| format!("{} ({})", a.approver, a.verdict))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    line(
        "risk",
        if w.risk_reasons.is_empty() {
            format!("{}", w.risk_score)
        } else {
            format!(
                "{}: {}",
                w.risk_score,
                w.risk_reasons
                    .iter()
                    .map(|r| format!("{} +{} ({})", r.code, r.points, r.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    );
    if w.delay_secs > 0 || !w.time_lock_until.is_empty() {
        let mut t = format!("{}s after approval", w.delay_secs);
        if !w.time_lock_until.is_empty() {
            t.push_str(&format!(", until {}", w.time_lock_until));
        }
        if !w.cancel_group.is_empty() {
            t.push_str(&format!("; group {} may cancel", w.cancel_group));
        }
        line("time lock", t);
    }
    match review {
        Some(r) => {
            line("expires", Timestamp(r.statement.expiry.0).to_string());
            line("statement sha256", r.statement_hash.clone());
        }
        None if !w.expires_at.is_empty() => line("expires", w.expires_at.clone()),
        None => {}
    }
    if !w.memo.is_empty() {
        line("memo", w.memo.clone());
    }
    if !w.initiator.is_empty() {
        line("initiator", w.initiator.clone());
    }
    if !w.reason.is_empty() {
        line("reason", w.reason.clone());
    }
    for n in &w.signer_notes {
        line("signer note", n.clone());
    }
    if !w.tx_hash.is_empty() {
        line("transaction", w.tx_hash.clone());
    }
    if !w.fee_paid.is_empty() {
        line("fee paid", native_amount(&w.chain, &w.fee_paid));
    }
    if !w.signature_r.is_empty() {
        line(
            "signature",
            format!(
                "r={} s={} v={}",
                hex::encode(&w.signature_r),
                hex::encode(&w.signature_s),
                w.recovery_id
            ),
        );
    }
    out
}

/// A withdrawal as JSON (the REST face's form, `custos_proto::json`).
pub fn withdrawal_json(w: &Withdrawal) -> Value {
    custos_proto::json::withdrawal(w)
}

/// The review as JSON: the decoded statement (policy crate JSON form), its hash,
/// the address-book entries and the mismatches.
pub fn review_json(r: &Review) -> Value {
    json!({
        "statement": r.statement,
        "statement_sha256": r.statement_hash,
        "amount_human": human_amount(r.statement.amount.0, &r.statement.asset),
        "address_book": r.entries.iter().map(|e| json!({"id": e.id, "labels": e.labels, "whitelisted": e.whitelisted, "usable_from": e.usable_from})).collect::<Vec<_>>(),
        "mismatches": r.mismatches,
    })
}

/// One line for lists: id, state, amount, wallet → destination.
pub fn summary_line(w: &Withdrawal) -> String {
    let amount = w
        .amount
        .parse::<u128>()
        .ok()
        .and_then(|a| human_amount(a, &w.asset))
        .unwrap_or_else(|| format!("{} {}", w.amount, w.asset));
    let to = if w.destination_label.is_empty() {
        w.destination.clone()
    } else {
        format!("{} ({})", w.destination, w.destination_label)
    };
    format!(
        "{:<28} {:<18} {:>20}  {} -> {}",
        w.id, w.state, amount, w.wallet, to
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn human_amounts_round_trip() {
        assert_eq!(
            human_amount(1_500_000_000_000_000_000, "ETH").unwrap(),
            "1.5 ETH"
        );
        assert_eq!(human_amount(1, "ETH").unwrap(), "0.000000000000000001 ETH");
        assert_eq!(human_amount(200_000_000, "BTC").unwrap(), "2 BTC");
        assert_eq!(human_amount(5, "XYZ"), None);
        assert_eq!(parse_human("1.5", "ETH"), Some(1_500_000_000_000_000_000));
        assert_eq!(parse_human(".5", "ETH"), Some(500_000_000_000_000_000));
        assert_eq!(parse_human("2", "BTC"), Some(200_000_000));
        assert_eq!(parse_human("1.123456789", "BTC"), None);
        assert_eq!(parse_human("1e3", "ETH"), None);
        assert_eq!(parse_human("", "ETH"), None);
    }

    fn statement() -> ApprovalStatement {
        ApprovalStatement {
            withdrawal_id: "wd-1".into(),
            chain: "ethereum".into(),
            asset: "ETH".into(),
            source_wallet: "demo-hot".into(),
            source: None,
            destination: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
            amount: custos_policy::Amount(2_000_000_000_000_000_000),
            fee_cap: custos_policy::Amount(21_000),
            tx_digest: vec![7; 32],
            policy_hash: PolicyHash([9; 32]),
            rule_id: "large-whitelisted".into(),
            expiry: Timestamp(1_800_000_000),
        }
    }

    fn withdrawal(s: &ApprovalStatement) -> Withdrawal {
        Withdrawal {
            id: s.withdrawal_id.clone(),
            wallet: s.source_wallet.clone(),
            chain: s.chain.clone(),
            asset: s.asset.clone(),
            // The server may print the address in lowercase.
            destination: s.destination.to_lowercase(),
            destination_label: "exchange-deposit".into(),
            amount: s.amount.to_string(),
            amount_human: "2 ETH".into(),
            fee_cap: s.fee_cap.to_string(),
            rule_id: s.rule_id.clone(),
            policy_hash: s.policy_hash.to_string(),
            statement: s.encode().unwrap(),
            tx_digest: s.tx_digest.clone(),
            expires_at: Timestamp(s.expiry.0).to_string(),
            state: "awaiting_approvals".into(),
            ..Withdrawal::default()
        }
    }

    fn entry(id: &str, address: &str) -> AddressBookEntry {
        AddressBookEntry {
            id: id.into(),
            labels: vec!["exchange".into()],
            chain: "ethereum".into(),
            address: address.into(),
            whitelisted: true,
            usable_from: String::new(),
        }
    }

    #[test]
    fn a_faithful_server_shows_no_mismatch() {
        let s = statement();
        let w = withdrawal(&s);
        let book = [entry("exchange-deposit", &s.destination)];
        let r = Review::new(&w, Some(&book)).unwrap();
        assert!(r.mismatches.is_empty(), "{:?}", r.mismatches);
        assert_eq!(r.entries.len(), 1);
        assert_eq!(
            r.statement_hash,
            hex::encode(Sha256::digest(s.encode().unwrap()))
        );
        let text = render(&w, Some(&r), None);
        assert!(
            text.contains("2 ETH (2000000000000000000 base units)"),
            "{text}"
        );
        assert!(
            text.contains("exchange-deposit (exchange), whitelisted"),
            "{text}"
        );
    }

    #[test]
    fn every_lie_of_the_server_is_named() {
        let s = statement();
        let book = [entry("exchange-deposit", &s.destination)];
        type Lie = fn(&mut Withdrawal);
        let lies: [(&str, Lie); 9] = [
            ("amount", |w| w.amount = "1".into()),
            ("amount_human", |w| w.amount_human = "0.2 ETH".into()),
            ("destination", |w| {
                w.destination = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359".into()
            }),
            ("wallet", |w| w.wallet = "demo-cold".into()),
            ("fee_cap", |w| w.fee_cap = "1".into()),
            ("tx_digest", |w| w.tx_digest = vec![8; 32]),
            ("rule", |w| w.rule_id = "hot-small".into()),
            ("expires_at", |w| {
                w.expires_at = "2030-01-01T00:00:00Z".into()
            }),
            ("destination label", |w| {
                w.destination_label = "payroll".into()
            }),
        ];
        for (field, lie) in lies {
            let mut w = withdrawal(&s);
            lie(&mut w);
            let r = Review::new(&w, Some(&book)).unwrap();
            assert_eq!(r.mismatches.len(), 1, "{field}: {:?}", r.mismatches);
            assert!(
                r.mismatches[0].starts_with(field),
                "{field}: {:?}",
                r.mismatches
            );
        }
        // An unknown destination is said so, not labelled.
        let w = withdrawal(&s);
        let r = Review::new(&w, Some(&[])).unwrap();
        assert!(render(&w, Some(&r), None).contains("NOT IN THE ADDRESS BOOK"));
        // Garbage is not a statement.
        let mut w = withdrawal(&s);
        w.statement.push(0);
        assert!(Review::new(&w, None).is_err());
    }

    #[test]
    fn decision_summaries_take_the_conclusion() {
        assert_eq!(
            decision_summary("Rule 1 ...\nDecision: ALLOW by rule `x`.\n"),
            "ALLOW by rule `x`."
        );
        assert_eq!(decision_summary("blocked"), "blocked");
    }

    #[test]
    fn ranks_follow_the_lifecycle() {
        assert!(rank("approved") < rank("signed"));
        assert_eq!(rank("rejected"), None);
        assert_eq!(rank("blocked"), None);
        assert_eq!((rank("requested"), rank("confirmed")), (Some(0), Some(9)));
        assert!(is_final("cancelled") && is_final("confirmed") && !is_final("signed"));
        assert!(!is_final("no-such-state"));
        assert_eq!(all_states().len(), 15);
    }
}
