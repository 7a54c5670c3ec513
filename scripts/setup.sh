#!/usr/bin/env bash
# Installs everything Signet's tests and demo need on a fresh Debian machine.
# Idempotent: installs only what is missing. Runs apt-get and npm as root
# (through sudo when started as another user).
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

# Debian packages: SoftHSM2 (PKCS#11 token), groovy (Jenkins shared library
# checks), rsync, nodejs/npm (gitlab-ci-local), opensc (pkcs11-tool), strace.
# A package counts as present when its command is on PATH (nodesource's
# nodejs bundles npm and conflicts with Debian's npm package) or dpkg has it.
need_pkgs=()
for spec in softhsm2:softhsm2-util groovy:groovy rsync:rsync nodejs:node npm:npm opensc:pkcs11-tool strace:strace; do
  pkg="${spec%%:*}" cmd="${spec##*:}"
  if command -v "$cmd" >/dev/null 2>&1; then
    continue
  fi
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    continue
  fi
  need_pkgs+=("$pkg")
done
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ] && [[ ! " ${need_pkgs[*]} " =~ " softhsm2 " ]]; then
  need_pkgs+=(softhsm2)
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "apt-get install ${need_pkgs[*]}"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}"
else
  log "Debian packages present"
fi

if ! command -v go >/dev/null 2>&1; then
  log "Go is required (go 1.26): install it first"
  exit 1
fi
GOBIN_DIR="$(go env GOPATH)/bin"
export PATH="$PATH:$GOBIN_DIR"

go_tool() { # name module@version
  if command -v "$1" >/dev/null 2>&1 || [ -x "$GOBIN_DIR/$1" ]; then
    log "$1 present"
  else
    log "go install $2"
    GOFLAGS= go install "$2"
  fi
}
go_tool cosign github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5
go_tool act github.com/nektos/act@v0.2.89

if command -v gitlab-ci-local >/dev/null 2>&1; then
  log "gitlab-ci-local present"
else
  log "npm install -g gitlab-ci-local@4.65.1"
  $SUDO npm install -g gitlab-ci-local@4.65.1
fi
log "done"
