#!/usr/bin/env bash
# One test node: containerd, the kubelet and kube-proxy, run as pid 1's children inside the pid, mount and network
# namespaces `unshare` made for them (see node.rs). Everything they create (containers, mounts, interfaces,
# iptables rules) lives in those namespaces and goes with them; only the cgroup directories outlive them.
#   node.sh NODE_DIR HOST_IF NODE_IP/PREFIX GATEWAY CGROUP_ROOT IMAGE_TAR...
set -euo pipefail
node_dir="$1" host_if="$2" node_cidr="$3" gateway="$4" cgroup_root="$5"
shift 5
log() { printf '[node] %s\n' "$*" >&2; }

# Mounts: a private copy of / that is shared inside (the kubelet's volume mounts must reach containerd's
# containers), a private /run, and /var/lib and /var/log of this node's own (the kubelet, containerd and CNI keep
# state at fixed paths there).
mount --make-rshared /
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p "$node_dir/var-lib" "$node_dir/var-log"
mount --bind "$node_dir/var-lib" /var/lib
mount --bind "$node_dir/var-log" /var/log

# The kubelet sets vm.overcommit_memory=1, kernel.panic=10 and kernel.panic_on_oops=1 unless they already hold;
# those are machine-wide. Show it files holding those values instead (in this mount namespace only), so it reads
# what it wants and writes nothing.
mkdir -p "$node_dir/sysctl"
for kv in vm/overcommit_memory=1 kernel/panic=10 kernel/panic_on_oops=1; do
  key="${kv%%=*}"
  file="$node_dir/sysctl/${key//\//.}"
  printf '%s\n' "${kv#*=}" >"$file"
  mount --bind "$file" "/proc/sys/$key"
done

# Network: the veth end the host moved in becomes eth0; the host end is the gateway.
for _ in $(seq 1 100); do ip link show "$host_if" >/dev/null 2>&1 && break; sleep 0.1; done
ip link set lo up
ip link set "$host_if" name eth0
ip addr add "$node_cidr" dev eth0
ip link set eth0 up
ip route add default via "$gateway"
# Per network namespace: forward between the pods' bridge and eth0.
echo 1 >/proc/sys/net/ipv4/ip_forward
echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || true

# cgroups: the kubelet's cgroupRoot must exist in every hierarchy (cpuset needs cpus and mems before tasks join).
for hierarchy in /sys/fs/cgroup/*/; do
  mkdir -p "$hierarchy$cgroup_root"
  if [ -f "$hierarchy/cpuset.cpus" ]; then
    cat "$hierarchy/cpuset.cpus" >"$hierarchy$cgroup_root/cpuset.cpus"
    cat "$hierarchy/cpuset.mems" >"$hierarchy$cgroup_root/cpuset.mems"
  fi
done

containerd --config "$node_dir/containerd.toml" >"$node_dir/containerd.log" 2>&1 &
for _ in $(seq 1 300); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.1; done
[ -S /run/containerd/containerd.sock ] || { log "containerd did not start; see $node_dir/containerd.log"; exit 1; }
for image in "$@"; do
  ctr -n k8s.io images import "$image" >>"$node_dir/images.log" 2>&1 \
    || { log "could not import $image; see $node_dir/images.log"; exit 1; }
done

"$node_dir/bin/kubelet" --config "$node_dir/kubelet.yaml" --kubeconfig "$node_dir/kubeconfig" \
  --node-ip "${node_cidr%/*}" --hostname-override "$(cat "$node_dir/node-name")" --v=1 >"$node_dir/kubelet.log" 2>&1 &
"$node_dir/bin/kube-proxy" --config "$node_dir/kube-proxy.yaml" >"$node_dir/kube-proxy.log" 2>&1 &
touch "$node_dir/started"
# The node lives while all of them do; one exiting takes the node down (its log says why).
wait -n
log "a node process exited; stopping the node"
exit 1
