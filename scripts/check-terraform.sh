#!/usr/bin/env bash
# Validates deploy/terraform offline: `terraform fmt -check`, then `init`
# against the aws provider mirrored on this machine (a CLI config whose
# filesystem_mirror is the local tf-plugins directory; nothing is
# downloaded) and `validate`. Where terraform is not installed it says so
# loudly and exits 0: the check counts only where terraform is present.
#
# Knobs: CUSTOS_TF_PLUGINS (the mirror; default the first of
# /opt/tf-plugins, $HOME/tf-plugins, ./tf-plugins that exists).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=deploy/terraform

if ! command -v terraform >/dev/null 2>&1; then
  echo "!!! terraform is not installed: $dir was NOT validated" >&2
  exit 0
fi
mirror="${CUSTOS_TF_PLUGINS:-}"
if [ -z "$mirror" ]; then
  for d in /opt/tf-plugins "$HOME/tf-plugins" ./tf-plugins; do
    if [ -d "$d/registry.terraform.io/hashicorp/aws" ]; then
      mirror="$d"
      break
    fi
  done
fi
if [ -z "$mirror" ] || [ ! -d "$mirror" ]; then
  echo "terraform is installed but no provider mirror was found (set CUSTOS_TF_PLUGINS)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/terraformrc" <<RC
provider_installation {
  filesystem_mirror {
    path    = "$(cd "$mirror" && pwd)"
    include = ["registry.terraform.io/*/*"]
  }
  direct {
    exclude = ["registry.terraform.io/*/*"]
  }
}
RC
export TF_CLI_CONFIG_FILE="$work/terraformrc"
export TF_DATA_DIR="$work/data"
export TF_IN_AUTOMATION=1
export CHECKPOINT_DISABLE=1

terraform -chdir="$dir" fmt -check -recursive -diff
terraform -chdir="$dir" init -backend=false -input=false -lockfile=readonly >"$work/init.log" 2>&1 || {
  cat "$work/init.log" >&2
  exit 1
}
terraform -chdir="$dir" validate -no-color
terraform -chdir="$dir" test -no-color
