#!/usr/bin/env bash
# Builds the Debian package: bash scripts/package-deb.sh [BINARY]  →  target/debian/toolwatch_V_ARCH.deb
#
# BINARY defaults to target/dist/toolwatch, built here with `cargo build --profile dist` when
# missing. The package is staged by hand and packed with dpkg-deb, which every Debian has:
# cargo-deb would do the same but needs a full `cargo install` first.
#
# Contents: /usr/bin/toolwatch; /etc/toolwatch/toolwatch.yml (a conffile: upgrades keep the
# operator's edits); the systemd unit and a sysusers.d entry for the `toolwatch` system user;
# data in /var/lib/toolwatch (the unit's StateDirectory); bash, zsh and fish completions and the
# man page, generated from the binary's own CLI; README, docs and examples under /usr/share/doc.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dist-binary.sh "${1:-}"
ARCH=$(dpkg --print-architecture)
OUT=target/debian
STAGE=$OUT/toolwatch_${VERSION}_${ARCH}
rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN"

put() { # put MODE SOURCE DEST
  install -D -m "$1" "$2" "$STAGE$3"
}
put 0755 "$BIN" /usr/bin/toolwatch
# The shipped config: every field at its default, data where the unit keeps it.
sed 's|^data_dir: .*|data_dir: /var/lib/toolwatch|' examples/toolwatch.yml > "$OUT/toolwatch.yml"
put 0644 "$OUT/toolwatch.yml" /etc/toolwatch/toolwatch.yml
put 0644 packaging/toolwatch.service /usr/lib/systemd/system/toolwatch.service
put 0644 packaging/toolwatch.sysusers /usr/lib/sysusers.d/toolwatch.conf
"$BIN" completions bash > "$OUT/toolwatch.bash"
"$BIN" completions zsh > "$OUT/_toolwatch"
"$BIN" completions fish > "$OUT/toolwatch.fish"
put 0644 "$OUT/toolwatch.bash" /usr/share/bash-completion/completions/toolwatch
put 0644 "$OUT/_toolwatch" /usr/share/zsh/vendor-completions/_toolwatch
put 0644 "$OUT/toolwatch.fish" /usr/share/fish/vendor_completions.d/toolwatch.fish
"$BIN" man | gzip -9n > "$OUT/toolwatch.1.gz"
put 0644 "$OUT/toolwatch.1.gz" /usr/share/man/man1/toolwatch.1.gz
put 0644 README.md /usr/share/doc/toolwatch/README.md
for f in docs/*.md docs/format/*.md; do put 0644 "$f" "/usr/share/doc/toolwatch/$f"; done
while IFS= read -r f; do put 0644 "$f" "/usr/share/doc/toolwatch/$f"; done < <(find examples -type f | sort)
printf 'toolwatch is licensed under the Apache License 2.0 (/usr/share/common-licenses/Apache-2.0).\n' \
  > "$OUT/copyright"
put 0644 "$OUT/copyright" /usr/share/doc/toolwatch/copyright

# Shared libraries the binary links (libc, libgcc_s): the Depends line.
DEPENDS=$(ldd "$BIN" | awk '/=>/ {print $1}' | while read -r lib; do
  dpkg -S "*/$lib" 2>/dev/null | head -1 | cut -d: -f1
done | sort -u | paste -sd, | sed 's/,/, /g')
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<EOF
Package: toolwatch
Version: $VERSION
Architecture: $ARCH
Maintainer: toolwatch developers <toolwatch@localhost>
Installed-Size: $SIZE
Depends: ${DEPENDS:-libc6}
Recommends: systemd
Section: net
Priority: optional
Description: time-series store and alerting engine for MCP telemetry
 toolwatch takes Prometheus remote-write and MCP probe results, keeps them in its
 own embedded TSDB, answers PromQL through the Prometheus HTTP API, evaluates
 alerting and recording rules, and is itself an MCP server.
EOF
echo /etc/toolwatch/toolwatch.yml > "$STAGE/DEBIAN/conffiles"
cat > "$STAGE/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  # The system user, from the sysusers.d entry (adduser where systemd-sysusers is missing).
  if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers toolwatch.conf
  elif ! getent passwd toolwatch >/dev/null; then
    adduser --system --group --home /var/lib/toolwatch --no-create-home toolwatch
  fi
  install -d -o toolwatch -g toolwatch -m 0750 /var/lib/toolwatch
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
  deb-systemd-helper enable toolwatch.service >/dev/null || true
  deb-systemd-invoke restart toolwatch.service >/dev/null || true
fi
EOF
cat > "$STAGE/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  deb-systemd-invoke stop toolwatch.service >/dev/null || true
fi
EOF
cat > "$STAGE/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
# The data stays on remove; purge removes it (the user stays, as sysusers.d users do).
if [ "$1" = purge ]; then
  rm -rf /var/lib/toolwatch
  command -v deb-systemd-helper >/dev/null && deb-systemd-helper purge toolwatch.service >/dev/null || true
fi
EOF
chmod 0755 "$STAGE/DEBIAN/postinst" "$STAGE/DEBIAN/prerm" "$STAGE/DEBIAN/postrm"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$OUT/" >/dev/null
echo "$OUT/toolwatch_${VERSION}_${ARCH}.deb"
