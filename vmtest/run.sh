#!/usr/bin/env bash
# The kernel matrix: boots Debian's kernels under QEMU (TCG, no KVM needed)
# with a small initramfs and runs tcptrace's BPF tests and CLI inside.
# Usage: run.sh [KERNEL...] with KERNEL one of the names below; none: all.
# Each kernel's console log is kept in bin/vmtest/KERNEL.log.
set -euo pipefail
cd "$(dirname "$0")/.."

# Kernel name -> the Debian suite whose linux-image-cloud-amd64 it is.
declare -A suites=(
	[5.10]=bullseye
	[6.1]=bookworm
	[6.12]=trixie
	[backports]=trixie-backports
)
all=(5.10 6.1 6.12 backports)
kernels=("$@")
[[ ${#kernels[@]} -eq 0 ]] && kernels=("${all[@]}")
for k in "${kernels[@]}"; do
	if [[ -z ${suites[$k]:-} ]]; then
		echo "vmtest: unknown kernel $k (known: ${all[*]})" >&2
		exit 2
	fi
done

out=bin/vmtest
mkdir -p "$out"
for tool in qemu-system-x86_64 busybox cpio; do
	command -v "$tool" >/dev/null || {
		echo "vmtest: $tool is missing: make vmtest-deps installs it" >&2
		exit 1
	}
done

# Fetch every kernel first: the downloads need no CPU.
declare -A kdir
for k in "${kernels[@]}"; do
	kdir[$k]=$(vmtest/fetch-kernel.sh "${suites[$k]}")
done

# The guest has no Go toolchain and no C compiler: everything is static.
root=$out/root
rm -rf "$root"
mkdir -p "$root"/{bin,vmtest,proc,sys,dev,tmp,boot,etc,run}
export CGO_ENABLED=0
go build -o "$root/vmtest/tcptrace" ./cmd/tcptrace
go build -o "$root/vmtest/testpeer" ./internal/testpeer
go test -c -o "$root/vmtest/tracer.test" ./tracer
go test -c -o "$root/vmtest/cmd.test" ./cmd/tcptrace
# Linked as users' C programs are, against the shared libc.
cc -g -O0 -fno-omit-frame-pointer -o "$root/vmtest/leakserver" tracer/testdata/leakserver.c
cc -g -O0 -fno-omit-frame-pointer -o "$root/vmtest/holders" tracer/testdata/holders.c
cp vmtest/tests "$root/vmtest/tests"
install -m 0755 vmtest/init "$root/init"
cp "$(command -v busybox)" "$root/bin/busybox"
# ss, which the tests compare with, iproute2's ip (busybox's has no netns),
# and the libraries of the dynamic binaries.
cp "$(command -v ss)" "$root/bin/ss"
cp "$(command -v ip)" "$root/bin/ip"
for lib in $(ldd "$root/bin/ss" "$root/bin/ip" "$root/vmtest/leakserver" "$root/vmtest/holders" | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
	mkdir -p "$root$(dirname "$lib")"
	cp -L "$lib" "$root$lib"
done
echo "root:x:0:0:root:/tmp:/bin/sh" >"$root/etc/passwd"
echo "nobody:x:65534:65534:nobody:/nonexistent:/bin/false" >>"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
echo "nogroup:x:65534:" >>"$root/etc/group"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out/base.cpio.gz"

# Boots one kernel; its results are in $out/$k.log.
boot() {
	local k=$1 dir=${kdir[$1]} release
	release=$(cat "$dir/release")
	local extra=$out/$k.extra
	rm -rf "$extra"
	mkdir -p "$extra/boot"
	# The kernel config, where tcptrace reads CONFIG_HZ from.
	cp "$dir/config" "$extra/boot/config-$release"
	(cd "$extra" && find . | cpio -o -H newc --quiet | gzip -1) >"$out/$k.cpio.gz"
	cat "$out/base.cpio.gz" "$out/$k.cpio.gz" >"$out/$k.initrd"
	for try in 1 2 3; do
		timeout 1500 qemu-system-x86_64 -accel tcg -smp 1 -m 2G -no-reboot -nodefaults \
			-display none -serial stdio -kernel "$dir/vmlinuz" -initrd "$out/$k.initrd" \
			-append "console=ttyS0 panic=-1 quiet loglevel=3" </dev/null >"$out/$k.log" 2>&1 || true
		# A boot that never reached /init (an early oops) is tried again.
		grep -q '^==== vmtest begin' "$out/$k.log" && break
		echo "vmtest: $k: boot $try did not reach /init" >&2
	done
}

for k in "${kernels[@]}"; do
	boot "$k" &
done
wait

# One line a test run, a kernel's boot time, and a failure for anything missing.
failed=0 runs_ok=0 runs_failed=0
for k in "${kernels[@]}"; do
	log=$out/$k.log
	release=$(cat "${kdir[$k]}/release")
	if ! grep -q '^==== vmtest end' "$log"; then
		echo "vmtest: $k ($release): FAIL: the guest did not finish; last lines of $log:"
		tail -n 30 "$log"
		failed=1
		runs_failed=$((runs_failed + 1))
		continue
	fi
	n=$(tr -d '\r' <"$log" | grep -cE '^==== result [^ ]+ 0 ' || true)
	runs_ok=$((runs_ok + n))
	n=$(tr -d '\r' <"$log" | grep -cE '^==== result [^ ]+ [1-9]' || true)
	runs_failed=$((runs_failed + n))
	tr -d '\r' <"$log" | awk -v k="$k" -v rel="$release" '
		/^==== run / { run = $3; start = 1 }
		/^==== result / {
			status = $4 == 0 ? "ok" : "FAIL"
			if (!booted) { printf "vmtest: %s (%s): booted in %.1fs\n", k, rel, $5; booted = 1 }
			printf "vmtest: %s: %-8s %-4s %.1fs\n", k, $3, status, $6 - $5
		}'
	if tr -d '\r' <"$log" | grep -qE '^==== result [^ ]+ [1-9]'; then
		echo "vmtest: $k: failures; the guest's output:"
		tr -d '\r' <"$log" | grep -E '^(---|===|    |FAIL|ok|PASS|panic|tcptrace)' | grep -vE '^(=== (RUN|PAUSE|CONT)|--- PASS)' | head -n 200
		failed=1
	fi
done
echo "vmtest: $runs_ok passed, $runs_failed failed"
exit $failed
