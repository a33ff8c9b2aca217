#!/usr/bin/env bash
# Checks what users install: bash scripts/test-packages.sh [BINARY]
#
# Builds the .deb and the container image from BINARY (default: the dist binary, built when
# missing), then checks the package's files, conffile, maintainer scripts and systemd unit
# (`systemd-analyze verify`, and an exposure score of at most 2.0 in `systemd-analyze security`),
# and that the image is under 30 MB and answers /-/healthy from inside it. Not part of CI: the
# dist build (fat LTO, one codegen unit) alone takes longer than CI's test budget on 2 cores.
# Needs dpkg-deb, systemd and podman with runc (apt-get install podman runc).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/dist/toolwatch}
fail() { echo "FAIL: $*" >&2; exit 1; }

DEB=$(bash scripts/package-deb.sh "$BIN" | tail -1)
echo "package: $DEB ($(du -h "$DEB" | cut -f1))"
CONTENTS=$(dpkg-deb -c "$DEB")
LIST=$(awk '{print $NF}' <<<"$CONTENTS" | sed 's|^\./|/|')
for f in /usr/bin/toolwatch /etc/toolwatch/toolwatch.yml /usr/lib/systemd/system/toolwatch.service \
  /usr/lib/sysusers.d/toolwatch.conf /usr/share/man/man1/toolwatch.1.gz \
  /usr/share/bash-completion/completions/toolwatch /usr/share/zsh/vendor-completions/_toolwatch \
  /usr/share/fish/vendor_completions.d/toolwatch.fish /usr/share/doc/toolwatch/copyright; do
  grep -qx "$f" <<<"$LIST" || fail "$f is not in the package"
done
grep -q 'rwxr-xr-x root/root .* ./usr/bin/toolwatch$' <<<"$CONTENTS" || fail "/usr/bin/toolwatch is not 0755 root"
[[ $(dpkg-deb -f "$DEB" Package) == toolwatch ]] || fail "package name"
X=$(mktemp -d)
trap 'rm -rf "$X"' EXIT
dpkg-deb -R "$DEB" "$X"
grep -qx /etc/toolwatch/toolwatch.yml "$X/DEBIAN/conffiles" || fail "the config is not a conffile"
grep -q '^data_dir: /var/lib/toolwatch$' "$X/etc/toolwatch/toolwatch.yml" || fail "the config's data_dir"
grep -q 'systemd-sysusers toolwatch.conf' "$X/DEBIAN/postinst" || fail "postinst does not create the user"
grep -q '^u toolwatch ' "$X/usr/lib/sysusers.d/toolwatch.conf" || fail "sysusers entry"
# The shipped config is one the binary accepts (rules check reads no config; routes reads it whole).
"$X/usr/bin/toolwatch" routes --config "$X/etc/toolwatch/toolwatch.yml" >/dev/null || fail "the shipped config does not load"
zcat "$X/usr/share/man/man1/toolwatch.1.gz" | grep -q '^\.TH toolwatch 1' || fail "man page"
UNIT=$X/usr/lib/systemd/system/toolwatch.service
for k in User=toolwatch StateDirectory=toolwatch ProtectSystem=strict NoNewPrivileges=yes \
  'ExecReload=/bin/kill -HUP $MAINPID' Restart=on-failure; do
  grep -qxF "$k" "$UNIT" || fail "unit lacks $k"
done
# Only complaints about the host are allowed (no systemd as PID 1 here; the binary and the man
# page exist only inside the package).
VERIFY=$(systemd-analyze verify "$UNIT" 2>&1 | grep -v -e 'is not executable' -e "man toolwatch" \
  -e 'sysinit.target' -e 'Failed to prepare filename' -e 'Unit .* not found' || true)
[[ -z $VERIFY ]] || fail "systemd-analyze verify: $VERIFY"
SCORE=$(systemd-analyze security --offline=yes "$UNIT" 2>&1 | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
echo "unit exposure: $SCORE"
awk -v s="$SCORE" 'BEGIN { exit !(s != "" && s <= 2.0) }' || fail "unit exposure $SCORE is above 2.0"

if ! command -v podman >/dev/null; then
  echo "SKIP image: podman is not installed (apt-get install podman runc)"
  exit 0
fi
IMAGE=$(bash scripts/package-image.sh "$BIN" | tail -1)
SIZE=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "image: $IMAGE, $((SIZE / 1024 / 1024)) MB"
((SIZE < 30 * 1024 * 1024)) || fail "image is $SIZE bytes, over 30 MB"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NAME=toolwatch-test-$$
podman run -d --rm --name "$NAME" --runtime runc --network=host \
  --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 "$IMAGE" --listen "127.0.0.1:$PORT" >/dev/null
trap 'podman stop -t 5 "$NAME" >/dev/null 2>&1 || true; rm -rf "$X"' EXIT
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$PORT/-/healthy" 2>/dev/null; then
    [[ $(podman exec "$NAME" /usr/bin/toolwatch --version | head -1) == "$("$BIN" --version | head -1)" ]] \
      || fail "the image's binary is not $BIN"
    [[ $(podman inspect --format '{{.Config.User}}' "$NAME") == 65532:65532 ]] || fail "the image runs as root"
    echo "OK: package and image"
    exit 0
  fi
  sleep 0.1
done
podman logs "$NAME" >&2 || true
fail "the image did not answer /-/healthy"
