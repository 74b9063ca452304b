# Runs inside the guest, under bash (tests/kernels/run has qemu.sh boot it): prints the kernel
# and `flowlens doctor`, then runs the collector tests one at a time.
# Arguments: the collector test binary's file name (in /qk/target/debug/deps), then the names of
# the tests to run (none: all of them).
set -u
# init's limit is 1024 open files; the thousand-connection tests need more (as on the host).
ulimit -n 65536
bin=$1
shift
echo "== kernel $(uname -r)"
echo "== modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
echo "== flowlens doctor"
/qk/target/debug/flowlens doctor 2>&1
echo "== flowlens doctor: exit $?"
echo "== collector tests${*:+: $*}"
filter=()
(($#)) && filter=(--exact "$@")
exec "/qk/target/debug/deps/$bin" --test-threads=1 "${filter[@]}"
