# shellcheck shell=bash
# The Debian packages the tests need, in one place: sourced by .ci/run (which installs all of
# them), tests/run and tests/kernels/run (which install their own list when a command is missing).

# tests/run: compilers for the BPF object check, bpftool, a real InfluxDB 1.x server and shell,
# iproute2 for namespaces and veth pairs, nftables (nft) for kube-proxy's DNAT of a Service's
# virtual IP (tests/support/kube_proxy.rs), python3 for helper processes; real containerd (CRI) and
# Docker with runc, CNI plugins, busybox for the image, gRPC for the CRI client; python3-venv for
# the Kubernetes manifest validator; dpkg-dev for cargo-deb; strace (the health check makes no
# bpf() call).
TEST_PACKAGES=(clang llvm libbpf-dev bpftool influxdb influxdb-client iproute2 nftables procps python3
	containerd runc docker.io containernetworking-plugins busybox-static
	python3-grpcio python3-protobuf protobuf-compiler python3-venv dpkg-dev strace)

# tests/kernels/run: QEMU, busybox and cpio for the initramfs, file and binutils (ELF checks,
# objcopy), xz and zstd (compressed modules); ip, nft, bpftool, python3, influxd and influx go
# into the guests.
KERNEL_PACKAGES=(qemu-system-x86 busybox-static cpio file xz-utils zstd binutils iproute2 nftables
	bpftool python3 influxdb influxdb-client)

# install_missing WHO PACKAGES... -- COMMANDS...: installs PACKAGES when one of COMMANDS is
# missing (as root with apt-get), else fails naming what to install.
install_missing() {
	local who="$1" packages=() missing=()
	shift
	while (($#)) && [[ $1 != -- ]]; do
		packages+=("$1")
		shift
	done
	shift
	for cmd in "$@"; do
		command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
	done
	((${#missing[@]})) || return 0
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
		echo "$who: installing ${packages[*]} (missing: ${missing[*]})" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}" >&2
	else
		echo "$who: missing ${missing[*]}: install ${packages[*]} (Debian) or run as root" >&2
		exit 1
	fi
}
