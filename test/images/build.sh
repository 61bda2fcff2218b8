#!/usr/bin/env bash
# Builds the local test image rgrid-test/busybox:latest from Debian's
# busybox-static. No registry is reachable from CI or dev machines, so the
# docker tests cannot `docker pull busybox`; a statically linked busybox needs
# no libc in the image, which keeps the rootfs to one binary plus symlinks.
#
# Usage: test/images/build.sh            # builds only if the image is missing
#        FORCE=1 test/images/build.sh    # rebuilds
# Env:   BUSYBOX=/path/to/busybox (default: /bin/busybox)
#        IMAGE=name:tag (default: rgrid-test/busybox:latest)
set -euo pipefail

IMAGE="${IMAGE:-rgrid-test/busybox:latest}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"

die() { echo "build.sh: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker CLI not found in PATH"
[ -x "$BUSYBOX" ] || die "busybox not found at $BUSYBOX (install Debian's busybox-static)"
# A dynamically linked busybox would fail inside the image with a confusing
# "no such file or directory"; refuse it here instead.
if command -v file >/dev/null 2>&1 && ! file -L "$BUSYBOX" | grep -q 'statically linked'; then
  die "$BUSYBOX is not statically linked (install busybox-static)"
fi
docker info >/dev/null 2>&1 || die "Docker engine unreachable (is dockerd running and DOCKER_HOST right?)"

if [ "${FORCE:-0}" != "1" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "build.sh: $IMAGE already exists (FORCE=1 to rebuild)"
  exit 0
fi

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT

mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/work" "$rootfs/etc" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
chmod 1777 "$rootfs/tmp"
cp "$BUSYBOX" "$rootfs/bin/busybox"
chmod 0755 "$rootfs/bin/busybox"
# One symlink per applet in /bin; a loop over --list (rather than running
# `busybox --install` in a chroot) needs no root and no chroot support.
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] && continue
  ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
echo 'root:x:0:' > "$rootfs/etc/group"

tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -c . \
  | docker import \
      --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin' \
      --change 'CMD ["/bin/sh"]' \
      - "$IMAGE" >/dev/null
echo "build.sh: built $IMAGE"
