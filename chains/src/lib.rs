//! Chain adapters: transaction building, parsing, digests and RPC clients (EVM first)
