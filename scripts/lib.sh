# Shared settings for meshtrust's scripts. Builds and caches live under $HOME/.cache, never in the repo.
export MESHTRUST_CACHE="${MESHTRUST_CACHE:-$HOME/.cache/meshtrust}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MESHTRUST_CACHE/target}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

# Installs every real server the tests and the dev environment use (cached; a warm run takes a second).
ensure_servers() {
  "$REPO_ROOT/scripts/build-k8s" all
  "$REPO_ROOT/scripts/install-openbao"
  "$REPO_ROOT/scripts/build-helm"
  "$REPO_ROOT/scripts/build-istio" all
}

# What a test node needs besides the servers (scripts/dev-env up --nodes and the node tests): containerd, runc,
# the CNI plugins and iptables from Debian's packages, the kubelet, kube-proxy, controller manager, scheduler
# and kubectl, and the pause image (cached; a warm run takes a second).
ensure_node() {
  "$REPO_ROOT/scripts/install-node-packages"
  "$REPO_ROOT/scripts/build-k8s" node
  "$REPO_ROOT/scripts/build-image" pause >/dev/null
}

# Builds the meshtrust CLI and the dev-environment supervisor.
build_binaries() {
  (cd "$REPO_ROOT" && cargo build --quiet -p meshtrust -p meshtrust-testenv --bins)
}
