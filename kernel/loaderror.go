//go:build linux

package kernel

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/tcptrace/tcptrace/host"
)

// Capability numbers from include/uapi/linux/capability.h.

// The oldest kernel tcptrace supports, and the kernels the kernel matrix
// (vmtest/) boots and passes on: Debian 11, 12, 13 and trixie-backports.

// loadError turns a load failure into one line that names the program and
// the kernel feature it needs, with the verifier's whole log when debug is set.
func loadError(err error, debug bool) error {
	return host.BelowFloor(describeLoadError(err, debug), host.Release())
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
		// host.Check found the privileges: something else refuses.
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
