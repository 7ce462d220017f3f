#!/usr/bin/env bash
# Build the runtime image: wheels on the host (the Docker build needs no network), then
# `docker build` of worker-images/Dockerfile.
#   scripts/build-image.sh [TAG] [extra docker build args, e.g. --build-arg BASE_IMAGE=...]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/workqueue-job/Chart.yaml)
tag=${1:-workqueue-job:$version}
shift || true
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3

command -v docker >/dev/null || { echo "images: docker not found; install Docker (Debian: apt-get install docker.io)" >&2; exit 1; }
# build/ is setuptools' scratch space: one left by an interrupted build fails the next.
rm -rf dist/wheels build
echo "images: building wheels into dist/wheels"
# pip resolves for the host's Python; the image's may be older. redis wants async-timeout below
# Python 3.11.3 (Debian bookworm ships 3.11.2), so its wheel goes in too; unused, it is ignored.
"$python" -m pip wheel --quiet --wheel-dir dist/wheels . "async-timeout>=4.0.3" > /dev/null
base_args=()
[ -n "${BASE_IMAGE:-}" ] && base_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
base=${BASE_IMAGE:-$(sed -n 's/^ARG BASE_IMAGE=//p' worker-images/Dockerfile)}
echo "images: docker build -t $tag (base $base)"
if ! docker build --quiet -t "$tag" -f worker-images/Dockerfile "${base_args[@]}" "$@" . \
    > dist/docker-build.log 2>&1; then
  if grep -qiE "pull access denied|not found|failed to resolve|dial tcp|no such host|failed to fetch|TLS handshake" dist/docker-build.log; then
    echo "images: error: cannot get the base image $base; pull it or load it first, or give another Debian-family image with python3 >= 3.11: make images BASE_IMAGE=..." >&2
  else
    tail -20 dist/docker-build.log >&2
    echo "images: error: docker build failed (full log: dist/docker-build.log)" >&2
  fi
  exit 1
fi
echo "images: built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
