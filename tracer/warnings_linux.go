//go:build linux

package tracer

import (
	"github.com/cilium/ebpf/btf"

	"github.com/tcptrace/tcptrace/host"
	"github.com/tcptrace/tcptrace/kernel"
)

// Warnings names, one line each, what this tracer runs without on this
// host: everything it lost that did not keep it from starting. stacks tells
// whether the caller shows where connections were created (leaks, record).
func (t *Tracer) Warnings(stacks bool) []string {
	var out []string
	if t.k.Classic() {
		out = append(out, "BTF-typed tracepoints are unavailable; using the classic tracepoint, which cannot follow connections into TIME_WAIT")
	}
	if why := t.k.Options().NoTimerWhy; why != "" && !t.k.Classic() {
		out = append(out, "the end of TIME_WAIT is found by walks of the socket table, when its timer is due (up to 6 s late): "+why)
	}
	if t.OwnCookies() {
		out = append(out, "this kernel lets tracing programs not ask for socket cookies (Linux 5.12+): tcptrace numbers connections itself, so their ids are not the cookies ss -e shows")
	}
	if !t.k.FollowsNetNS() {
		out = append(out, "without CAP_SYS_ADMIN, other network namespaces (containers) cannot be walked: leaks, the metrics and existing connections cover tcptrace's own only, and orphaned sockets elsewhere that get the peer's FIN show CLOSE, not TIME_WAIT")
	}
	if caps, err := host.EffectiveCaps(); stacks && err == nil && !host.Caps(caps).Has(host.CapSysPtrace) {
		out = append(out, "without CAP_SYS_PTRACE, the stacks where other users' processes created connections are shown as bare addresses")
	}
	if !t.dec.KnowsResetReasons() {
		out = append(out, "this kernel gives no reason for the RSTs it sends (sk_rst_reason, Linux 6.10+): resets are shown without one")
	}
	spec, err := btf.LoadKernelSpec()
	if stacks && err == nil && !kernel.HasTaskPtRegs(spec) {
		out = append(out, "this kernel has no bpf_task_pt_regs (Linux 5.15+): an origin may miss the caller of a syscall wrapper that keeps no stack frame (glibc's accept, say)")
	}
	if config, _ := host.KernelConfig(host.Release()); config["CONFIG_HZ"] == "" {
		out = append(out, "no kernel config (/boot/config-*, /proc/config.gz): the time left in TIME_WAIT assumes CONFIG_HZ=250")
	}
	if err == nil && !kernel.HasRecursionMisses(spec) {
		out = append(out, "this kernel does not count the program runs it skips (recursion_misses, Linux 5.12+): such losses go unnoticed and unrepaired")
	}
	return out
}
