# Shared by the project's scripts (sourced, not run): the set-up contract of README.md.
#
# The two commands are typed exactly as written, both as root on a machine without sudo and as a
# user with sudo. So: builds run as the caller, with the caller's Rust (never root's PATH, which
# sudo's secure_path strips of ~/.cargo/bin); only what needs root — installing packages, the
# privileged part of a run — goes through sudo, and only when the caller is not root already.
#
#   setup_init NAME        prefix for messages
#   require_rust           a clear one-line message when cargo is missing or older than the
#                          workspace's rust-version
#   ensure_packages CMD=PKG ...
#                          installs the Debian packages of missing commands (or files, when CMD
#                          starts with /) with apt-get, through sudo when not root
#   as_root CMD ...        runs CMD as root (directly when root, else through sudo)
#   sudo_test_runner       for `cargo test` as a user: exports the target's runner so test
#                          binaries (built as the user) run as root through `sudo -E`

setup_name=berth
setup_init() { setup_name=$1; }
say() { printf '%s: %s\n' "$setup_name" "$*" >&2; }
die() { say "$*"; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }

as_root() {
  if is_root; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "needs root for: $* (run as root, or install sudo)"
  fi
}

# Someone may still type the old `sudo -E ./scripts/…`: secure_path then hides the caller's
# ~/.cargo/bin. Find the invoking user's toolchain rather than failing on `cargo: command not found`.
find_callers_cargo() {
  command -v cargo >/dev/null 2>&1 && return 0
  local home=""
  if [[ -n ${SUDO_USER:-} ]]; then
    home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
  fi
  for dir in "${CARGO_HOME:-}" "${home:+$home/.cargo}" "${HOME:-/root}/.cargo"; do
    if [[ -n $dir && -x $dir/bin/cargo ]]; then
      export PATH="$dir/bin:$PATH"
      export CARGO_HOME=${CARGO_HOME:-$dir}
      if [[ -z ${RUSTUP_HOME:-} && -d ${dir%/.cargo}/.rustup ]]; then
        export RUSTUP_HOME=${dir%/.cargo}/.rustup
      fi
      return 0
    fi
  done
  return 1
}

# The workspace's `rust-version`: the oldest toolchain that builds it.
required_rust() {
  sed -n 's/^rust-version = "\([0-9.]*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../../Cargo.toml" | head -n1
}

version_at_least() { # have want
  [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]
}

require_rust() {
  local want have
  want=$(required_rust)
  if ! find_callers_cargo; then
    die "Rust is missing: install Rust $want or newer with rustup (https://rustup.rs: curl --proto '=https' -sSf https://sh.rustup.rs | sh), then open a new shell; Debian's own rustc is too old"
  fi
  have=$(cargo --version 2>/dev/null | awk '{print $2}')
  if [[ -z $have ]]; then
    die "cargo is there but does not run ($(command -v cargo)): check 'rustup default stable'"
  fi
  if ! version_at_least "${have%%-*}" "$want"; then
    die "Rust $have is too old: this workspace needs $want or newer ('rustup update stable'; Debian's rustc packages are older)"
  fi
}

ensure_packages() {
  local missing=() spec cmd pkg
  for spec in "$@"; do
    cmd=${spec%%=*}
    pkg=${spec#*=}
    if [[ $cmd == /* ]]; then
      [[ -e $cmd ]] && continue
    elif command -v "$cmd" >/dev/null 2>&1; then
      continue
    fi
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "missing ${missing[*]}: install these packages (this script installs them with apt-get on Debian)"
  say "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # iperf3's package asks whether to start a daemon: no.
  echo "iperf3 iperf3/start_daemon boolean false" | as_root debconf-set-selections 2>/dev/null || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# The C toolchain the build needs (the linker `cc`, crt files and libc headers): `gcc` alone
# with --no-install-recommends lacks libc6-dev and fails at Scrt1.o.
BUILD_PACKAGES=(cc=gcc /usr/include/stdio.h=libc6-dev)

sudo_test_runner() {
  is_root && return 0
  command -v sudo >/dev/null 2>&1 || die "the tests need root: run as root, or install sudo"
  local triple var
  triple=$(rustc -vV | sed -n 's/^host: //p')
  var=CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$triple")_RUNNER
  # -E keeps BERTH_* and the like; test binaries find everything else by absolute path.
  export "$var=sudo -E"
  say "test binaries run as root through sudo -E (builds stay yours)"
}

# Release binaries as Berth ships them, in target/dist: statically linked (glibc static-pie),
# like the reference plugins (static Go binaries). A plugin is a process per call, and the
# dynamic loader alone costs about 0.3 ms of it (static: 0.69 ms, dynamic: 0.96 ms per exec of
# `static` ADD here, `true` 0.66 ms). Needs --target so that the flag reaches only the target's
# code, not proc-macros and build scripts.
DIST_DIR=target/dist
build_dist() { # cargo build arguments (packages)
  local triple out
  triple=$(rustc -vV | sed -n 's/^host: //p')
  out=target/$triple/release
  RUSTFLAGS="-C target-feature=+crt-static ${RUSTFLAGS:-}" \
    cargo build --release --target "$triple" "$@"
  mkdir -p "$DIST_DIR"
  # Every executable the build made, replaced atomically (a running demo may hold the old one).
  find "$out" -maxdepth 1 -type f -perm -u+x -printf '%f\n' | while read -r exe; do
    cp "$out/$exe" "$DIST_DIR/.$exe.tmp" && mv -f "$DIST_DIR/.$exe.tmp" "$DIST_DIR/$exe"
  done
}
