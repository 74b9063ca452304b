#!/usr/bin/env bash
# Builds ebpf/flowlens.bpf.o (committed, so that cargo build needs no clang).
#   ebpf/build.sh           rebuild flowlens.bpf.o in place
#   ebpf/build.sh --check   rebuild into a temp file and fail if the committed object differs
# The output is byte-reproducible for a given clang/llvm (Debian clang 14): sources are
# compiled by relative name from this directory and the directory is mapped to "." in debug info.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$dir"

CLANG="${CLANG:-clang}"
LLVM_STRIP="${LLVM_STRIP:-llvm-strip}"

build() {
	local out="$1"
	"$CLANG" -g -O2 -target bpf -D__TARGET_ARCH_x86 \
		-fdebug-prefix-map="$dir"=. -I"$dir" \
		-c flowlens.bpf.c -o "$out"
	"$LLVM_STRIP" -g "$out"
}

case "${1:-}" in
"")
	build flowlens.bpf.o
	echo "built $dir/flowlens.bpf.o ($(sha256sum flowlens.bpf.o | cut -d' ' -f1))"
	;;
--check)
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	build "$tmp/flowlens.bpf.o"
	if [[ ! -f flowlens.bpf.o ]] || ! cmp -s "$tmp/flowlens.bpf.o" flowlens.bpf.o; then
		echo "committed ebpf/flowlens.bpf.o is stale: run ebpf/build.sh and commit it" >&2
		echo "  (fresh build: $(sha256sum "$tmp/flowlens.bpf.o" | cut -d' ' -f1), $("$CLANG" --version | head -n1))" >&2
		exit 1
	fi
	echo "ebpf/flowlens.bpf.o is up to date"
	;;
*)
	echo "usage: $0 [--check]" >&2
	exit 2
	;;
esac
