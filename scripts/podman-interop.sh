#!/usr/bin/env bash
# Interop check: our CNI plugins, unchanged, through podman's CNI backend (network_backend =
# "cni", libcni): a hand-written loopback+bridge+host-local conflist, and the conflists that
# `podman network create` generates (bridge+host-local, portmap, firewall, tuning), all ours. Needs root and podman 4.x with crun (Debian bookworm:
# apt-get install podman).
#
# Isolation: nothing touches the host's network, /etc, /var/lib, /run or the host's cgroups.
#  - A throwaway network namespace plays the host; one process (the "holder") sits in it inside
#    a private mount namespace where /var/lib (libcni's hard-coded cache /var/lib/cni), /run
#    (podman's container netns files, runtime state, xtables lock) and /dev/shm (podman's lock
#    table) are bind mounts of temp dirs, and /sys/fs/cgroup is a cgroup2 mount so crun starts.
#    Every podman call runs in the holder's namespaces (nsenter).
#  - podman gets its own containers.conf (CONTAINERS_CONF), --root/--runroot, vfs storage,
#    file locks/events in the temp dir, and cgroups = "disabled" (no cgroup is created).
#  - The image is built offline from /bin/busybox (busybox-static) and `podman import`ed.
# Cleanup (also on failure or Ctrl-C): every container, the processes in our mount namespace,
# the namespaces and the temp dir.
#
# The test command runs it on the debug build without the timing (BERTH_CNI_BIN=target/debug
# BERTH_PODMAN_RUNS=0).
# Environment: BERTH_PODMAN_RUNS (default 10) runs per mode for the timing, 0 for none; BERTH_PODMAN_KEEP=1
# keeps the temp dir (logs) for a look afterwards; BERTH_SKIP_BUILD=1 uses target/dist as it
# is; BERTH_CNI_BIN=<dir> takes the plugins from <dir> instead (no build).
set -euo pipefail
cd "$(dirname "$0")/.."
# build_dist and DIST_DIR; this script's own say/die below replace the library's.
source scripts/lib/setup.sh

# Messages go to fd 3, a copy of the original stderr: a trap can fire while a function runs
# with its output redirected to a log file (pm … >log), and cleanup's verdict must not land there.
exec 3>&2
say() { printf 'podman-interop: %s\n' "$*" >&3; }
die() { say "FAIL: $*"; exit 1; }
pass() { say "ok: $*"; }

[[ $(id -u) -eq 0 ]] || die "needs root (network and mount namespaces): sudo -E $0"
for cmd in podman conmon crun ip iptables-save nsenter unshare busybox tar python3; do
  command -v "$cmd" >/dev/null || die "missing $cmd (apt-get install podman iproute2 iptables util-linux busybox-static python3)"
done

if [[ -n ${BERTH_CNI_BIN:-} ]]; then
  bin=$(realpath "$BERTH_CNI_BIN")
else
  if [[ ${BERTH_SKIP_BUILD:-0} != 1 ]]; then
    say "building the plugins (release)…"
    build_dist --quiet -p loopback -p bridge -p host-local -p portmap -p firewall -p tuning
  fi
  bin=$PWD/target/dist
fi
for p in loopback bridge host-local portmap firewall tuning; do [[ -x $bin/$p ]] || die "no $bin/$p"; done

runs=${BERTH_PODMAN_RUNS:-10}
tag=bpi$$
host=$tag-host
brname=${tag}br
subnet_prefix=198.18.77 # RFC 2544 benchmarking range
gen_prefix=198.18.78
work=$(mktemp -d /tmp/berth-podman.XXXXXX)
holder=""

# Every pid in our private mount namespace (conmon, podman, the holder) and all their
# descendants (the containers, which have mount namespaces of their own).
our_pids() {
  local mntns p ppid
  mntns=$(readlink "/proc/$holder/ns/mnt") || return 0
  declare -A ours=()
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $(readlink "/proc/$p/ns/mnt" 2>/dev/null) == "$mntns" ]] && ours[$p]=1
  done
  local grown=1
  while ((grown)); do
    grown=0
    while read -r p ppid; do
      [[ -n ${ours[$ppid]:-} && -z ${ours[$p]:-} ]] && { ours[$p]=1; grown=1; }
    done < <(ps -e -o pid=,ppid=)
  done
  printf '%s\n' "${!ours[@]}"
}

