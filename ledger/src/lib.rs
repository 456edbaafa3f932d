//! Double-entry ledger for custody wallets: accounts, balanced postings, reconciliation
