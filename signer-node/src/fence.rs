//! The coordinator epoch fence: a signer refuses a request from a coordinator
//! whose leadership epoch is older than the highest one it has seen.
//!
//! # Design
//!
//! Several coordinators may share one database, one of them active at a time
//! through a lease whose every new holder gets a higher epoch (a fencing
//! token). A leader that was paused or partitioned can wake up believing it
//! still leads; its requests then carry its old epoch. Each signer keeps the
//! highest epoch it has been sent in its data directory and refuses older
//! ones, so a stale leader cannot act through the signers whatever it
//! believes. A new highest epoch is written (temp file, fsync, rename) before
//! the request that carried it is acted on: after a crash the signer still
//! refuses what it refused before.
//!
//! Epoch 0 is what a coordinator without a lease sends (SQLite, one
//! coordinator): it passes only while no lease epoch was ever seen.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::NodeError;

/// The file in the data directory holding the highest epoch seen (decimal).
pub const EPOCH_FILE: &str = "coordinator-epoch";

/// The highest coordinator epoch this signer has recorded.
#[derive(Debug)]
pub struct EpochFence {
    path: PathBuf,
    highest: Mutex<u64>,
}

impl EpochFence {
    /// Reads the recorded epoch from `data_dir` (0 if none was recorded). An
    /// unreadable or corrupt file is an error: the signer must not forget
    /// which coordinators it already fenced off.
    pub fn open(data_dir: &Path) -> Result<Self, NodeError> {
        let path = data_dir.join(EPOCH_FILE);
        let highest = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|e| NodeError::Storage {
                path: path.display().to_string(),
                message: format!("not a coordinator epoch ({e})"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(NodeError::storage(&path, e)),
        };
        Ok(Self {
            path,
            highest: Mutex::new(highest),
        })
    }

    /// The highest epoch recorded.
    pub fn highest(&self) -> u64 {
        *self.highest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a request carrying `epoch`: refuses it with
    /// [`NodeError::StaleEpoch`] if a newer epoch was recorded, records
    /// `epoch` durably first if it is newer than all seen so far.
    pub fn admit(&self, epoch: u64) -> Result<(), NodeError> {
        let mut highest = self.highest.lock().unwrap_or_else(|p| p.into_inner());
        if epoch < *highest {
            return Err(NodeError::StaleEpoch {
                epoch,
                highest: *highest,
            });
        }
        if epoch > *highest {
            custos_fsutil::write_atomic(
                &self.path,
                format!("{epoch}\n").as_bytes(),
                custos_fsutil::PRIVATE_MODE,
            )
            .map_err(|e| NodeError::storage(&self.path, e))?;
            tracing::info!(
                epoch,
                previous = *highest,
                "a new coordinator epoch: requests from older ones are refused from now on"
            );
            *highest = epoch;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refuses_older_epochs_and_remembers_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let fence = EpochFence::open(dir.path()).unwrap();
        assert_eq!(fence.highest(), 0);
        fence.admit(0).unwrap();
        assert!(
            !dir.path().join(EPOCH_FILE).exists(),
            "epoch 0 writes nothing"
        );
        fence.admit(3).unwrap();
        fence.admit(3).unwrap();
        let err = fence.admit(2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "coordinator epoch 2 older than 3: a newer coordinator leads, request refused"
        );
        assert!(matches!(
            fence.admit(0),
            Err(NodeError::StaleEpoch {
                epoch: 0,
                highest: 3
            })
        ));
        // A restart keeps the fence.
        let reopened = EpochFence::open(dir.path()).unwrap();
        assert_eq!(reopened.highest(), 3);
        assert!(reopened.admit(2).is_err());
        reopened.admit(4).unwrap();
        assert_eq!(EpochFence::open(dir.path()).unwrap().highest(), 4);
    }

    #[test]
    fn a_corrupt_epoch_file_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(EPOCH_FILE), "seven").unwrap();
        let err = EpochFence::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a coordinator epoch"), "{err}");
    }
}