cleanup() {
  local rc=$? p
  set +e
  trap - EXIT INT TERM
  if [[ -n $holder && -d /proc/$holder ]]; then
    pm ps -aq 2>/dev/null | while read -r id; do pm rm -f -t 0 "$id" >/dev/null 2>&1; done
    # Whatever podman left running is ours: end each process by pid, the holder last.
    for p in $(our_pids); do
      [[ $p != "$holder" ]] && kill -9 "$p" 2>/dev/null
    done
    kill "$holder" 2>/dev/null
    wait "$holder" 2>/dev/null
  fi
  ip netns del "$host" 2>/dev/null
  if [[ ${BERTH_PODMAN_KEEP:-0} == 1 ]]; then say "kept $work"; else rm -rf "$work"; fi
  if ((rc == 0)); then say "PASS"; else say "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the holder: network namespace + private mount namespace -----------------------------------
ip netns add "$host"
ip -n "$host" link set lo up
mkdir -p "$work"/{net.d,net-gen.d,ipam,root,runroot,libpod-tmp,tmp,home,xdg/config,xdg/data,xdg/run,varlib/cni,run,shm,logs,rootfs}
chmod 700 "$work/xdg/run"

cat >"$work/holder.sh" <<EOF
set -e
mount --bind '$work/varlib' /var/lib
mount --bind '$work/run' /run
mount --bind '$work/shm' /dev/shm
mkdir -p /run/netns
# ip netns exec gave us a fresh sysfs without cgroup mounts; crun wants a cgroup fs there.
# cgroups = "disabled" below: nothing is created in it.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo \$\$ > '$work/holder.pid'
exec sleep infinity
EOF
ip netns exec "$host" unshare --mount --propagation private bash "$work/holder.sh" \
  >"$work/logs/holder.log" 2>&1 </dev/null 3>&- &
for _ in $(seq 50); do [[ -s $work/holder.pid ]] && break; sleep 0.1; done
[[ -s $work/holder.pid ]] || die "holder did not start: $(cat "$work/logs/holder.log")"
holder=$(cat "$work/holder.pid")

# Run a command in the holder's mount + network namespaces with a clean, temp-only environment.
inh() {
  nsenter -t "$holder" -m -n -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work/home" \
    XDG_CONFIG_HOME="$work/xdg/config" XDG_DATA_HOME="$work/xdg/data" \
    XDG_RUNTIME_DIR="$work/xdg/run" TMPDIR="$work/tmp" CONTAINERS_CONF="${conf:-$work/containers.conf}" "$@" 3>&-
}
pm() { inh podman --root "$work/root" --runroot "$work/runroot" --storage-driver vfs "$@"; }

# --- podman configuration --------------------------------------------------------------------
hard_nofile=$(ulimit -Hn); hard_nproc=$(ulimit -Hu)
nofile=1024; [[ $hard_nofile != unlimited && $hard_nofile -lt $nofile ]] && nofile=$hard_nofile
nproc=4096; [[ $hard_nproc != unlimited && $hard_nproc -lt $nproc ]] && nproc=$hard_nproc

write_conf() { # file, plugin dirs (TOML array body), network config dir, default network
  cat >"$1" <<EOF
[containers]
log_driver = "k8s-file"
cgroups = "disabled"
# podman's rootful defaults (nofile/nproc 1048576) need CAP_SYS_RESOURCE.
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[network]
network_backend = "cni"
cni_plugin_dirs = [$2]
network_config_dir = "$3"
default_network = "$4"

[engine]
runtime = "crun"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$work/events.log"
tmp_dir = "$work/libpod-tmp"
image_copy_tmp_dir = "$work/tmp"
lock_type = "file"
EOF
}
write_conf "$work/containers.conf" "\"$bin\"" "$work/net.d" berthtest

cat >"$work/net.d/berthtest.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "berthtest", "plugins": [
  {"type": "loopback"},
  {"type": "bridge", "bridge": "$brname", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "subnet": "$subnet_prefix.0/24", "dataDir": "$work/ipam",
            "routes": [{"dst": "0.0.0.0/0"}]}}
]}
EOF

say "podman $(pm version --format '{{.Client.Version}}'), $(crun --version | head -n1), conmon $(conmon --version | sed -n 's/conmon version //p')"
info=$(pm info --format '{{.Host.NetworkBackend}} {{.Host.OCIRuntime.Name}} {{.Host.CgroupsVersion}}')
read -r backend runtime cgv <<<"$info"
[[ $backend == cni ]] || die "podman network backend is '$backend', not cni"
pass "podman uses network backend $backend, OCI runtime $runtime (cgroup view $cgv, cgroups disabled)"

# --- image -----------------------------------------------------------------------------------
mkdir -p "$work/rootfs"/{bin,etc,proc,sys,dev,tmp,root}
install -m 755 "$(command -v busybox)" "$work/rootfs/bin/busybox"
for applet in $("$work/rootfs/bin/busybox" --list); do
  [[ $applet == busybox ]] || ln -sf busybox "$work/rootfs/bin/$applet"
