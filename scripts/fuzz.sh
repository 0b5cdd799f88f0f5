#!/usr/bin/env bash
# The long fuzz run (fuzz/README.md):
#
#   ./scripts/fuzz.sh [N] [--kills K] [--runtime-kills R] [--seed S] [--plugins P1,P2,...]
#                     [--workers W]
#
# Runs N generated cases (default 10000) spread evenly over the CNI plugins (loopback,
# host-local, static, bridge, veth, macvlan, host-device, portmap, firewall, tuning,
# bandwidth), then crash injection until K kills (default 160) have hit berth-cnitool or a
# plugin in the middle of ADD, then R kills (default 60) of `berth run -d`, `rm -f` and
# `restart` followed by `rm -f` and `system prune`, against the real (debug) binaries in
# throwaway network namespaces. Prints, per plugin, the
# cases run, successful ADDs, crashes, hangs, bad outputs, leaks, DEL failures after a
# successful ADD and leaks after ADD + DEL; then, per target, the kills and the leftovers
# after DEL and GC. The seed is fresh unless given; any finding is printed with the command
# that reproduces it. Exits non-zero if anything was found.
#
# Needs root: as a user it builds as you and runs the test binaries through `sudo -E`. The
# machine's own network is never touched, and the plugins run in a mount namespace where
# everything outside their temporary directory is read-only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh
setup_init fuzz

cases=10000
kills=160
runtime_kills=60
seed=""
plugins=""
workers=2
while (($#)); do
  case $1 in
    --kills) kills=$2; shift ;;
    --runtime-kills) runtime_kills=$2; shift ;;
    --seed) seed=$2; shift ;;
    --plugins) plugins=$2; shift ;;
    --workers) workers=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    [0-9]*) cases=$1 ;;
    *) echo "fuzz: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z $seed ]]; then
  seed=0x$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
fi

require_rust
ensure_packages "${BUILD_PACKAGES[@]}" ip=iproute2 tc=iproute2 iptables=iptables nft=nftables

plugin_packages=(-p loopback -p host-local -p static-ipam -p bridge -p veth -p macvlan
  -p host-device -p portmap -p firewall -p tuning -p bandwidth -p berth-cni)
say "building the plugins and berth-cnitool (debug, as the test command does)"
cargo build --bins "${plugin_packages[@]}" -p berth-runtime
cargo build -p berth-fuzz --tests
cargo build -p berth-runtime --tests
sudo_test_runner

mkdir -p target/fuzz
log=target/fuzz/last-run.log
export BERTH_FUZZ_WORKERS=$workers
status=0
say "seed $seed: $cases cases, then $kills kills (log: $log)"
BERTH_FUZZ_SEED=$seed BERTH_FUZZ_CASES=$cases BERTH_FUZZ_PLUGINS=$plugins \
  cargo test -q -p berth-fuzz --test fuzz -- --exact --nocapture \
  plugins_survive_hostile_configurations_and_environments 2>&1 | tee "$log" || status=1
BERTH_CRASH_SEED=$seed BERTH_CRASH_KILLS=$kills \
  cargo test -q -p berth-fuzz --test crash -- --exact --nocapture \
  killed_adds_leave_nothing_after_del_and_gc 2>&1 | tee -a "$log" || status=1
if ((runtime_kills > 0)); then
  BERTH_CRASH_SEED=$seed BERTH_CRASH_KILLS=$runtime_kills \
    cargo test -q -p berth-runtime --test crash_injection -- --nocapture 2>&1 |
    tee -a "$log" || status=1
fi
if ((status)); then
  die "findings (seed $seed): see above or $log"
fi
say "seed $seed: nothing found"
