# shellcheck shell=bash
# Runs inside the guest, under bash (tests/kernels/run has qemu.sh boot it): prints the kernel
# and `flowlens doctor`, then runs each integration test binary, its tests one at a time.
# Arguments: groups separated by a lone `--`, one per test binary, run in order:
#   NAME FILE [LIBTEST ARGS...]   FILE is the binary's name in /qk/target/debug/deps; the libtest
#                                 arguments select or skip tests (--test-threads=1 is added).
# Environment: FLOWLENS_TESTS_SRC, the tests/ directory the binaries were compiled from
# (CARGO_MANIFEST_DIR, which containers.rs reads its helper script from): it is made to point
# at /qk/tests, which holds the helper files. FLOWLENS_REQUIRE_NETEM is set when sch_netem is
# loaded (containers.rs then fails rather than skips its netem test).
# Exit status: 0 when every binary passed and the module check (no_side_effects.sh, run by
# qemu.sh before the modules were loaded) found none loaded by flowlens, else 1.
set -u
# init's limit is 1024 open files; the thousand-connection tests need more (as on the host).
ulimit -n 65536
if [[ -n ${FLOWLENS_TESTS_SRC:-} ]]; then
	mkdir -p "$(dirname "$FLOWLENS_TESTS_SRC")"
	ln -sfn /qk/tests "$FLOWLENS_TESTS_SRC"
fi
# The kernel ships netem (qemu.sh loaded sch_netem): the RTT test must run here, not skip.
if [[ -d /sys/module/sch_netem ]]; then
	export FLOWLENS_REQUIRE_NETEM=1
fi
echo "== kernel $(uname -r)"
# The check qemu.sh ran before loading the modules (no_side_effects.sh), when it did.
if [[ -f /run/qk_module_check ]]; then
	verdict=$(cat /run/qk_module_check)
	echo "== module check: $verdict"
	[[ $verdict == ok ]] || module_check_failed=1
fi
echo "== modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
echo "== flowlens doctor"
/qk/target/debug/flowlens doctor 2>&1
echo "== flowlens doctor: exit $?"
status=${module_check_failed:-0}
while (($#)); do
	name=$1 bin=$2
	shift 2
	args=()
	while (($#)) && [[ $1 != -- ]]; do
		args+=("$1")
		shift
	done
	(($#)) && shift
	echo "== $name tests${args[*]:+: ${args[*]}}"
	t0=$SECONDS
	"/qk/target/debug/deps/$bin" --test-threads=1 "${args[@]}" || status=1
	echo "== $name tests: $((SECONDS - t0)) s"
done
exit "$status"
