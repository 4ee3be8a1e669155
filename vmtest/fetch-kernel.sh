#!/usr/bin/env bash
# Fetches a Debian cloud kernel for the kernel matrix and prints the folder it
# is unpacked in (vmlinuz and config inside). Usage: fetch-kernel.sh SUITE
#
# The package comes from the Debian archive this machine's own apt sources
# name, through a private apt configuration: the system's apt state is left
# alone. Downloads are cached in $VMTEST_CACHE.
set -euo pipefail

suite=${1:?usage: fetch-kernel.sh SUITE (bullseye, bookworm, trixie, trixie-backports)}
cache=${VMTEST_CACHE:-/var/cache/tcptrace-vmtest}
out=$cache/kernels/$suite
if [[ -s $out/vmlinuz && -s $out/config ]]; then
	echo "$out"
	exit 0
fi

# The archive's address, from the machine's own sources (deb822 or one-line).
archive=$(grep -hoE 'https?://[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null |
	head -n1 || true)
if [[ -z $archive ]]; then
	archive=$(grep -hoE '^deb +(\[[^]]*\] +)?https?://[^ ]+/debian/? ' /etc/apt/sources.list 2>/dev/null |
		awk '{print $NF}' | head -n1 || true)
fi
if [[ -z $archive ]]; then
	echo "fetch-kernel: no Debian archive in this machine's apt sources" >&2
	exit 1
fi

apt_dir=$cache/apt/$suite
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$out"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${archive%/} $suite main" \
	>"$apt_dir/sources.list"
apt_opts=(
	-o "Dir::Etc::SourceList=$apt_dir/sources.list"
	-o Dir::Etc::SourceParts=/dev/null
	-o "Dir::State::Lists=$apt_dir/lists"
	-o "Dir::Cache=$apt_dir"
	-o Dir::State::Status=/dev/null
	-o Debug::NoLocking=1
	-o APT::Get::List-Cleanup=0
)
apt-get "${apt_opts[@]}" -qq update >&2

# The metapackage names the suite's current image; newer series put the kernel
# itself in a linux-binary-* package and its config in linux-base-*.
image=$(apt-cache "${apt_opts[@]}" depends linux-image-cloud-amd64 |
	awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [[ -z $image ]]; then
	echo "fetch-kernel: $suite has no linux-image-cloud-amd64 image" >&2
	exit 1
fi
pkgs=("$image")
pkgs+=($(apt-cache "${apt_opts[@]}" depends "$image" |
	awk '/Depends: linux-(binary|base)-[0-9]/ {print $2}'))

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}" 2>/dev/null) >&2
for deb in "$work"/*.deb; do
	dpkg-deb -x "$deb" "$work/root"
done
vmlinuz=$(find "$work/root" -name 'vmlinuz*' -type f | head -n1)
config=$(find "$work/root" \( -name 'config-*' -o -path '*/modules/*/config' \) -type f | head -n1)
if [[ -z $vmlinuz || -z $config ]]; then
	echo "fetch-kernel: no vmlinuz or config in ${pkgs[*]}" >&2
	exit 1
fi
cp "$vmlinuz" "$out/vmlinuz"
cp "$config" "$out/config"
echo "${image#linux-image-}" >"$out/release"
echo "$out"
