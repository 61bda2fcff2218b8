#!/usr/bin/env bash
# Builds the local test image rgrid-test/python:latest: a minimal Debian
# (debootstrap --variant=minbase) with python3, imported with `docker
# import`. No registry is reachable from CI, so `rgrid run script.py` tests
# cannot pull python:3.12-slim; Debian's mirror is reachable.
#
# Usage: test/images/build-python.sh          # builds only if the image is missing
#        FORCE=1 test/images/build-python.sh  # rebuilds
# Env:   IMAGE=name:tag (default rgrid-test/python:latest)
#        MIRROR=URL (default: the first deb URI in /etc/apt, else deb.debian.org)
#        SUITE=bookworm
set -euo pipefail

IMAGE="${IMAGE:-rgrid-test/python:latest}"
SUITE="${SUITE:-bookworm}"
die() { echo "build-python.sh: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker CLI not found in PATH"
docker info >/dev/null 2>&1 || die "Docker engine unreachable"
if [ "${FORCE:-0}" != "1" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "build-python.sh: $IMAGE already exists (FORCE=1 to rebuild)"
  exit 0
fi
command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (apt-get install debootstrap)"
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
# The Debian archive apt uses (other repositories in sources.list.d, e.g. vendors', are skipped).
if [ -z "${MIRROR:-}" ]; then
  MIRROR="$(grep -rhoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null | awk '{print $2}' | grep -v -e security -e nodesource | head -n1 || true)"
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
fi

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3 "$SUITE" "$rootfs" "$MIRROR" >&2
# Smaller image: no package lists, docs or caches are needed to run scripts.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
mkdir -p "$rootfs/work"
tar -C "$rootfs" -c . | docker import -c 'WORKDIR /work' -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c 'CMD ["python3"]' - "$IMAGE" >/dev/null
docker run --rm --network none "$IMAGE" python3 -c 'import csv, json; print("build-python.sh: python3 works")'
echo "build-python.sh: built $IMAGE"
