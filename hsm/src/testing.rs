//! Test support: a private SoftHSM2 installation (token directory and
//! `SOFTHSM2_CONF`) for tests of this crate and of crates that use it (for
//! example a signer node started against SoftHSM2).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, at `C_Initialize`, and a process may
//! initialise a module only once. So give each test its own installation and
//! run whatever opens the module in a child process with [`SoftHsm2::env`]
//! applied (`Command::envs`); setting the variable in-process needs `unsafe`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::HsmError;

/// Where Debian and Ubuntu install the SoftHSM2 PKCS#11 module (`apt install softhsm2`).
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 configuration with its own token directory, inside a directory the caller owns.
#[derive(Debug, Clone)]
pub struct SoftHsm2 {
    conf: PathBuf,
}

impl SoftHsm2 {
    /// Writes `<dir>/softhsm2.conf` pointing at a new `<dir>/tokens`.
    pub fn create(dir: &Path) -> Result<Self, HsmError> {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(|e| HsmError::io(&tokens, e))?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .map_err(|e| HsmError::io(&conf, e))?;
        Ok(SoftHsm2 { conf })
    }

    /// The configuration file.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The environment a child process needs to use this installation.
    pub fn env(&self) -> [(&'static str, &Path); 1] {
        [("SOFTHSM2_CONF", self.conf.as_path())]
    }

    /// Initialises a token with `softhsm2-util --init-token --free` (it gets a random slot id).
    pub fn init_token(&self, label: &str, user_pin: &str, so_pin: &str) -> Result<(), HsmError> {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", user_pin, "--so-pin", so_pin])
            .output()
            .map_err(|e| HsmError::io("softhsm2-util", e))?;
        if !out.status.success() {
            return Err(HsmError::Config(format!(
                "softhsm2-util --init-token {label:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}
