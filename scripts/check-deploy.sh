#!/usr/bin/env bash
# Checks the container and Kubernetes deployment files offline, in seconds:
#
# - deploy/docker/*.Dockerfile with hadolint: any finding at level warning
#   or above fails (style and info findings are printed only);
# - deploy/kubernetes/*.yaml with kubernetes-validate in strict mode (an
#   unknown field fails) against the pinned Kubernetes version's schemas,
#   which the package ships: no network is used. Every run shows it: where
#   `unshare -rn` works (a new user and network namespace with no interface
#   up), the whole check runs inside one.
#
# The tools come from scripts/install-deps.sh (a Python venv at
# $CUSTOS_DEPLOY_VENV, default ~/.cache/custos/deploy-venv). A missing tool
# fails the check: it does not skip.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CUSTOS_DEPLOY_VENV:-$HOME/.cache/custos/deploy-venv}"
k8s_version="1.33.0"

if [ -z "${CUSTOS_DEPLOY_NO_NET:-}" ]; then
  if unshare -rn true 2>/dev/null; then
    exec env CUSTOS_DEPLOY_NO_NET=1 unshare -rn "$0" "$@"
  fi
  echo "(unshare -rn is not available here: checking with the network up)"
else
  echo "(no network: running in a fresh network namespace)"
fi

for tool in hadolint kubernetes-validate; do
  if [ ! -x "$venv/bin/$tool" ]; then
    echo "$tool is not installed in $venv: run scripts/install-deps.sh" >&2
    exit 1
  fi
done
echo "==> hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}')"
"$venv/bin/hadolint" --failure-threshold warning deploy/docker/*.Dockerfile
echo "deploy/docker: $(ls deploy/docker/*.Dockerfile | wc -l) Dockerfiles, no warnings"

echo "==> kubernetes-validate --strict (Kubernetes $k8s_version)"
"$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" deploy/kubernetes/*.yaml
echo "deploy/kubernetes: $(cat deploy/kubernetes/*.yaml | grep -c '^kind:') resources valid"
