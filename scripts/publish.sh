#!/usr/bin/env bash
# make publish: push the packaged chart ($DIST, make package) to oci://$REGISTRY/charts with
# helm, and the image workqueue-job:$VERSION (make images; LOCAL_IMAGE names another) to
# $REGISTRY/workqueue-job:$VERSION, then print what a user runs. PLAIN_HTTP=1 for a registry
# without TLS (a local one); IMAGE=0 pushes the chart only.
set -euo pipefail

cd "$(dirname "$0")/.."
VERSION=${VERSION:-$(sed -n 's/^version: *//p' charts/workqueue-job/Chart.yaml)}
die() { printf 'publish: error: %s\n' "$*" >&2; exit 1; }
[ -n "${REGISTRY:-}" ] || die "give the registry: make publish REGISTRY=host[:port]/path (PLAIN_HTTP=1 for http)"
REGISTRY=${REGISTRY#oci://}
REGISTRY=${REGISTRY%/}
chart="${DIST:-dist}/workqueue-job-$VERSION.tgz"
local_image=${LOCAL_IMAGE:-workqueue-job:$VERSION}
[ -f "$chart" ] || die "$chart is missing; run make package first"
plain=()
[ "${PLAIN_HTTP:-}" = 1 ] && plain=(--plain-http)

image="$REGISTRY/workqueue-job:$VERSION"
if [ "${IMAGE:-1}" != 0 ]; then
  command -v docker >/dev/null || die "docker not found; install it, or IMAGE=0 to push the chart only"
  docker image inspect "$local_image" >/dev/null 2>&1 ||
    die "image $local_image is not built; run make images first, or IMAGE=0 to push the chart only"
fi

echo "publish: helm push $chart oci://$REGISTRY/charts"
helm push "$chart" "oci://$REGISTRY/charts" "${plain[@]}"
if [ "${IMAGE:-1}" != 0 ]; then
  echo "publish: docker push $image"
  docker tag "$local_image" "$image"
  docker push --quiet "$image" >/dev/null
fi

cat <<EOT
publish: done. Users install it with:
  helm install myjob oci://$REGISTRY/charts/workqueue-job --version $VERSION ${plain[*]} \\
    --set image.repository=$REGISTRY/workqueue-job -f values.yaml
EOT
