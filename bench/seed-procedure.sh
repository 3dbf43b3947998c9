#!/usr/bin/env bash
# The seeds' shell procedure, for the benchmark: what an operator runs today with bao + openssl + kubectl.
# Phase "bootstrap": seed 000 phase 1 + seed 001's bootstrap (root in OpenBao, intermediate per cluster into
# cacerts) and seed 000 step 3 (reader token -> kubeconfig -> bao kv put -> remote secret in the peer).
# Phase "verify": seed 001's fingerprint comparison.
# Needs: BAO (binary), BAO_ADDR, BAO_TOKEN, WORK, CLUSTERS ("name=kubeconfig=server ...").
set -euo pipefail
phase="$1"
cd "$WORK"
read -r -a clusters <<<"$CLUSTERS"
name() { echo "${1%%=*}"; }
kc() { local r="${1#*=}"; echo "${r%%=*}"; }
server() { echo "${1##*=}"; }

if [ "$phase" = bootstrap ]; then
  "$BAO" secrets enable pki >/dev/null
  "$BAO" secrets tune -max-lease-ttl=87600h pki >/dev/null
  "$BAO" write -field=certificate pki/root/generate/internal common_name="seed root" key_type=rsa key_bits=4096 ttl=87600h >root.pem
  for c in "${clusters[@]}"; do
    n=$(name "$c"); k=$(kc "$c")
    openssl ecparam -name prime256v1 -genkey -noout -out "$n-key.pem"
    openssl req -new -key "$n-key.pem" -subj "/O=Istio/CN=$n intermediate" -out "$n.csr" 2>/dev/null
    "$BAO" write -field=certificate pki/root/sign-intermediate csr=@"$n.csr" common_name="$n intermediate" ttl=8760h max_path_length=0 format=pem >"$n-cert.pem"
    cat "$n-cert.pem" root.pem >"$n-chain.pem"
    kubectl --kubeconfig "$k" create namespace istio-system >/dev/null
    kubectl --kubeconfig "$k" -n istio-system create secret generic cacerts --from-file=ca-cert.pem="$n-cert.pem" \
      --from-file=ca-key.pem="$n-key.pem" --from-file=root-cert.pem=root.pem --from-file=cert-chain.pem="$n-chain.pem" >/dev/null
    # seed 000 step 3, istioctl replaced by what it does: reader account, RBAC, token, kubeconfig.
    kubectl --kubeconfig "$k" -n istio-system create serviceaccount istio-reader-service-account >/dev/null
    kubectl --kubeconfig "$k" create clusterrole istio-reader-clusterrole-istio-system --verb=get,list,watch \
      --resource=endpoints,pods,services,nodes,namespaces,secrets,configmaps,endpointslices.discovery.k8s.io,replicasets.apps >/dev/null
    kubectl --kubeconfig "$k" create clusterrolebinding istio-reader-clusterrole-istio-system \
      --clusterrole=istio-reader-clusterrole-istio-system --serviceaccount=istio-system:istio-reader-service-account >/dev/null
    token=$(kubectl --kubeconfig "$k" -n istio-system create token istio-reader-service-account --duration=24h)
    ca=$(kubectl --kubeconfig "$k" config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
    printf 'apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: %s\n    server: %s\n  name: %s\ncontexts:\n- context:\n    cluster: %s\n    user: %s\n  name: %s\ncurrent-context: %s\nkind: Config\nusers:\n- name: %s\n  user:\n    token: %s\n' \
      "$ca" "$(server "$c")" "$n" "$n" "$n" "$n" "$n" "$n" "$token" >"$n-kubeconfig"
    "$BAO" kv put "secret/istio/remote-secrets/$n" "$n=@$n-kubeconfig" >/dev/null
  done
  # seed 000 step 4: every peer gets the others' remote secrets.
  for c in "${clusters[@]}"; do
    n=$(name "$c"); k=$(kc "$c")
    for p in "${clusters[@]}"; do
      pn=$(name "$p"); [ "$pn" = "$n" ] && continue
      "$BAO" kv get -field="$pn" "secret/istio/remote-secrets/$pn" >"$pn-fetched"
      kubectl --kubeconfig "$k" -n istio-system create secret generic "istio-remote-secret-$pn" --from-file="$pn=$pn-fetched" >/dev/null
      kubectl --kubeconfig "$k" -n istio-system label secret "istio-remote-secret-$pn" istio/multiCluster=true >/dev/null
      kubectl --kubeconfig "$k" -n istio-system annotate secret "istio-remote-secret-$pn" "networking.istio.io/cluster=$pn" >/dev/null
    done
  done
elif [ "$phase" = verify ]; then
  first=""
  for c in "${clusters[@]}"; do
    fp=$(kubectl --kubeconfig "$(kc "$c")" -n istio-system get secret cacerts -o jsonpath='{.data.root-cert\.pem}' | base64 -d | openssl x509 -fingerprint -noout)
    [ -z "$first" ] && first="$fp"
    [ "$fp" = "$first" ] || { echo "root mismatch" >&2; exit 1; }
  done
fi
