#!/usr/bin/env bash
# qemu.sh - run a script as root inside one of Debian's kernels under QEMU (software emulation,
# no KVM needed): an initramfs with busybox, the files under test, a few host programs and the
# shared libraries they need. tests/kernels/run drives it for the kernel matrix.
#
# Usage:
#   qemu.sh [OPTIONS] run DIR SCRIPT [ARGS...]
#       Pack DIR (copied to /qk in the guest: the cwd, and on PATH), the shared libraries of every
#       ELF file in DIR, SCRIPT and the host programs of -b into an initramfs, boot KERNEL, run
#       `bash SCRIPT ARGS...` as root, stream its stdout+stderr here and exit with its exit code.
#   qemu.sh [OPTIONS] fetch   download and unpack KERNEL into the cache, print its directory
#   qemu.sh list              the kernel shorthands and the Debian kernel packages apt knows
#
# OPTIONS (or the environment variable in brackets):
#   -k KERNEL  [QK_KERNEL]  6.12 (default) | 6.1 | 5.10: Debian's "cloud" flavour (boots fastest);
#                6.12-generic | 6.1-generic | 5.10-generic: Debian's generic flavour;
#                a package name such as linux-image-6.1.0-41-cloud-amd64;
#                or the path of a vmlinuz (a config-* beside it is used; no modules then).
#              6.1 and 6.12 come from bookworm (the host's apt sources, bookworm-security
#              included); 5.10 from bullseye, through a private apt list in the cache dir that uses
#              the host's Debian mirror.
#   -b "BINS"  [QK_BINS]    host programs to copy to /usr/sbin with their libraries (default
#                           "bpftool"); names on PATH or absolute paths
#   -p         [QK_PYTHON=1] also copy Debian's /usr/bin/python3 and its standard library
#                           (without tests, build config or site packages)
#   -M "MODS"  [QK_MODULES] kernel modules to insmod before SCRIPT, dependencies first (Debian
#                           ships no modules.dep here: they are read from each module); a name
#                           ending in "?" is loaded only if the kernel has it (e.g. "sch_netem?")
#   -P FILE    [QK_PRE]     a script run (by bash, in /qk, its output on the console) before
#                           the -M modules are loaded, e.g. to check what runs without them
#   -m MB      [QK_MEM]     guest RAM, default 2048
#   -s N       [QK_SMP]     guest CPUs, default 2
#   -t SEC     [QK_TIMEOUT] wall-clock limit for boot and run, default 900
#   -S SEC     [QK_STALL]   also stop the guest when SCRIPT's output has not grown for SEC
#                           seconds (a hang, however slow the machine), default 0: no limit
#   -a ARGS    [QK_APPEND]  extra kernel command line
#   -v         [QK_VERBOSE=1] print the kernel console (to stderr) at the end
#   -e "VARS"  [QK_ENV]     names of host environment variables to export into the guest
#   QK_CACHE   kernels and apt lists; default /var/cache/flowlens-kernels (when writable, else
#              ~/.cache/flowlens-kernels). Delete it to download again.
#   QK_KVM=1   use KVM where the machine has it
#
# Exit code: SCRIPT's; 124 = timeout; 125 = the guest died before SCRIPT finished (panic, oops
# in init, ...): the console's last lines go to stderr.
#
# The guest: busybox (every applet in /bin), /bin/sh and SCRIPT run by the host's bash (busybox's
# ash would run its own `ip` applet instead of iproute2's even by path lookup), PATH
# /qk:/usr/sbin:/usr/bin:/sbin:/bin; /proc, /sys, /dev (devtmpfs), /sys/fs/bpf (bpffs),
# /sys/kernel/tracing (tracefs), /sys/kernel/debug, cgroup2 at /sys/fs/cgroup, /run, /tmp
# (RAM), lo up (127.0.0.1 and ::1), /boot/config-$(uname -r). No other network interfaces.
set -euo pipefail

if [ -z "${QK_CACHE:-}" ]; then
  if mkdir -p /var/cache/flowlens-kernels 2>/dev/null && [ -w /var/cache/flowlens-kernels ]; then
    QK_CACHE=/var/cache/flowlens-kernels
  else
    QK_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/flowlens-kernels
  fi
