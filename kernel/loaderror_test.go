//go:build linux

package kernel

import (
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
