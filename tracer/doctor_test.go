//go:build linux

package tracer

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLoadErrorNamesFeature: a program the kernel refuses is named with the
// kernel feature it needs, and the message points at 'tcptrace doctor'.
func TestLoadErrorNamesFeature(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("program dump_tcp: load program: %w", unix.EINVAL), "dump_tcp (iter/tcp, a BPF iterator over TCP sockets, Linux 5.9+)"},
		{fmt.Errorf("program handle_send_reset: load program: %w", unix.EPERM), "although tcptrace has the privileges"},
		{fmt.Errorf("map events: %w", unix.EINVAL), "a tcptrace program"},
	} {
		got := loadError(tc.err, false).Error()
		if !strings.Contains(got, tc.want) || !strings.Contains(got, "tcptrace doctor") || strings.Contains(got, "\n") {
			t.Errorf("%v: %q; want one line with %q and 'tcptrace doctor'", tc.err, got, tc.want)
		}
	}
}

func TestSelectedLockdown(t *testing.T) {
	for in, want := range map[string]string{
		"none [integrity] confidentiality\n": "integrity",
		"[none] integrity confidentiality":   "none",
		"none integrity [confidentiality]":   "confidentiality",
		"":                                   "",
	} {
		if got := selectedLockdown(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// TestBelowFloor: a kernel older than the oldest tcptrace supports is named,
// with the minimum, in the same line as the piece it lacks; others are not.
func TestBelowFloor(t *testing.T) {
	missing := errors.New("the kernel has no BPF ring buffer (Linux 5.8+)")
	for release, old := range map[string]bool{
		"5.4.0-150-generic":     true,
		"4.18.0-553.el8.x86_64": true,
		"5.9.16":                true,
		"5.10.0-32-cloud-amd64": false,
		"6.1.0-50-cloud-amd64":  false,
		"not a release":         false,
	} {
		got := belowFloor(missing, release).Error()
		named := strings.Contains(got, "this is Linux "+release+", and tcptrace needs Linux "+minKernel+" or later")
		if named != old || !strings.HasPrefix(got, missing.Error()) || strings.Contains(got, "\n") {
			t.Errorf("%s: %q", release, got)
		}
	}
	if belowFloor(nil, "4.9.0") != nil {
		t.Error("no error became one")
	}
}