fi
KERNEL=${QK_KERNEL:-6.12}
BINS=${QK_BINS-bpftool}
PYTHON=${QK_PYTHON:-0}
MODULES=${QK_MODULES:-}
PRE=${QK_PRE:-}
MEM=${QK_MEM:-2048}
SMP=${QK_SMP:-2}
TIMEOUT=${QK_TIMEOUT:-900}
STALL=${QK_STALL:-0}
APPEND=${QK_APPEND:-}
VERBOSE=${QK_VERBOSE:-0}
ENVVARS=${QK_ENV:-}

die() { echo "qemu.sh: $*" >&2; exit 2; }
log() { echo "qemu.sh: $*" >&2; }

while getopts "k:b:pM:P:m:s:t:S:a:ve:h" o; do
  case $o in
    k) KERNEL=$OPTARG ;; b) BINS=$OPTARG ;; p) PYTHON=1 ;; M) MODULES=$OPTARG ;; P) PRE=$OPTARG ;;
    m) MEM=$OPTARG ;; s) SMP=$OPTARG ;; t) TIMEOUT=$OPTARG ;; S) STALL=$OPTARG ;;
    a) APPEND=$OPTARG ;; v) VERBOSE=1 ;; e) ENVVARS=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) die "bad option (try -h)" ;;
  esac
done
shift $((OPTIND - 1))
CMD=${1:-}; [ -n "$CMD" ] || die "usage: $0 [opts] run DIR SCRIPT [ARGS...] | fetch | list (try -h)"
shift

mkdir -p "$QK_CACHE/kernels"

# ---------------------------------------------------------------- apt
# A private apt configuration for a release the host's sources lack (bullseye), on the host's
# Debian mirror; the host's own apt state is left alone.
papt_opts() { # papt_opts RELEASE: sets PAPT_OPTS, writes the sources list once
  local d="$QK_CACHE/apt-$1"
  if [ ! -f "$d/sources.list" ]; then
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/parts"
    local mirror
    mirror=$(grep -hoE '^(URIs:|deb) +[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
      /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')
    [ -n "$mirror" ] || die "no Debian mirror found in the host's apt sources"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $1 main" \
      > "$d/sources.list"
  fi
  PAPT_OPTS=(-o "Dir::Etc::SourceList=$d/sources.list" -o "Dir::Etc::SourceParts=$d/parts"
    -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache"
    -o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Sandbox::User=root")
}
# apt_ready RELEASE: fetches the package index when it is missing: once for a private release
# (delete $QK_CACHE/apt-RELEASE to refresh it); for the host ("host") when its apt knows no
# kernel package at all (a fresh machine before any `apt-get update`).
apt_ready() {
  if [ "$1" = host ]; then
    apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 && return 0
    log "the host's apt index lacks kernel packages: apt-get update"
    apt-get -q update >&2 || die "apt-get update failed (run as root)"
  else
    papt_opts "$1"
    ls "$QK_CACHE/apt-$1/lists" | grep -q Packages && return 0
    log "fetching the $1 package index"
    apt-get "${PAPT_OPTS[@]}" -q update >&2 || die "apt-get update ($1) failed"
  fi
}
run_apt() { # run_apt RELEASE apt-get|apt-cache ARGS...
  local rel=$1 tool=$2; shift 2
  if [ "$rel" = host ]; then "$tool" "$@"; else papt_opts "$rel"; "$tool" "${PAPT_OPTS[@]}" "$@"; fi
}
pkg_release() {
  local rel
  for rel in host bullseye; do
    apt_ready "$rel"
    run_apt "$rel" apt-cache show "$1" >/dev/null 2>&1 && { echo "$rel"; return; }
  done
  return 1
}

# KERNEL shorthand -> "RELEASE PACKAGE"
resolve_kernel_pkg() {
  local k=$1 meta rel flav=cloud-amd64
  case $k in *-generic) flav=amd64; k=${k%-generic} ;; esac
  case $k in
    6.1)  meta=linux-image-$flav; rel=host ;;
    6.12) meta=linux-image-6.12-$flav; rel=host ;;
    5.10) meta=linux-image-$flav; rel=bullseye ;;
    linux-image-*)
      rel=$(pkg_release "$k") || die "package $k not found in apt sources"
      echo "$rel $k"; return ;;
    *) die "unknown kernel '$k' (6.12, 6.1, 5.10[-generic], a linux-image-* package or a vmlinuz path)" ;;
  esac
  apt_ready "$rel"
  local dep
  dep=$(run_apt "$rel" apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  [ -n "$dep" ] || die "cannot resolve $meta in $rel"
  case $k in 6.1) case $dep in linux-image-6.1.*) ;; *) die "$meta is $dep here, not 6.1: the host is not bookworm (give a linux-image-6.1.* package name)" ;; esac ;; esac
  echo "$rel $dep"
}

