//go:build linux

package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Capability numbers from include/uapi/linux/capability.h.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

const tracefsPath = "/sys/kernel/tracing"

// The oldest kernel tcptrace supports, and the kernels the kernel matrix
// (vmtest/) boots and passes on: Debian 11, 12, 13 and trixie-backports.
const (
	minKernel     = "5.10"
	testedKernels = "5.10, 6.1, 6.12, 6.18 and 7.3"
)

// kernelRelease is the running kernel's release, as uname -r prints it.
func kernelRelease() string {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	return unix.ByteSliceToString(uts.Release[:])
}

// olderThanFloor reports whether a kernel release is older than minKernel.
func olderThanFloor(release string) bool {
	var major, minor, minMajor, minMinor int
	fmt.Sscanf(minKernel, "%d.%d", &minMajor, &minMinor)
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major < minMajor || major == minMajor && minor < minMinor
}

// belowFloor adds to a reason tcptrace cannot run that the kernel is older
// than the oldest it supports, when it is: the missing piece, the running
// kernel and the minimum in one line.
func belowFloor(err error, release string) error {
	if err == nil {
		return nil
	}
	if olderThanFloor(release) {
		return fmt.Errorf("%w; this is Linux %s, and tcptrace needs Linux %s or later", err, release, minKernel)
	}
	return err
}

// CheckHost reports, in one sentence, the first thing missing for tracing:
// privileges, memory for BPF maps, a kernel lockdown that forbids reading
// kernel memory, kernel BTF, the BPF ring buffer, or tracefs (mounted here
// when it can be).
func CheckHost() error {
	if err := checkPrivileges(); err != nil {
		return err
	}
	// A no-op where BPF memory is charged to the memory cgroup (5.11+).
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("this kernel counts BPF maps against RLIMIT_MEMLOCK and raising it failed (%v): run tcptrace as root, give it CAP_SYS_RESOURCE, or raise 'ulimit -l'", err)
	}
	if lockdownMode() == "confidentiality" {
		return errors.New("the kernel is locked down in confidentiality mode (/sys/kernel/security/lockdown), where BPF programs may not read kernel memory: tcptrace cannot work on this kernel")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return belowFloor(errors.New("kernel BTF is missing (/sys/kernel/btf/vmlinux): tcptrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"), kernelRelease())
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return belowFloor(fmt.Errorf("the kernel has no BPF ring buffer (Linux 5.8+): %v", err), kernelRelease())
	}
	return belowFloor(ensureTracefs(), kernelRelease())
}

func checkPrivileges() error {
	caps, err := effectiveCaps()
	if err != nil {
		return err
	}
	has := func(c uint) bool { return capSet(caps).has(c) }
	if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
		return nil
	}
	return errors.New("tcptrace needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load its BPF programs: run it with sudo")
}

// ensureTracefs finds tracefs, mounting it when it is mounted nowhere.
func ensureTracefs() error {
	dir := findTracefs()
	if dir == "" {
		if err := unix.Mount("tracefs", tracefsPath, "tracefs", 0, ""); err != nil {
			return fmt.Errorf("tracefs is not mounted and mounting it failed (%v): run 'mount -t tracefs tracefs %s' as root", err, tracefsPath)
		}
		dir = tracefsPath
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

// loadError turns a load failure into one line that names the program and
// the kernel feature it needs, with the verifier's whole log when debug is set.
func loadError(err error, debug bool) error {
	return belowFloor(describeLoadError(err, debug), kernelRelease())
}

func describeLoadError(err error, debug bool) error {
	what := "a tcptrace program"
	if m := failedProgram.FindStringSubmatch(err.Error()); m != nil {
		what = "tcptrace's program " + m[1]
		if spec, serr := loadTcptrace(); serr == nil && spec.Programs[m[1]] != nil {
			section := spec.Programs[m[1]].SectionName
			what += " (" + section
			if feature := programFeature(section); feature != "" {
				what += ", " + feature
			}
			what += ")"
		}
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		if debug {
			return fmt.Errorf("the kernel's verifier rejected %s: %+v", what, ve)
		}
		last := ""
		if n := len(ve.Log); n > 0 {
			last = ": " + strings.TrimSpace(ve.Log[n-1])
		}
		return fmt.Errorf("the kernel's verifier rejected %s (%v%s); run with --debug for its log, and 'tcptrace doctor' to check each piece", what, ve.Cause, last)
	}
	if errors.Is(err, unix.EPERM) {
		// CheckHost found the privileges: something else refuses.
		return fmt.Errorf("the kernel refused to load %s (%v) although tcptrace has the privileges: a security policy blocks it; 'tcptrace doctor' checks each piece", what, err)
	}
	return fmt.Errorf("the kernel could not load %s: %v; 'tcptrace doctor' checks each piece", what, err)
}

var failedProgram = regexp.MustCompile(`program (\w+):`)

// programFeature names the kernel feature a program's section needs.
func programFeature(section string) string {
	switch {
	case strings.HasPrefix(section, "tp_btf/"):
		return "a BTF raw tracepoint, Linux 5.5+"
	case section == "iter/tcp":
		return "a BPF iterator over TCP sockets, Linux 5.9+"
	case section == "iter/task_file":
		return "a BPF iterator over open files, Linux 5.8+"
	case strings.HasPrefix(section, "tracepoint/syscalls/"):
		return "a syscall tracepoint"
	case strings.HasPrefix(section, "tracepoint/tcp/"):
		return "a TCP reset tracepoint, Linux 4.15+"
	case strings.HasPrefix(section, "tracepoint/sock/"):
		return "the classic state tracepoint, Linux 4.16+"
	}
	return ""
}

// kernelHZ reads CONFIG_HZ, the rate of the jiffies that timewait timers count.
// Without a kernel config it assumes 250, the most common value; only the time
// left shown for TIME_WAIT depends on it.
func kernelHZ() int64 {
	config, _ := readKernelConfig(kernelRelease())
	if hz, err := strconv.ParseInt(config["CONFIG_HZ"], 10, 64); err == nil && hz > 0 {
		return hz
	}
	return 250
}

// kernelSymbol finds a kernel function's address in /proc/kallsyms; 0 when it
// is not there or addresses are hidden (kernel.kptr_restrict, no CAP_SYSLOG).
func kernelSymbol(name string) uint64 {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	suffix := " " + name
	for sc.Scan() {
		line := sc.Text()
		// "ffffffff82064f30 t tw_timer_handler"
		if !strings.HasSuffix(line, suffix) || len(line) != 16+3+len(name) {
			continue
		}
		addr, err := strconv.ParseUint(line[:16], 16, 64)
		if err != nil {
			return 0
		}
		return addr
	}
	return 0
}
