//go:build linux

package tracer

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Capability numbers from include/uapi/linux/capability.h.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

const tracefsPath = "/sys/kernel/tracing"

// CheckHost reports, in one sentence, the first thing missing for tracing:
// privileges, kernel BTF, the BPF ring buffer, or tracefs (mounted here when
// it can be).
func CheckHost() error {
	if err := checkPrivileges(); err != nil {
		return err
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return errors.New("kernel BTF is missing (/sys/kernel/btf/vmlinux): tcptrace needs Linux 5.8 or later built with CONFIG_DEBUG_INFO_BTF=y")
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return fmt.Errorf("the kernel has no BPF ring buffer (%v): tcptrace needs Linux 5.8 or later", err)
	}
	return ensureTracefs()
}

func checkPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
		return nil
	}
	return errors.New("tcptrace needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load its BPF programs: run it with sudo")
}

// ensureTracefs mounts tracefs when the syscall tracepoints cannot be found.
func ensureTracefs() error {
	if _, err := os.Stat(tracefsPath + "/events/syscalls"); err == nil {
		return nil
	}
	if _, err := os.Stat("/sys/kernel/debug/tracing/events/syscalls"); err == nil {
		return nil
	}
	if err := unix.Mount("tracefs", tracefsPath, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("tracefs is not mounted and mounting it failed (%v): run 'mount -t tracefs tracefs %s' as root", err, tracefsPath)
	}
	if _, err := os.Stat(tracefsPath + "/events/syscalls"); err != nil {
		return errors.New("the kernel has no syscall tracepoints (tracefs events/syscalls): tcptrace needs CONFIG_FTRACE_SYSCALLS=y")
	}
	return nil
}

// loadError turns a load failure into one line, with the verifier's whole log when debug is set.
func loadError(err error, debug bool) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		if debug {
			return fmt.Errorf("the kernel's verifier rejected a tcptrace program: %+v", ve)
		}
		last := ""
		if n := len(ve.Log); n > 0 {
			last = ": " + strings.TrimSpace(ve.Log[n-1])
		}
		return fmt.Errorf("the kernel's verifier rejected a tcptrace program (%v%s); run with --debug for its log", ve.Cause, last)
	}
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("loading BPF programs was not permitted (%v): run tcptrace as root, or with CAP_BPF and CAP_PERFMON", err)
	}
	return fmt.Errorf("load BPF programs: %w", err)
}

// kernelHZ reads CONFIG_HZ, the rate of the jiffies that timewait timers count.
// Without a kernel config it assumes 250, the most common value; only the time
// left shown for TIME_WAIT depends on it.
func kernelHZ() int64 {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	for _, path := range []string{"/boot/config-" + release, "/proc/config.gz"} {
		if hz := readConfigHZ(path); hz > 0 {
			return hz
		}
	}
	return 250
}

func readConfigHZ(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return 0
		}
		r = gz
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			hz, _ := strconv.ParseInt(v, 10, 64)
			return hz
		}
	}
	return 0
}