# Sets KDIR (the unpacked package), VMLINUZ, KVER, KCONFIG.
fetch_kernel() {
  if [ -f "$KERNEL" ]; then
    VMLINUZ=$(readlink -f "$KERNEL"); KDIR=""
    KCONFIG=$(ls "$(dirname "$VMLINUZ")"/config-* 2>/dev/null | head -1 || true)
    KVER=${KCONFIG##*/config-}
    return
  fi
  local alias_f="$QK_CACHE/kernels/alias.$KERNEL" rel pkg
  if [ -f "$alias_f" ] && [ -d "$QK_CACHE/kernels/$(cat "$alias_f")/boot" ]; then
    pkg=$(cat "$alias_f")   # the last resolution: no apt, no network
  else
    read -r rel pkg < <(resolve_kernel_pkg "$KERNEL" || true)
    [ -n "${pkg:-}" ] || exit 2   # resolve_kernel_pkg said why
    KDIR="$QK_CACHE/kernels/$pkg"
    if [ ! -d "$KDIR/boot" ]; then
      local size
      size=$(run_apt "$rel" apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '/^Size:/{printf "%d MB", $2/1048576; exit}')
      log "downloading $pkg (${size:-? MB}, ${rel/host/host apt sources})"
      local dl; dl=$(mktemp -d "$QK_CACHE/dl.XXXXXX")
      (cd "$dl" && run_apt "$rel" apt-get -o APT::Sandbox::User=root download "$pkg" >&2)
      log "unpacking $pkg"
      rm -rf "$KDIR.tmp"
      mkdir -p "$KDIR.tmp" && dpkg -x "$dl"/*.deb "$KDIR.tmp" && mv "$KDIR.tmp" "$KDIR"
      rm -rf "$dl"
    fi
    echo "$pkg" > "$alias_f"
  fi
  KDIR="$QK_CACHE/kernels/$pkg"
  VMLINUZ=$(ls "$KDIR"/boot/vmlinuz-* | head -1)
  KVER=${VMLINUZ##*/vmlinuz-}
  KCONFIG="$KDIR/boot/config-$KVER"
}

# ---------------------------------------------------------------- initramfs
copy_file() { # copy_file HOSTPATH ROOT [DESTPATH]
  local src=$1 root=$2 dst=${3:-$1}
  [ -e "$root$dst" ] && return 0
  mkdir -p "$root$(dirname "$dst")"
  cp -L "$src" "$root$dst"
}
copy_libs() { # copy_libs ELF ROOT: the ELF's shared libraries (ldd's list)
  local f=$1 root=$2 l
  file -L "$f" 2>/dev/null | grep -q 'dynamically linked' || return 0
  for l in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
    [ -e "$l" ] && copy_file "$l" "$root"
  done
}
add_module() { # add_module NAME ROOT LIST: appends NAME's path to LIST, dependencies first
  local name=${1//-/_} root=$2 list=$3 optional=0 path dep tmp
  case $name in *\?) optional=1; name=${name%\?} ;; esac
  grep -qx "$name" "$list.seen" 2>/dev/null && return 0
  echo "$name" >> "$list.seen"
  grep -qE "/${name//_/[-_]}\.ko" "$KDIR/lib/modules/$KVER/modules.builtin" 2>/dev/null && return 0
  path=$(find "$KDIR/lib/modules/$KVER/kernel" -regextype egrep \
    -regex ".*/${name//_/[-_]}\.ko(\.xz|\.zst|\.gz)?" | head -1)
  if [ -z "$path" ]; then
    [ "$optional" = 1 ] && { log "module $name: not in $KVER, skipped"; return 0; }
    die "module $name not found for $KVER"
  fi
  tmp="$root/lib/modules/$KVER/$name.ko"; mkdir -p "$(dirname "$tmp")"
  case $path in
    *.xz) xz -dc "$path" > "$tmp" ;; *.zst) zstd -qdc "$path" > "$tmp" ;;
    *.gz) gzip -dc "$path" > "$tmp" ;; *) cp "$path" "$tmp" ;;
  esac
  # The dependencies from the module's own .modinfo (busybox modinfo wants the host's
  # modules.dep, which a host without modules lacks).
  objcopy -O binary --only-section=.modinfo "$tmp" "$tmp.modinfo"
  for dep in $(tr '\0' '\n' < "$tmp.modinfo" | sed -n 's/^depends=//p' | head -1 | tr ',' ' '); do
    add_module "$dep" "$root" "$list"
  done
  rm -f "$tmp.modinfo"
  echo "/lib/modules/$KVER/$name.ko" >> "$list"
}
sq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