done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
img=localhost/berth-busybox:$tag
pm import --quiet --change 'CMD ["/bin/sh"]' "$work/rootfs.tar" "$img" >/dev/null
pass "imported $img from /bin/busybox"

# --- network list / inspect ------------------------------------------------------------------
pm network ls --format '{{.Name}}' | grep -qx berthtest || die "podman network ls does not list berthtest"
pm network inspect berthtest >"$work/logs/inspect.json" || die "podman network inspect berthtest"
pass "podman network ls/inspect see berthtest (driver '$(pm network inspect -f '{{.Driver}}' berthtest)': podman names the first plugin)"

# --- helpers ---------------------------------------------------------------------------------
ctr_ip() { pm inspect -f "{{(index .NetworkSettings.Networks \"$2\").IPAddress}}" "$1"; }
rules() { inh sh -c 'iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; nft list ruleset 2>/dev/null' || true; }
veths() { inh ip -o link show type veth | awk -F': ' '{print $2}'; }
ipam_left() { find "$work/ipam/berthtest" -mindepth 1 -maxdepth 1 ! -name lock -printf '%f ' 2>/dev/null; }
run_ctr() { # name network [podman run flags…]
  local name=$1 net=$2
  shift 2
  if ! pm --log-level=debug run -d --name "$name" --network "$net" "$@" >"$work/logs/$name.out" 2>"$work/logs/$name.debug"; then
    grep -iE 'cni|plugin|error' "$work/logs/$name.debug" | tail -n 20 >&2
    die "podman run $name on $net"
  fi
}

# --- two containers on berthtest -------------------------------------------------------------
run_ctr c1 berthtest "$img" sleep 300
run_ctr c2 berthtest "$img" sleep 300
declare -A addr
for c in c1 c2; do
  addr[$c]=$(ctr_ip "$c" berthtest)
  [[ ${addr[$c]} == "$subnet_prefix".* ]] || die "$c got '${addr[$c]}', not an address in $subnet_prefix.0/24"
  pm exec "$c" ip -4 -o addr show dev eth0 | grep -q "inet ${addr[$c]}/24" || die "$c: eth0 lacks ${addr[$c]}/24"
  [[ -f $work/ipam/berthtest/${addr[$c]} ]] || die "no host-local reservation file for ${addr[$c]}"
  gw=$(pm exec "$c" ip route | awk '$1 == "default" {print $3}')
  [[ $gw == "$subnet_prefix.1" ]] || die "$c: default route via '$gw', expected $subnet_prefix.1"
  pass "$c eth0 ${addr[$c]}/24 via $gw (podman inspect, ip addr, host-local reservation)"
done
[[ ${addr[c1]} != "${addr[c2]}" ]] || die "both containers got ${addr[c1]}"
pm exec c1 ping -c1 -W2 "${addr[c2]}" >/dev/null || die "c1 cannot ping c2 (${addr[c2]})"
pm exec c2 ping -c1 -W2 "${addr[c1]}" >/dev/null || die "c2 cannot ping c1 (${addr[c1]})"
pm exec c1 ping -c1 -W2 "$subnet_prefix.1" >/dev/null || die "c1 cannot ping the gateway"
pass "c1 <-> c2 ping, c1 -> gateway ping"
for c in c1 c2; do
  rules | grep -q "${addr[$c]}" || die "no masquerade rule for ${addr[$c]} in the host namespace"
done
pass "masquerade rules present for both ($(rules | grep -c "$subnet_prefix\." || true) lines mention $subnet_prefix.x)"
[[ $(find "$work/varlib/cni/results" -type f | wc -l) -eq 2 ]] || die "libcni cache does not hold 2 results"
[[ $(veths | wc -l) -eq 2 ]] || die "expected 2 host veths, found: $(veths | tr '\n' ' ')"

# stop → DEL, start → ADD again
pm stop -t 0 c2 >/dev/null
[[ $(veths | wc -l) -eq 1 ]] || die "podman stop c2 left its veth"
[[ ! -e $work/ipam/berthtest/${addr[c2]} ]] || die "podman stop c2 kept its reservation ${addr[c2]}"
pm start c2 >/dev/null
addr[c2]=$(ctr_ip c2 berthtest)
pm exec c1 ping -c1 -W2 "${addr[c2]}" >/dev/null || die "c1 cannot ping c2 after stop/start (${addr[c2]})"
pass "podman stop (DEL) / start (ADD): c2 back at ${addr[c2]}, reachable"

