# bin.sh — sourced by the bench scripts once their options are read: sets `bin`
# to USERBUS_BIN, or builds target/release/userbus (run from the project root);
# `need PROGRAM...` exits 2 naming the first one that is not installed.

need() {
  local p
  for p; do
    command -v "$p" >/dev/null || { echo "$p is required" >&2; exit 2; }
  done
}

bin=${USERBUS_BIN:-}
if [[ -z $bin ]]; then
  cargo build --release --quiet
  bin=target/release/userbus
fi
