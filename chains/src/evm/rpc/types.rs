//! Values exchanged with an EVM node.

use alloy_primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};

/// Which state an account query reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockTag {
    /// The latest mined block.
    Latest,
    /// Latest plus the node's pending transactions (next nonce to use).
    Pending,
}

impl BlockTag {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::Pending => "pending",
        }
    }
}

/// EIP-1559 fees to put in a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeEstimate {
    /// The latest block's base fee, wei/gas.
    pub base_fee_per_gas: u128,
    /// Tip, wei/gas (never above `max_fee_per_gas`).
    pub max_priority_fee_per_gas: u128,
    /// `min(2 * base fee + tip, configured cap)`, wei/gas.
    pub max_fee_per_gas: u128,
}

/// A call to simulate (`eth_estimateGas`, `eth_call`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CallRequest {
    /// Sender.
    pub from: Option<Address>,
    /// Target.
    pub to: Address,
    /// Wei sent.
    pub value: U256,
    /// Calldata.
    pub data: Bytes,
}

/// The result of broadcasting a raw transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOutcome {
    /// The transaction hash (`keccak256` of the raw bytes).
    pub hash: B256,
    /// The node already had this exact transaction (pool or chain): the
    /// broadcast is a successful no-op.
    pub already_known: bool,
}

/// A mined transaction's receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The transaction hash.
    pub transaction_hash: B256,
    /// Block it was mined in.
    pub block_number: u64,
    /// `true` for status 1 (success), `false` for 0 (reverted).
    pub success: bool,
    /// Gas used by this transaction.
    pub gas_used: u64,
    /// Price paid per gas, wei.
    pub effective_gas_price: u128,
    /// Sender.
    pub from: Address,
    /// Target (`None` for a contract creation).
    pub to: Option<Address>,
    /// The created contract, for a contract creation.
    pub contract_address: Option<Address>,
}

impl Receipt {
    /// Fees paid: `gas_used * effective_gas_price`, wei.
    pub fn fee_paid_wei(&self) -> U256 {
        U256::from(self.gas_used) * U256::from(self.effective_gas_price)
    }
}
