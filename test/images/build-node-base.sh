#!/usr/bin/env bash
# Builds rgrid-test/node:24, a stand-in for the official node:24-slim image
# made from this machine's files (no registry is reachable here): the Node.js
# binary and the libraries it links, npm, a static busybox for /bin/sh, CA
# certificates, and a non-root user `node` (uid 1000, as in the official
# image). The project's Dockerfile takes it as BASE.
#
# Usage: test/images/build-node-base.sh [FORCE=1]
# Env:   IMAGE (rgrid-test/node:24), NODE (the node binary), BUSYBOX (/bin/busybox)
set -euo pipefail
IMAGE="${IMAGE:-rgrid-test/node:24}"
NODE="$(readlink -f "${NODE:-$(command -v node)}")"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
die() { echo "build-node-base.sh: $*" >&2; exit 1; }
docker info >/dev/null 2>&1 || die "Docker engine unreachable"
if [ "${FORCE:-0}" != "1" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then echo "build-node-base.sh: $IMAGE already exists"; exit 0; fi
"$NODE" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 22 ? 0 : 1)' || die "$NODE is older than Node.js 22"
NPM_DIR="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"
[ -f "$NPM_DIR/bin/npm-cli.js" ] || die "npm not found (looked in $NPM_DIR)"
[ -x "$BUSYBOX" ] || die "no static busybox at $BUSYBOX (install busybox-static)"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,usr/bin,usr/local/bin,usr/local/lib/node_modules,tmp,etc/ssl/certs,home/node,app,data}
chmod 1777 "$root/tmp"
cp "$NODE" "$root/usr/local/bin/node"
# The dynamic loader and every library node links, at the same paths.
for lib in $(ldd "$NODE" | grep -oE '/[^ ]+'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp -r "$NPM_DIR" "$root/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in sh env cat echo ls mkdir rm sleep test wget chown; do ln -s busybox "$root/bin/$applet"; done
ln -s /bin/env "$root/usr/bin/env"
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnode:x:1000:\n' > "$root/etc/group"
chown -R 1000:1000 "$root/home/node" "$root/data"
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' -c 'CMD ["node"]' - "$IMAGE" >/dev/null
docker run --rm "$IMAGE" node -e 'console.log("build-node-base.sh: node", process.version)'
docker run --rm "$IMAGE" npm --version >/dev/null
echo "build-node-base.sh: built $IMAGE"
