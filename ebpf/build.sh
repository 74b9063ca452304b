#!/usr/bin/env bash
# Builds the committed BPF objects (so that cargo build needs no clang):
#   flowlens.bpf.o  the collector (the product's programs only)
#   checks.bpf.o    the hook-kind checks that `flowlens doctor` loads
#   floor.bpf.o     the benchmark's floor (tests/bench), not shipped
#   ebpf/build.sh           rebuild them in place
#   ebpf/build.sh --check   rebuild into a temp dir and fail if a committed object differs
# The output is byte-reproducible for a given clang/llvm (Debian clang 14): sources are
# compiled by relative name from this directory and the directory is mapped to "." in debug info.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$dir"

CLANG="${CLANG:-clang}"
LLVM_STRIP="${LLVM_STRIP:-llvm-strip}"

objects=(flowlens checks floor)

build() {
	local name="$1" out="$2"
	"$CLANG" -g -O2 -target bpf -D__TARGET_ARCH_x86 \
		-fdebug-prefix-map="$dir"=. -I"$dir" \
		-c "$name.bpf.c" -o "$out"
	"$LLVM_STRIP" -g "$out"
}

case "${1:-}" in
"")
	for name in "${objects[@]}"; do
		build "$name" "$name.bpf.o"
		echo "built $dir/$name.bpf.o ($(sha256sum "$name.bpf.o" | cut -d' ' -f1))"
	done
	;;
--check)
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	stale=0
	for name in "${objects[@]}"; do
		build "$name" "$tmp/$name.bpf.o"
		if [[ ! -f $name.bpf.o ]] || ! cmp -s "$tmp/$name.bpf.o" "$name.bpf.o"; then
			echo "committed ebpf/$name.bpf.o is stale: run ebpf/build.sh and commit it" >&2
			echo "  (fresh build: $(sha256sum "$tmp/$name.bpf.o" | cut -d' ' -f1), $("$CLANG" --version | head -n1))" >&2
			stale=1
		fi
	done
	((stale == 0)) || exit 1
	echo "ebpf/*.bpf.o are up to date"
	;;
*)
	echo "usage: $0 [--check]" >&2
	exit 2
	;;
esac
