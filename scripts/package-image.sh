#!/usr/bin/env bash
# Builds the container image offline: bash scripts/package-image.sh [BINARY]  →  image `toolwatch:V`
#
# BINARY defaults to target/dist/toolwatch (built with `cargo build --profile dist` when
# missing). The image is FROM scratch: the binary, the loader and libraries `ldd` names, CA
# certificates, a non-root user (65532) and a config that listens on 0.0.0.0:9201 with data in
# the /var/lib/toolwatch volume. Needs podman (Debian's, with runc); no network.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dist-binary.sh "${1:-}"
CTX=target/image
rm -rf "$CTX"
mkdir -p "$CTX/lib" "$CTX/lib64" "$CTX/etc/ssl/certs" "$CTX/data"
cp "$BIN" "$CTX/toolwatch"
# Each library at the path the loader looks for it (the loader itself under /lib64).
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
  dest="$CTX$(dirname "$lib")"
  mkdir -p "$dest"
  cp -L "$lib" "$dest/"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$CTX/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\ntoolwatch:x:65532:65532:toolwatch:/var/lib/toolwatch:/sbin/nologin\n' \
  > "$CTX/etc/passwd"
printf 'root:x:0:\ntoolwatch:x:65532:\n' > "$CTX/etc/group"
# Inside a container, loopback is the container's own: listen on every address. With no
# auth.tokens configured toolwatch warns at start that anyone reaching the port may write.
sed 's|^listen: .*|listen: 0.0.0.0:9201|; s|^data_dir: .*|data_dir: /var/lib/toolwatch|' examples/toolwatch.yml \
  > "$CTX/toolwatch.yml"
podman build --network=none --runtime runc -f packaging/Containerfile -t "toolwatch:$VERSION" -t toolwatch:latest "$CTX" >&2
echo "toolwatch:$VERSION"
