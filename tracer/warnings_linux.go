//go:build linux

package tracer

import (
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Warnings names, one line each, what this tracer runs without on this
// host: everything it lost that did not keep it from starting. stacks tells
// whether the caller shows where connections were created (leaks, record).
func (t *Tracer) Warnings(stacks bool) []string {
	var out []string
	if t.classic {
		out = append(out, "BTF-typed tracepoints are unavailable; using the classic tracepoint, which cannot follow connections into TIME_WAIT")
	}
	if !t.netns.follow {
		out = append(out, "without CAP_SYS_ADMIN, other network namespaces (containers) cannot be walked: their orphaned sockets that get the peer's FIN show CLOSE, not TIME_WAIT")
	}
	if caps, err := effectiveCaps(); stacks && err == nil && !capSet(caps).has(capSysPtrace) {
		out = append(out, "without CAP_SYS_PTRACE, the stacks where other users' processes created connections are shown as bare addresses")
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	if config, _ := readKernelConfig(unix.ByteSliceToString(uts.Release[:])); config["CONFIG_HZ"] == "" {
		out = append(out, "no kernel config (/boot/config-*, /proc/config.gz): the time left in TIME_WAIT assumes CONFIG_HZ=250")
	}
	if !kernelCountsMisses() {
		out = append(out, "this kernel does not count the program runs it skips (recursion_misses, Linux 5.12+): such losses go unnoticed and unrepaired")
	}
	return out
}

// kernelCountsMisses reports whether the kernel counts skipped program runs;
// true when it cannot be told.
func kernelCountsMisses() bool {
	spec, err := btf.LoadKernelSpec()
	return err != nil || hasRecursionMisses(spec)
}
