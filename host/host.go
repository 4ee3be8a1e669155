// Package host reads what tcptrace needs to know of the machine it runs on:
// capabilities, the kernel's release, configuration, symbols and lockdown,
// tracefs, TCP sysctls, the boot clock, cgroups and network namespaces (the
// containers sockets belong to); and says, in one line, what is
// missing for tracing.
package host

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/tcptrace/tcptrace/tcp"
)

// Capability numbers, from include/uapi/linux/capability.h.
const (
	CapSysAdmin      = 21
	CapPerfmon       = 38
	CapBPF           = 39
	CapDacOverride   = 1
	CapDacReadSearch = 2
	CapSysPtrace     = 19
	CapSysResource   = 24
)

// EffectiveCaps reads the process's effective capabilities.
func EffectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}

// Caps is a set of capabilities, as EffectiveCaps reads them.
type Caps uint64

// Has reports whether capability n is in the set.
func (c Caps) Has(n uint) bool { return c&(1<<n) != 0 }

const SecurityfsPath = "/sys/kernel/security"

// LockdownMode reads the kernel's lockdown mode, "" when it cannot be read.
func LockdownMode() string {
	b, err := os.ReadFile(SecurityfsPath + "/lockdown")
	if err != nil {
		return ""
	}
	return SelectedLockdown(string(b))
}

// SelectedLockdown picks the bracketed mode of "none [integrity] confidentiality".
func SelectedLockdown(s string) string {
	for _, f := range strings.Fields(s) {
		if strings.HasPrefix(f, "[") && strings.HasSuffix(f, "]") {
			return strings.Trim(f, "[]")
		}
	}
	return ""
}

// tracefsCandidates are where tracefs is found, in cilium/ebpf's order.
var tracefsCandidates = []string{TracefsPath, "/sys/kernel/debug/tracing"}

// FindTracefs returns the directory where tracefs is mounted, "" if nowhere.
func FindTracefs() string {
	for _, dir := range tracefsCandidates {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.TRACEFS_MAGIC {
			return dir
		}
	}
	return ""
}

// The oldest kernel tcptrace supports, and the kernels the kernel matrix
// (vmtest/) boots and passes on: Debian 11, 12, 13 and trixie-backports.
const (
	MinKernel     = "5.10"
	TestedKernels = "5.10, 6.1, 6.12, 6.18 and 7.3"
)

const TracefsPath = "/sys/kernel/tracing"

// Release is the running kernel's release, as uname -r prints it.
func Release() string {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	return unix.ByteSliceToString(uts.Release[:])
}

// OlderThanFloor reports whether a kernel release is older than MinKernel.
func OlderThanFloor(release string) bool {
	var major, minor, minMajor, minMinor int
	fmt.Sscanf(MinKernel, "%d.%d", &minMajor, &minMinor)
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major < minMajor || major == minMajor && minor < minMinor
}

// BelowFloor adds to a reason tcptrace cannot run that the kernel is older
// than the oldest it supports, when it is: the missing piece, the running
// kernel and the minimum in one line.
func BelowFloor(err error, release string) error {
	if err == nil {
		return nil
	}
	if OlderThanFloor(release) {
		return fmt.Errorf("%w; this is Linux %s, and tcptrace needs Linux %s or later", err, release, MinKernel)
	}
	return err
}

// Check reports, in one sentence, the first thing missing for tracing:
// privileges, memory for BPF maps, a kernel lockdown that forbids reading
// kernel memory, kernel BTF, the BPF ring buffer, or tracefs (mounted here
// when it can be).
func Check() error {
	if err := checkPrivileges(); err != nil {
		return err
	}
	// A no-op where BPF memory is charged to the memory cgroup (5.11+).
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("this kernel counts BPF maps against RLIMIT_MEMLOCK and raising it failed (%v): run tcptrace as root, give it CAP_SYS_RESOURCE, or raise 'ulimit -l'", err)
	}
	if LockdownMode() == "confidentiality" {
		return errors.New("the kernel is locked down in confidentiality mode (/sys/kernel/security/lockdown), where BPF programs may not read kernel memory: tcptrace cannot work on this kernel")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return BelowFloor(errors.New("kernel BTF is missing (/sys/kernel/btf/vmlinux): tcptrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"), Release())
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return BelowFloor(fmt.Errorf("the kernel has no BPF ring buffer (Linux 5.8+): %v", err), Release())
	}
	return BelowFloor(ensureTracefs(), Release())
}

