#!/usr/bin/env bash
# Builds the embedded cluster's Go binaries from upstream Go modules at pinned
# versions (our own go.mod/go.sum per component under devcluster/build/).
#
# Output goes to a cache outside the checkout that later runs on the same
# machine reuse:   ${KILN_CACHE:-$HOME/.cache/kiln}/bin/<component>-<version>/
# plus           ${KILN_CACHE:-$HOME/.cache/kiln}/bin/current/  (symlinks to all)
#
#   devcluster/build.sh              build what is missing (idempotent), in order of importance
#   devcluster/build.sh --print-bin  print the directory holding all binaries (builds nothing)
#   devcluster/build.sh --print-crds print the directory holding the training-operator's CRDs
#   devcluster/build.sh --print-kueue-crds  print the directory holding Kueue's CRDs
#   devcluster/build.sh COMPONENT..  build only these (kubernetes etcd helm training-operator kueue pause coredns
#                                     versitygw kstatus)
#
# The machine has 2 cores and CI 90 minutes in total, so builds run one at a
# time with `-p 2`, the longest and most important (kubernetes) first, and each
# build's wall time is printed and appended to the cache's build-times.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${KILN_CACHE:-$HOME/.cache/kiln}"
BIN_ROOT="$CACHE/bin"
CURRENT="$BIN_ROOT/current"

# Pinned versions: the go.mod under devcluster/build/<component>/ must agree.
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.19.5
TRAINING_OPERATOR_VERSION=v1.9.3
COREDNS_VERSION=v1.14.7
PAUSE_VERSION=3.10-kiln1
VERSITYGW_VERSION=v1.8.0
KUEUE_VERSION=v0.17.0  # sigs.k8s.io/kueue: the newest on the proxy; built on client-go v0.35 (one minor behind the cluster, within client-go's skew)
KSTATUS_VERSION=v0.37.2  # sigs.k8s.io/cli-utils, whose kstatus is Flux's health verdict (tests only)

