# Sourced by the packaging scripts: sets BIN to the binary to package ($1, default the dist
# build, made here when missing) and VERSION to its version.
BIN=${1:-target/dist/toolwatch}
[[ -n $BIN ]] || BIN=target/dist/toolwatch
if [[ ! -x $BIN ]]; then
  cargo build --profile dist --bin toolwatch
  BIN=target/dist/toolwatch
fi
VERSION=$("$BIN" --version | sed -n 's/^toolwatch, version \([^ ]*\) .*/\1/p')