# rm → DEL
pm rm -f -t 0 c1 c2 >/dev/null
[[ -z $(veths) ]] || die "veths left after podman rm: $(veths | tr '\n' ' ')"
[[ -z $(ipam_left) ]] || die "host-local dir keeps more than lock: $(ipam_left)"
if rules | grep -q "$subnet_prefix\."; then rules | grep "$subnet_prefix\." >&2; die "masquerade rules left after podman rm"; fi
[[ -z $(find "$work/varlib/cni/results" -type f) ]] || die "libcni cache results left after podman rm"
[[ -z $(find "$work/run/netns" -mindepth 1) ]] || die "container netns files left after podman rm"
pass "podman rm: our DEL removed veths, reservations (only 'lock' left), masquerade rules, libcni cache, netns"

# --- podman's own generated conflist, every plugin ours: bridge+host-local, portmap, firewall, tuning --
conf=$work/containers-gen.conf
write_conf "$conf" "\"$bin\"" "$work/net-gen.d" podman
pm network create --subnet "$gen_prefix.0/24" berthgen >/dev/null
gen=$work/net-gen.d/berthgen.conflist
types=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(" ".join(p["type"] for p in d["plugins"]))' "$gen")
say "podman network create wrote: cniVersion $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cniVersion"])' "$gen"), plugins: $types"
[[ $types == *tuning* ]] || die "podman's generated conflist has no tuning plugin: $types"
run_ctr g1 berthgen -p 8080:80 "$img" httpd -f -p 80 -h /etc
run_ctr g2 berthgen --ip "$gen_prefix.50" --mac-address 02:42:c6:12:4e:32 "$img" sleep 300
[[ $(ctr_ip g2 berthgen) == "$gen_prefix.50" ]] || die "g2 did not get the static IP $gen_prefix.50"
[[ $(pm exec g2 cat /sys/class/net/eth0/address) == 02:42:c6:12:4e:32 ]] || die "g2 did not get the static MAC"
g1ip=$(ctr_ip g1 berthgen)
# shellcheck disable=SC2016 # expanded by the container's sh
http='printf "GET /hostname HTTP/1.0\r\n\r\n" | nc -w 3 "$0" "$1" | tail -n 1'
[[ -n $(pm exec g2 sh -c "$http" "$g1ip" 80) ]] || die "g2 cannot reach g1's httpd directly"
[[ -n $(pm exec g2 sh -c "$http" "$gen_prefix.1" 8080) ]] || die "port mapping 8080->g1:80 via the gateway (hairpin) fails"
[[ -n $(inh busybox sh -c "$http" "$gen_prefix.1" 8080) ]] || die "port mapping 8080->g1:80 from the host namespace fails"
pass "generated conflist ($types, all ours): --ip, --mac-address, -p 8080:80 work"
# A network made with options: the bridge's MTU reaches the container, tuning passes it on.
pm network create --subnet 198.18.79.0/24 -o mtu=1400 berthmtu >/dev/null
run_ctr m1 berthmtu "$img" sleep 300
[[ $(pm exec m1 cat /sys/class/net/eth0/mtu) == 1400 ]] || die "m1: eth0 mtu is not 1400 (podman network create -o mtu=1400)"
pass "podman network create -o mtu=1400: the container's eth0 has mtu 1400"
pm rm -f -t 0 g1 g2 m1 >/dev/null
[[ -z $(veths) ]] || die "veths left after podman rm g1 g2 m1"
for net in berthgen berthmtu; do
  left=$(find "$work/varlib/cni/networks/$net" -mindepth 1 ! -name lock -printf '%f ' 2>/dev/null)
  [[ -z $left ]] || die "host-local (default dataDir) keeps for $net: $left"
done
if rules | grep -qE "$gen_prefix\.|198\.18\.79\."; then die "rules for the generated networks left after podman rm"; fi
left=$(find "$work/run/cni/tuning" -type f 2>/dev/null | tr '\n' ' ')
[[ -z $left ]] || die "tuning's saved state left after podman rm: $left"
pass "podman rm g1 g2 m1: everything per-container removed (veths, reservations, rules, tuning state)"
unset conf

# --- timing: podman run --rm true, our network vs none -----------------------------------------
if ((runs == 0)); then
  say "timing skipped (BERTH_PODMAN_RUNS=0)"
  exit 0
fi
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null || die "timed run failed: $*"; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
: >"$work/t.none"; : >"$work/t.berth"
for _ in $(seq "$runs"); do # interleaved, so drift on a busy machine hits both alike
  ms pm run --rm --network none "$img" true >>"$work/t.none"
  ms pm run --rm --network berthtest "$img" true >>"$work/t.berth"
done
[[ -z $(ipam_left) ]] || die "timed runs left reservations: $(ipam_left)"
say "timing (podman run --rm $img true, $runs runs each, ms): --network none median $(median <"$work/t.none") [$(sort -n "$work/t.none" | tr '\n' ' ')]"
say "timing: --network berthtest median $(median <"$work/t.berth") [$(sort -n "$work/t.berth" | tr '\n' ' ')]"