# Static binaries; trimmed paths keep the build cache shareable across checkouts.
export CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
GO_P="${KILN_GO_P:-2}"

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# link_current DIR: point current/<binary> at each binary of DIR.
link_current() {
  mkdir -p "$CURRENT"
  local f
  for f in "$1"/*; do
    [ -f "$f" ] && ln -sfn "$f" "$CURRENT/$(basename "$f")"
  done
  return 0
}

# go_build NAME VERSION MODDIR LDFLAGS PKG...: one `go build` for all PKGs of a
# component (they share compiled packages), into a temp dir renamed into place
# only on success so an interrupted build is never mistaken for a finished one.
go_build() {
  local name="$1" version="$2" moddir="$3" ldflags="$4"
  shift 4
  local out="$BIN_ROOT/$name-$version"
  local pkg complete=1
  for pkg in "$@"; do [ -f "$out/$(basename "$pkg")" ] || complete=0; done
  [ "$name" = etcd ] && complete=1  # its binary is renamed after the build
  if [ -d "$out" ] && [ "$complete" = 1 ]; then
    log "$name $version: cached in $out"
    link_current "$out"
    return 0
  fi
  mkdir -p "$BIN_ROOT"
  local tmp="$out.partial.$$"
  rm -rf "$tmp" "$out" && mkdir -p "$tmp"
  log "$name $version: go mod download"
  (cd "$moddir" && go mod download)
  log "$name $version: go build -p $GO_P $* (this is the slow part)"
  local start=$SECONDS
  (cd "$moddir" && go build -p "$GO_P" -ldflags="-s -w $ldflags" -o "$tmp/" "$@")
  local took=$((SECONDS - start))
  mv "$tmp" "$out"
  printf '%s\t%s\t%s\t%ss\n' "$(date -u +%FT%TZ)" "$name" "$version" "$took" >>"$BIN_ROOT/build-times.log"
  log "$name $version: built in ${took}s -> $out"
  link_current "$out"
}

build_kubernetes() {
  local minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  local ld="" pkg
  # The same variables exist in component-base (servers, kubectl) and client-go
  # (what kubectl prints as its client version).
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  go_build kubernetes "$K8S_VERSION" "$HERE/build/kubernetes" "$ld" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy
}

build_etcd() {
  go_build etcd "$ETCD_VERSION" "$HERE/build/etcd" "" go.etcd.io/etcd/server/v3
  # go names the server module's main package "server" (the element before /v3).
  local out="$BIN_ROOT/etcd-$ETCD_VERSION"
  if [ -f "$out/server" ]; then mv "$out/server" "$out/etcd"; rm -f "$CURRENT/server"; link_current "$out"; fi
}

build_helm() {
  local ld="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" minor="${K8S_VERSION#v1.}" pkg
  minor="${minor%%.*}"
  # The Kubernetes version `helm lint`/`helm template` assume (upstream's Makefile sets these too;
  # unset they say 1.20): the version of the cluster we build.
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  # The assumed Kubernetes version is part of the cache key: a new pin rebuilds helm.
  go_build helm "$HELM_VERSION-kube1.$minor" "$HERE/build/helm" "$ld" helm.sh/helm/v3/cmd/helm
}

build_training_operator() {
  local mod="github.com/kubeflow/training-operator"
  go_build training-operator "$TRAINING_OPERATOR_VERSION" "$HERE/build/training-operator" "" \
    "$mod/cmd/training-operator.v1"
  # Its CRDs come from the same module source, so they match the binary.
  local out="$BIN_ROOT/training-operator-$TRAINING_OPERATOR_VERSION"
  local crds="$CACHE/crds/training-operator-$TRAINING_OPERATOR_VERSION"
  if [ ! -f "$crds/kubeflow.org_pytorchjobs.yaml" ]; then
    local src
    src="$(cd "$HERE/build/training-operator" && go list -m -f '{{.Dir}}' "$mod")"
    mkdir -p "$crds"
    cp "$src/manifests/base/crds/kubeflow.org_pytorchjobs.yaml" "$crds/"
    chmod u+w "$crds"/*.yaml
  fi
  ln -sfn "$crds" "$CACHE/crds/current"
}

build_kueue() {
  local mod="sigs.k8s.io/kueue"
  go_build kueue "$KUEUE_VERSION" "$HERE/build/kueue" "-X $mod/pkg/version.GitVersion=$KUEUE_VERSION" "$mod/cmd/kueue"
  # Its CRDs and webhook manifests come from the same module source (kustomize's inputs; the dev
  # cluster points them at its own Service itself, kiln_devcluster/kueue.py), so they match the binary.
  local crds="$CACHE/crds/kueue-$KUEUE_VERSION"
  if [ ! -f "$crds/webhooks.yaml" ]; then
    local src
    src="$(cd "$HERE/build/kueue" && go list -m -f '{{.Dir}}' "$mod")"
    mkdir -p "$crds"
    cp "$src"/config/components/crd/bases/*.yaml "$crds/"
    cp "$src/config/components/webhook/manifests.yaml" "$crds/webhooks.yaml"
    chmod u+w "$crds"/*.yaml
  fi
  ln -sfn "$crds" "$CACHE/crds/kueue-current"
}

build_coredns() {
  # A main with only the plugins the dev cluster's Corefile uses (build/coredns/main.go).
  go_build coredns "$COREDNS_VERSION" "$HERE/build/coredns" \
    "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" kiln.local/coredns
}

build_pause() {
  # The pods' sandbox process (build/pause/main.go), made into the node image kiln.local/pause.
  go_build pause "$PAUSE_VERSION" "$HERE/build/pause" "" kiln.local/pause
}

build_versitygw() {
  # The dev cluster's S3 server (posix backend, SigV4 per identity), pinned in build/versitygw/go.mod.
  go_build versitygw "$VERSITYGW_VERSION" "$HERE/build/versitygw" "" github.com/versity/versitygw/cmd/versitygw
}

build_kstatus() {
  # Flux's kstatus over JSON files (build/kstatus/main.go), for tests/unit/operator/test_kstatus.py.
  go_build kstatus "$KSTATUS_VERSION" "$HERE/build/kstatus" "" kiln.local/kstatus
}

print_bin() { echo "$CURRENT"; }

main() {
  case "${1:-}" in
    --print-bin) print_bin; return 0 ;;
    --print-crds) echo "$CACHE/crds/current"; return 0 ;;
    --print-kueue-crds) echo "$CACHE/crds/kueue-current"; return 0 ;;
  esac
  command -v go >/dev/null || { log "go is not on PATH (need go >= 1.26)"; exit 1; }
  local components=("$@")
  [ ${#components[@]} -gt 0 ] || components=(kubernetes etcd training-operator kueue helm pause coredns versitygw kstatus)
  local c total_start=$SECONDS
  for c in "${components[@]}"; do
    case "$c" in
      kubernetes) build_kubernetes ;;
      etcd) build_etcd ;;
      helm) build_helm ;;
      training-operator) build_training_operator ;;
      kueue) build_kueue ;;
      pause) build_pause ;;
      coredns) build_coredns ;;
      versitygw) build_versitygw ;;
      kstatus) build_kstatus ;;
      *) log "unknown component '$c' (known: kubernetes etcd helm training-operator kueue pause coredns versitygw kstatus)"; exit 2 ;;
    esac
  done
  log "all done in $((SECONDS - total_start))s; binaries in $CURRENT"
}

# On one line with exit: bash reads scripts as it runs them, so an edit of this
# file during a long build must not be read after main returns.
main "$@"; exit $?
