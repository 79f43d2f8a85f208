#!/usr/bin/env bash
# Install the two tools tests/unit/test_k8s.py runs on deploy/k8s, once, into
# ~/.cache/smallcups/bin, with `go install` from the Go module proxy:
#
# - kustomize renders each overlay (`kustomize build`); kubectl is not needed;
# - kubeconform validates what it renders, offline.
#
# Idempotent: a tool already there at its pinned version is left alone. Needs Go >= 1.24
# (the pinned versions' go.mod; kustomize v5.8.2 would need Go 1.26, v5.8.3 Go 1.27);
# without Go it says what to install. The schemas kubeconform validates against live in
# the repository (deploy/k8s/schemas): it never downloads one.
set -euo pipefail

kustomize_version="${KUSTOMIZE_VERSION:-v5.8.1}"
kubeconform_version="${KUBECONFORM_VERSION:-v0.7.0}"
bin_dir="${SMALLCUPS_TOOLS_BIN:-${HOME}/.cache/smallcups/bin}"

go_bin="$(command -v go || true)"
if [ -z "$go_bin" ] && [ -x /usr/local/go/bin/go ]; then
    go_bin=/usr/local/go/bin/go
fi

# install NAME VERSION PACKAGE VERSION_ARG [GO_INSTALL_FLAGS...]: `go install` PACKAGE at
# VERSION unless `NAME VERSION_ARG` already prints VERSION.
install() {
    local name="$1" version="$2" package="$3" version_arg="$4"
    shift 4
    local target="${bin_dir}/${name}"
    if [ -x "$target" ] && "$target" "$version_arg" 2>/dev/null | grep -qx "$version"; then
        return 0
    fi
    if [ -z "$go_bin" ]; then
        echo "${name} missing and no Go toolchain: install Go, then run 'bash scripts/install_k8s_tools.sh'" >&2
        exit 1
    fi
    mkdir -p "$bin_dir"
    GOBIN="$bin_dir" CGO_ENABLED=0 "$go_bin" install "$@" "${package}@${version}"
    "$target" "$version_arg"
}

# kustomize reports the module version `go install` recorded in the binary.
install kustomize "$kustomize_version" sigs.k8s.io/kustomize/kustomize/v5 version
# kubeconform's version is stamped the way its release build does it.
install kubeconform "$kubeconform_version" github.com/yannh/kubeconform/cmd/kubeconform -v \
    -ldflags "-X main.version=${kubeconform_version}"
