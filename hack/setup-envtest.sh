#!/usr/bin/env bash
# Provides kube-apiserver and etcd for envtest and prints the folder that holds them
# (the value for KUBEBUILDER_ASSETS) on stdout. Progress goes to stderr.
#
# Why this script exists: setup-envtest downloads prebuilt binaries, which machines
# without general internet access cannot reach. What they can reach is the Go module
# proxy, from which both binaries build. So: use the cache under ./bin if present, try
# setup-envtest, and fall back to building from source. The result is cached keyed by
# version, so only the first run is slow (~7 minutes on 2 cores).
set -euo pipefail

K8S_VERSION="${ENVTEST_K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ENVTEST_ETCD_VERSION:-3.6.6}"
SETUP_ENVTEST_VERSION="${SETUP_ENVTEST_VERSION:-v0.25.1}"  # its own module; tagged separately

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bindir="${LOCALBIN:-$root/bin}"
dest="$bindir/k8s/${K8S_VERSION}-$(go env GOOS)-$(go env GOARCH)"

log() { printf 'setup-envtest: %s\n' "$*" >&2; }

have_assets() { [ -x "$dest/kube-apiserver" ] && [ -x "$dest/etcd" ]; }

if have_assets; then
  echo "$dest"
  exit 0
fi
mkdir -p "$dest"

try_setup_envtest() {
  local tool="$bindir/setup-envtest-$SETUP_ENVTEST_VERSION"
  if [ ! -x "$tool" ]; then
    GOBIN="$bindir/.gobin" go install "sigs.k8s.io/controller-runtime/tools/setup-envtest@$SETUP_ENVTEST_VERSION" >&2 2>/dev/null || return 1
    mv "$bindir/.gobin/setup-envtest" "$tool"
  fi
  local dir
  dir="$(timeout 60 "$tool" use "$K8S_VERSION" --bin-dir "$bindir/setup-envtest-cache" -p path 2>/dev/null)" || return 1
  [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] || return 1
  cp "$dir/kube-apiserver" "$dir/etcd" "$dest/"
}

build_kube_apiserver() {
  local work="$bindir/.build/kube-apiserver-$K8S_VERSION"
  mkdir -p "$work"
  log "building kube-apiserver v$K8S_VERSION from the Go module proxy (first run only, ~7 minutes)"
  # kube-apiserver's module points its staging modules at ./staging; a consumer must
  # replace each of them with the published module of the matching version.
  local modfile
  modfile="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  local staging_version="v0.${K8S_VERSION#1.}"  # 1.37.2 -> v0.37.2
  {
    echo "module envtest/kubeapiserver"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$modfile" |
      awk '{print $1}' |
      grep -v -E '^k8s\.io/(sample-cli-plugin|sample-controller)$' |
      sed "s|.*|replace & => & $staging_version|"
  } >"$work/go.mod"
  cat >"$work/tools.go" <<'EOF'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
EOF
  (cd "$work" && go mod tidy >&2)
  local pkg=k8s.io/component-base/version
  local minor
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  local ldflags="-s -w -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dest/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2)
}

build_etcd() {
  local work="$bindir/.build/etcd-$ETCD_VERSION"
  mkdir -p "$work"
  log "building etcd v$ETCD_VERSION from the Go module proxy (first run only, ~1 minute)"
  cat >"$work/go.mod" <<EOF
module envtest/etcd

go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
EOF
  cat >"$work/tools.go" <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
  (cd "$work" && go mod tidy >&2)
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dest/etcd" go.etcd.io/etcd/server/v3 >&2)
}

if [ "${ENVTEST_SKIP_DOWNLOAD:-}" != "true" ] && try_setup_envtest; then
  log "using binaries from setup-envtest"
else
  log "setup-envtest could not download binaries; building them from source"
  [ -x "$dest/etcd" ] || build_etcd
  [ -x "$dest/kube-apiserver" ] || build_kube_apiserver
fi

have_assets || { log "kube-apiserver or etcd missing in $dest"; exit 1; }
log "envtest binaries ready in $dest"
echo "$dest"
