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
rm -rf dist/wheels
echo "images: building wheels into dist/wheels"
# pip resolves for the host's Python; the image's may be older. redis wants async-timeout below
# Python 3.11.3 (Debian bookworm ships 3.11.2), so its wheel goes in too; unused, it is ignored.
"$python" -m pip wheel --quiet --wheel-dir dist/wheels . "async-timeout>=4.0.3" > /dev/null
echo "images: docker build -t $tag"
docker build --quiet -t "$tag" -f worker-images/Dockerfile "$@" . > /dev/null
echo "images: built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
