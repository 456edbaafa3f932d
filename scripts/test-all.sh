#!/usr/bin/env bash
# Installs what the tests need (idempotently), starts or reuses the services
# they talk to, then runs the format, lint and test gates. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- system packages -------------------------------------------------------
need_pkgs=()
command -v m4 >/dev/null || need_pkgs+=(m4)                      # GMP build (cggmp21)
command -v protoc >/dev/null || need_pkgs+=(protobuf-compiler)   # proto drift test
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need_pkgs+=(softhsm2)  # PKCS#11 tests
command -v pkcs11-tool >/dev/null || need_pkgs+=(opensc)         # token inspection in tests
command -v python3 >/dev/null || need_pkgs+=(python3)            # golden-vector scripts
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "==> installing ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi

# --- gates -----------------------------------------------------------------
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked -- --test-threads="${CUSTOS_TEST_THREADS:-2}"
