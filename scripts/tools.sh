#!/usr/bin/env bash
# Build the pinned Go tools CryoKube's tests and install docs use into .tools/bin (git-ignored).
#
# Every tool comes from the Go module proxy at an exact version. A tool is rebuilt only when its
# binary is missing or its recorded pin differs, so a warm run takes well under a second.
#
# Usage: scripts/tools.sh [NAME ...]   (no NAME: every tool in TOOLS below)
#
# To add a tool, append one line to TOOLS:
#   NAME  install  PACKAGE_PATH  VERSION     [LDFLAGS]  -> GOBIN=.tools/bin go install PACKAGE_PATH@VERSION
#   NAME  module   TOOL_DIR      MODULE@VER  [LDFLAGS]  -> go install tool, inside TOOL_DIR (a
#         committed go.mod/go.sum with a `tool` directive), for programs the proxy serves only as
#         a dependency.
# Several NAMEs may share one TOOL_DIR whose go.mod declares them all (tools/kubernetes: the
# control plane of the cluster test tier, tests/e2e); the first builds them all, the others then
# only record their pin. A module tool's binary is named after the last element of its package
# path (before a /vN suffix), so etcd (package go.etcd.io/etcd/server/v3) lands as `server` and
# INSTALLED_AS renames it.
# LDFLAGS (the rest of the line) stamp what a release build would, e.g. helm's version and the
# Kubernetes version `helm template` assumes without a cluster (helm's Makefile derives it from
# its client-go: v0.37 -> 1.37).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"

TOOLS=(
  "helm          install  helm.sh/helm/v3/cmd/helm  v3.22.0  -X helm.sh/helm/v3/internal/version.version=v3.22.0 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37"
  "oauth2-proxy  module   tools/oauth2-proxy        github.com/oauth2-proxy/oauth2-proxy/v7@v7.15.4  -X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=v7.15.4"
  "kube-apiserver module   tools/kubernetes          k8s.io/kubernetes@v1.37.2  -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=v1.37.2 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37"
  "kube-controller-manager module   tools/kubernetes          k8s.io/kubernetes@v1.37.2  -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=v1.37.2 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37"
  "kube-scheduler module   tools/kubernetes          k8s.io/kubernetes@v1.37.2  -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=v1.37.2 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37"
  "kubectl       module   tools/kubernetes          k8s.io/kubernetes@v1.37.2  -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=v1.37.2 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37"
  "etcd          module   tools/kubernetes          k8s.io/kubernetes@v1.37.2  -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=v1.37.2 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37"
  "kwok          module   tools/kwok                sigs.k8s.io/kwok@v0.8.0"
)

# Binaries `go install` names differently from their tool NAME.
declare -A INSTALLED_AS=([etcd]=server)

build_tool() {
  local name="$1" kind="$2" where="$3" pin="$4" ldflags="$5"
  local stamp="$BIN/.$name.pin"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$kind $where $pin $ldflags" ]]; then
    return 0
  fi
  echo "tools.sh: building $name ($pin); cold builds take minutes" >&2
  local started=$SECONDS
  case "$kind" in
    install)
      GOBIN="$BIN" CGO_ENABLED=0 nice -n 10 go install -ldflags="$ldflags" "$where@$pin"
      ;;
    module)
      # The committed go.mod pins the version; check that it still matches the pin above.
      if ! grep -q "${pin#*@}" "$ROOT/$where/go.mod"; then
        echo "tools.sh: $where/go.mod does not require ${pin}" >&2
        return 1
      fi
      (cd "$ROOT/$where" && GOBIN="$BIN" CGO_ENABLED=0 nice -n 10 go install -ldflags="$ldflags" tool)
      local installed="${INSTALLED_AS[$name]:-}"
      if [[ -n "$installed" && -x "$BIN/$installed" ]]; then
        mv -f "$BIN/$installed" "$BIN/$name"
      fi
      ;;
    *)
      echo "tools.sh: unknown kind '$kind' for $name" >&2
      return 1
      ;;
  esac
  echo "$kind $where $pin $ldflags" >"$stamp"
  echo "tools.sh: built $name in $((SECONDS - started)) s" >&2
}

if ! command -v go >/dev/null 2>&1; then
  echo "tools.sh: the Go toolchain is required (https://go.dev/dl/); none on PATH" >&2
  exit 1
fi
mkdir -p "$BIN"

wanted=("$@")
found=0
for line in "${TOOLS[@]}"; do
  read -r name kind where pin ldflags <<<"$line"
  if [[ ${#wanted[@]} -eq 0 || " ${wanted[*]} " == *" $name "* ]]; then
    build_tool "$name" "$kind" "$where" "$pin" "$ldflags"
    found=$((found + 1))
  fi
done
if [[ ${#wanted[@]} -gt 0 && $found -ne ${#wanted[@]} ]]; then
  echo "tools.sh: unknown tool in: ${wanted[*]}" >&2
  exit 1
fi