func checkPrivileges() error {
	caps, err := EffectiveCaps()
	if err != nil {
		return err
	}
	has := func(c uint) bool { return Caps(caps).Has(c) }
	if has(CapSysAdmin) || (has(CapBPF) && has(CapPerfmon)) {
		return nil
	}
	return errors.New("tcptrace needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load its BPF programs: run it with sudo")
}

// ensureTracefs finds tracefs, mounting it when it is mounted nowhere.
func ensureTracefs() error {
	dir := FindTracefs()
	if dir == "" {
		if err := unix.Mount("tracefs", TracefsPath, "tracefs", 0, ""); err != nil {
			return fmt.Errorf("tracefs is not mounted and mounting it failed (%v): run 'mount -t tracefs tracefs %s' as root", err, TracefsPath)
		}
		dir = TracefsPath
	}
	_, err := os.Stat(dir + "/events/syscalls")
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("tracefs at %s is readable only by root: give tcptrace CAP_DAC_READ_SEARCH too, or run it as root", dir)
	}
	if err != nil {
		return errors.New("the kernel has no syscall tracepoints (tracefs events/syscalls): tcptrace needs CONFIG_FTRACE_SYSCALLS=y")
	}
	return nil
}

// HZ reads CONFIG_HZ, the rate of the jiffies that timewait timers count.
// Without a kernel config it assumes 250, the most common value; only the time
// left shown for TIME_WAIT depends on it.
func HZ() int64 {
	config, _ := KernelConfig(Release())
	if hz, err := strconv.ParseInt(config["CONFIG_HZ"], 10, 64); err == nil && hz > 0 {
		return hz
	}
	return 250
}

// KernelFunction is where a kernel function's code lies: [Start, End).
type KernelFunction struct{ Start, End uint64 }

// KernelFunctions finds kernel functions in /proc/kallsyms, in one read; a
// name not there, or with its address hidden (kernel.kptr_restrict, no
// CAP_SYSLOG), is left out.
func KernelFunctions(names ...string) map[string]KernelFunction {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return nil
	}
	defer f.Close()
	return functionsIn(f, names)
}

// functionsIn reads a kallsyms listing ("ffffffff82064f30 t tw_timer_handler",
// a module's name may follow in brackets) for functions of the kernel
// itself. The kernel's own symbols come sorted by address: a function ends
// where the next higher address begins. By hand: prometheus/procfs does not
// read kallsyms.
func functionsIn(r io.Reader, names []string) map[string]KernelFunction {
	found := map[string]KernelFunction{}
	var open []string // found, their end not yet
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue // a module's symbol, or not a symbol
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil || addr == 0 {
			continue
		}
		for _, name := range open {
			if fn := found[name]; addr > fn.Start {
				fn.End = addr
				found[name] = fn
				open = slices.DeleteFunc(open, func(n string) bool { return n == name })
			}
		}
		if _, seen := found[f[2]]; !seen && slices.Contains(names, f[2]) {
			found[f[2]] = KernelFunction{Start: addr}
			open = append(open, f[2])
		}
	}
	for _, name := range open {
		delete(found, name) // its end unknown: the last symbol, or the listing cut short
	}
	return found
}

// BootClockOffset is wall-clock time less CLOCK_BOOTTIME, the clock of the
// kernel's event stamps: add it to a stamp to get the wall-clock time.
func BootClockOffset() int64 {
	var ts unix.Timespec
	wall := time.Now().UnixNano()
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return wall - ts.Nano()
}

// ReadTCP reads the TCP sysctls that TIME_WAIT advice depends on; a value
// that cannot be read stays zero.
func ReadTCP() tcp.HostTCP {
	var h tcp.HostTCP
	read := func(name string) []int {
		b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
		if err != nil {
			return nil
		}
		var out []int
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
		return out
	}
	if v := read("ip_local_port_range"); len(v) == 2 {
		h.PortRange = [2]int{v[0], v[1]}
	}
	if v := read("tcp_tw_reuse"); len(v) == 1 {
		h.TwReuse = v[0]
	}
	if v := read("tcp_max_tw_buckets"); len(v) == 1 {
		h.MaxTwBuckets = v[0]
	}
	return h
}

// SocketFDs lists the fds of process pid that are sockets, with their
// inodes; alive is false when the process is gone. One readdir and a
// readlink per fd: a process fresh from exec() has few. (procfs's
// FileDescriptorTargets gives the targets without their fd numbers.)
func SocketFDs(pid uint32) (fds map[int32]uint64, alive bool) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, false
	}
	fds = make(map[int32]uint64, len(entries))
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink(dir + "/" + e.Name())
		var inode uint64
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inode, _ = strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
		}
		if inode != 0 {
			fds[int32(fd)] = inode
		}
	}
	return fds, true
}
