package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/internal/testenv"
)

// soakWarmup is how long the soak lets memory settle: TIME_WAIT lasts a
// minute, so the connections tracked level off after one.
const soakWarmup = time.Minute

// TestBPFSoak: serve, leaks and record run side by side while connections
// churn, for TCPTRACE_SOAK (make soak sets it; 2m in CI, longer by hand).
// Each one's resident memory, sampled every second, never goes more than
// 10% above its peak of the first minute's second half (a garbage
// collector's heap swings; a leak keeps climbing), and each ends cleanly at
// SIGINT.
func TestBPFSoak(t *testing.T) {
	if os.Getenv("TCPTRACE_SOAK") == "" {
		t.Skip("the soak runs with TCPTRACE_SOAK set to its length: make soak")
	}
	length, err := time.ParseDuration(os.Getenv("TCPTRACE_SOAK"))
	if err != nil || length < 2*soakWarmup {
		t.Fatalf("TCPTRACE_SOAK=%q: want a duration of at least %v", os.Getenv("TCPTRACE_SOAK"), 2*soakWarmup)
	}
	testenv.RequireBPF(t)
	dir := t.TempDir()
	churn, err := testenv.Build(dir, "bench/churn")
	if err != nil {
		t.Fatal(err)
	}
	modes := []struct {
		name string
		args []string
	}{
		{"serve", []string{"serve", "--metrics-addr", "127.0.0.1:0"}},
		{"leaks", []string{"leaks", "--interval", "5s"}},
		{"record", []string{"record", "-o", filepath.Join(dir, "soak.trace"), "--max-size", "16M", "--max-files", "2"}},
	}
	cmds := make([]*exec.Cmd, len(modes))
	stderrs := make([]*bytes.Buffer, len(modes))
	for i, m := range modes {
		cmds[i] = exec.Command(tcptraceBinary, m.args...)
		stderrs[i] = &bytes.Buffer{}
		cmds[i].Stderr = stderrs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmds[i].Process.Kill(); cmds[i].Wait() })
	}
	time.Sleep(3 * time.Second) // loaded and seeded
	// Both shapes at once: clients that close first (their TIME_WAIT) and
	// servers that do (the server's), each bounded by the soak's length.
	var loads []*exec.Cmd
	for _, shape := range []string{"client-close", "server-close"} {
		c := exec.Command(churn, "-n", "100000000", "-workers", "1", "-shape", shape, "-timeout", length.String())
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		loads = append(loads, c)
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	samples := make([][]int64, len(modes)) // KiB, one a second
	for start := time.Now(); time.Since(start) < length; time.Sleep(time.Second) {
		for i, c := range cmds {
			kib, err := residentKiB(c.Process.Pid)
			if err != nil {
				t.Fatalf("%s: %v; stderr:\n%s", modes[i].name, err, stderrs[i])
			}
			samples[i] = append(samples[i], kib)
		}
	}
	for _, c := range loads {
		c.Wait()
	}
	for i, c := range cmds {
		c.Process.Signal(syscall.SIGINT)
		if err := c.Wait(); err != nil {
			t.Errorf("%s: %v; stderr:\n%s", modes[i].name, err, stderrs[i])
		}
	}
	warm := int(soakWarmup / time.Second)
	for i, s := range samples {
		base := slices.Max(s[warm/2 : warm])
		low, high := slices.Min(s[warm:]), slices.Max(s[warm:])
		t.Logf("%s: RSS %d MiB at 10s, peak %d MiB in the first minute's second half, %d-%d MiB after, %d MiB at the end (%d samples); %s",
			modes[i].name, s[10]>>10, base>>10, low>>10, high>>10, s[len(s)-1]>>10, len(s), lastLine(stderrs[i]))
		if float64(high) > 1.1*float64(base) {
			t.Errorf("%s: RSS grew after %v: up to %d KiB against a peak of %d KiB before", modes[i].name, soakWarmup, high, base)
		}
	}
}

// residentKiB is a process's resident set size (VmRSS), in KiB.
func residentKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// lastLine is the last line of a mode's standard error: its loss summary.
func lastLine(b *bytes.Buffer) string {
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	return lines[len(lines)-1]
}
