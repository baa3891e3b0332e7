#!/usr/bin/env bash
# Build the test plugin image for Docker and for Podman (separate image stores)
# from Debian's static busybox. Nothing is pulled. Rebuilt only when its
# inputs change (the tag carries a hash of them).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src=$here/tests/images/plugin
IMAGE=${PMAN_TEST_IMAGE:-localhost/pman-test-plugin}
engines=${*:-docker podman}
hash=$( (cd "$src" && find . -type f -print0 | sort -z | xargs -0 sha256sum; sha256sum /bin/busybox | cut -d' ' -f1) | sha256sum | cut -c1-12)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp -a "$src/." "$ctx/"
cp /bin/busybox "$ctx/busybox"
for engine in $engines; do
  if [ "$engine" = docker ] && docker image inspect "$IMAGE:$hash" >/dev/null 2>&1; then
    echo "[build-test-images] docker: $IMAGE:$hash is current"
  elif [ "$engine" = podman ] && podman image exists "$IMAGE:$hash"; then
    echo "[build-test-images] podman: $IMAGE:$hash is current"
  else
    echo "[build-test-images] $engine: building $IMAGE:$hash"
    "$engine" build -q -t "$IMAGE:$hash" "$ctx" >/dev/null
  fi
  "$engine" tag "$IMAGE:$hash" "$IMAGE:latest"
done