build_initramfs() { # build_initramfs DIR SCRIPT OUT ARGS...
  local dir=$1 script=$2 out=$3; shift 3
  local root="$WORK/root" b p f
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,etc,boot,qk,root,lib/x86_64-linux-gnu,lib64}
  local bb; bb=$(command -v busybox) || die "busybox missing (apt-get install busybox-static)"
  cp -L "$bb" "$root/bin/busybox"; copy_libs "$bb" "$root"
  [ -x /bin/bash ] || die "bash missing"
  copy_file /bin/bash "$root" /usr/bin/bash; copy_libs /bin/bash "$root"
  for b in $BINS; do
    p=$(command -v "$b") || die "host program '$b' not found"
    p=$(readlink -f "$p"); copy_file "$p" "$root" "/usr/sbin/$(basename "$b")"; copy_libs "$p" "$root"
  done
  if [ "$PYTHON" = 1 ]; then
    [ -x /usr/bin/python3 ] || die "/usr/bin/python3 missing (apt-get install python3)"
    p=$(readlink -f /usr/bin/python3)
    copy_file "$p" "$root" /usr/bin/python3; copy_libs "$p" "$root"
    local stdlib; stdlib=$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
    mkdir -p "$root$stdlib"
    tar -C "$stdlib" -cf - --exclude='./config-*' --exclude=./test --exclude=./idlelib \
      --exclude=./tkinter --exclude=./lib2to3 --exclude=./pydoc_data --exclude=./ensurepip \
      --exclude=./distutils --exclude=./site-packages --exclude=./dist-packages . \
      | tar -C "$root$stdlib" -xf -
    for f in "$root$stdlib"/lib-dynload/*.so; do copy_libs "$f" "$root"; done
  fi
  if [ "$dir" != - ]; then
    [ -d "$dir" ] || die "$dir is not a directory"
    cp -a "$dir"/. "$root/qk/"
    while IFS= read -r -d '' f; do
      head -c4 "$f" 2>/dev/null | grep -q 'ELF' && copy_libs "$f" "$root"
    done < <(find "$root/qk" -type f -print0)
  fi
  cp "$script" "$root/qk/.qk_script"
  if [ -n "$PRE" ]; then cp "$PRE" "$root/qk/.qk_pre"; fi
  [ -n "${KCONFIG:-}" ] && [ -f "$KCONFIG" ] && cp "$KCONFIG" "$root/boot/config-$KVER"
  : > "$root/etc/qk_modules"
  if [ -n "$MODULES" ]; then
    [ -n "${KDIR:-}" ] || die "-M needs a Debian kernel package, not a bare vmlinuz"
    for m in $MODULES; do add_module "$m" "$root" "$root/etc/qk_modules"; done
    rm -f "$root/etc/qk_modules.seen"
  fi
  { printf 'set --'; for a in "$@"; do printf ' %s' "$(sq "$a")"; done; echo
    for v in $ENVVARS; do [ -n "${!v+x}" ] && echo "export $v=$(sq "${!v}")"; done
  } > "$root/etc/qk_args"
  cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
# sh is bash: busybox's ash would run its own applets (ip, tc, ...) before any on PATH.
ln -sf /usr/bin/bash /bin/sh
export PATH=/qk:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
mount -t bpf bpf /sys/fs/bpf; mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm
ln -sf /proc/self/fd /dev/fd 2>/dev/null
hostname qk; ip link set lo up
echo "127.0.0.1 localhost qk" > /etc/hosts
OUT=/dev/ttyS1; [ -e $OUT ] || OUT=/dev/console
stty -F $OUT raw -echo 2>/dev/null
if [ -f /qk/.qk_pre ]; then (cd /qk && /usr/bin/bash /qk/.qk_pre) < /dev/null > $OUT 2>&1; fi
for m in $(cat /etc/qk_modules); do insmod $m || echo "qk: insmod $m failed" > $OUT; done
cd /qk
( . /etc/qk_args; exec /usr/bin/bash /qk/.qk_script "$@" ) < /dev/null > $OUT 2>&1
rc=$?
echo "@@QK_EXIT=$rc@@" > $OUT
sync
poweroff -f
EOF
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet) > "$out"
}

# ---------------------------------------------------------------- commands
case $CMD in
  list)
    echo "shorthands: 6.12 6.1 5.10 (cloud flavour), 6.12-generic 6.1-generic 5.10-generic"
    apt_ready host; apt_ready bullseye
    apt-cache search '^linux-image-[0-9].*-amd64(-unsigned)?$' 2>/dev/null | awk '{print $1}' \
      | grep -v -e dbg -e rt-amd64 | sort -V
    run_apt bullseye apt-cache search '^linux-image-5.*-amd64(-unsigned)?$' 2>/dev/null \
      | awk '{print $1}' | grep -v -e dbg -e rt-amd64 | sort -V | tail -4 || true
    exit 0 ;;
  fetch) fetch_kernel; echo "${KDIR:-$VMLINUZ}"; exit 0 ;;
  run) ;;
  *) die "unknown command $CMD" ;;
esac

[ $# -ge 2 ] || die "usage: $0 [opts] run DIR SCRIPT [ARGS...]"
DIR=$1 SCRIPT=$2; shift 2
[ -f "$SCRIPT" ] || die "script $SCRIPT not found"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
fetch_kernel
WORK=$(mktemp -d "$QK_CACHE/run.XXXXXX")
QPID=""
cleanup() { [ -n "$QPID" ] && kill "$QPID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

build_initramfs "$DIR" "$SCRIPT" "$WORK/initrd.cpio" "$@"
: > "$WORK/out.log"; : > "$WORK/console.log"
ACCEL=(-accel tcg)
[ "${QK_KVM:-0}" = 1 ] && ACCEL=(-enable-kvm -cpu host)
T0=$(date +%s.%N)
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 "${ACCEL[@]}" -m "$MEM" -smp "$SMP" \
  -nodefaults -no-user-config -display none -monitor none \
  -serial "file:$WORK/console.log" -serial "file:$WORK/out.log" \
  -kernel "$VMLINUZ" -initrd "$WORK/initrd.cpio" \
  -append "console=ttyS0 panic=-1 oops=panic quiet loglevel=4 $APPEND" -no-reboot \
  </dev/null >"$WORK/qemu.log" 2>&1 &
QPID=$!
# The stall watchdog: SCRIPT's output must grow at least every $STALL seconds.
WPID=""
if [ "$STALL" -gt 0 ]; then
  (
    last=-1 still=0
    while kill -0 "$QPID" 2>/dev/null; do
      size=$(stat -c %s "$WORK/out.log" 2>/dev/null || echo 0)
      if [ "$size" = "$last" ]; then still=$((still + 5)); else still=0 last=$size; fi
      if [ "$still" -ge "$STALL" ]; then
        : > "$WORK/stalled"
        kill "$QPID" 2>/dev/null
        break
      fi
      sleep 5
    done
  ) &
  WPID=$!
fi
# Stream the script's output as it comes, without the exit marker.
tail -s 0.2 -n +1 -f --pid="$QPID" "$WORK/out.log" | grep --line-buffered -av '^@@QK_EXIT=[0-9]*@@$' || true
set +e; wait "$QPID"; QRC=$?; set -e; QPID=""
if [ -n "$WPID" ]; then kill "$WPID" 2>/dev/null || true; wait "$WPID" 2>/dev/null || true; fi
T1=$(date +%s.%N)
RC=$(sed -n 's/^@@QK_EXIT=\([0-9]*\)@@.*/\1/p' "$WORK/out.log" | tail -1)
ELAPSED=$(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.1f", b-a}')
if [ "$VERBOSE" = 1 ]; then
  echo "----- kernel console ($KVER) -----" >&2; tr -d '\r' < "$WORK/console.log" >&2
fi
if [ -z "$RC" ]; then
  if [ -e "$WORK/stalled" ]; then RC=124; log "no output for ${STALL}s: stopped (a hang)"
  elif [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then RC=124; log "timeout after ${TIMEOUT}s"; else RC=125; fi
  log "no exit marker from the guest (qemu exit $QRC); the console's last lines:"
  tr -d '\r' < "$WORK/console.log" | tail -40 >&2; cat "$WORK/qemu.log" >&2
fi
log "kernel $KVER, boot and run ${ELAPSED}s, exit $RC"
exit "$RC"
