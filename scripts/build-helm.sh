#!/usr/bin/env bash
# Build the Helm CLI from the Go module pinned in deploy/helm/go.mod into
#   ${YOLOFIT_CACHE:-~/.cache/yolofit}/helm-<version>/bin/helm
# and print its path on the last line of stdout. A cached binary is reused.
# The build runs under `nice` because another large Go build may share the machine.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
moddir="$root/deploy/helm"
version="$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" {print $3}' "$moddir/go.mod")"
[ -n "$version" ] || { echo "build-helm: no helm.sh/helm/v3 version in $moddir/go.mod" >&2; exit 1; }
# The Kubernetes version Helm assumes without a cluster (helm template/lint) follows client-go,
# as in Helm's own Makefile; otherwise it is v1.20 and `kubeVersion: >=1.28` charts fail.
k8s_minor="$(awk '$1 == "k8s.io/client-go" {split($2, v, "."); print v[2]}' "$moddir/go.mod")"
[ -n "$k8s_minor" ] || { echo "build-helm: no k8s.io/client-go version in $moddir/go.mod" >&2; exit 1; }

prefix="${YOLOFIT_CACHE:-$HOME/.cache/yolofit}/helm-$version"
bin="$prefix/bin/helm"
log="$prefix/build.log"

if [ -x "$bin" ]; then
    echo "build-helm: cached $bin" >&2
    echo "$bin"
    exit 0
fi

mkdir -p "$prefix/bin"
echo "build-helm: building helm $version from $moddir (log: $log)" >&2
tmp="$bin.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(
    cd "$moddir"
    # The same -X flags as Helm's Makefile: the version `helm version` prints and the default
    # Kubernetes version of .Capabilities and of the deprecation lint.
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
    ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
    for pkg in pkg/chartutil pkg/lint/rules; do
        ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
    done
    CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ldflags" \
        -o "$tmp" helm.sh/helm/v3/cmd/helm
) >"$log" 2>&1 || { echo "build-helm: go build failed, see $log" >&2; tail -20 "$log" >&2; exit 1; }
mv "$tmp" "$bin"
echo "build-helm: built $bin ($("$bin" version --short))" >&2
echo "$bin"
