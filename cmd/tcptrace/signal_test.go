package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/internal/testenv"
)

// TestBPFStopAtAnyMoment: SIGINT or SIGTERM at any moment, while the
// programs load, while the socket table is seeded or while tracing, ends
// every live mode within a second, with exit status 0 and its summary; as
// it does for a background job of a script, which starts with SIGINT
// ignored. A recording stopped once tracing began is a whole trace.
func TestBPFStopAtAnyMoment(t *testing.T) {
	testenv.RequireBPF(t)
	modes := []struct {
		name    string
		args    []string
		summary string // on its output once tracing began
	}{
		{"stream", nil, "transitions shown"},
		{"record", []string{"record", "-o", "TRACE"}, "recorded "},
		{"leaks", []string{"leaks", "--interval", "100ms"}, "CLOSE_WAIT"},
		{"serve", []string{"serve", "--metrics-addr", "127.0.0.1:0"}, "served metrics for "},
	}
	// The programs take about a second to load here: the first delays stop
	// the load, the others the seeding and the live run. (In its first
	// 20 ms or so here, more on a loaded machine, the Go runtime and the
	// packages' initialization run: a signal then takes its default action.)
	delays := []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 600 * time.Millisecond, 1200 * time.Millisecond, 2500 * time.Millisecond}
	for _, m := range modes {
		for i, delay := range delays {
			// SIGINT as a script sends it to its background job, which
			// starts with SIGINT ignored until tcptrace takes it: not at
			// once, when the runtime may not have started yet.
			sig, how := syscall.SIGTERM, "SIGTERM"
			if i%2 == 1 {
				sig, how = syscall.SIGINT, "SIGINT from a script"
			}
			t.Run(fmt.Sprintf("%s/%s/after %v", m.name, how, delay), func(t *testing.T) {
				t.Parallel()
				trace := filepath.Join(t.TempDir(), "stop.trace")
				args := make([]string, len(m.args))
				for i, a := range m.args {
					args[i] = strings.ReplaceAll(a, "TRACE", trace)
				}
				var cmd *exec.Cmd
				if sig == syscall.SIGINT {
					// What a script's background job gets: SIGINT ignored.
					cmd = exec.Command("sh", append([]string{"-c", `trap "" INT; exec "$0" "$@"`, tcptraceBinary}, args...)...)
				} else {
					cmd = exec.Command(tcptraceBinary, args...)
				}
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cmd.Process.Kill() })
				if sig == syscall.SIGINT {
					waitForExec(t, cmd.Process.Pid)
				}
				time.Sleep(delay)
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				sent := time.Now()
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()
				var err error
				select {
				case err = <-done:
				case <-time.After(5 * time.Second):
					t.Fatalf("still running 5s after %s; stderr:\n%s", how, stderr.String())
				}
				took := time.Since(sent)
				var exit *exec.ExitError
				if errors.As(err, &exit) {
					t.Fatalf("exit status %d after %s; stderr:\n%s", exit.ExitCode(), how, stderr.String())
				}
				out := stdout.String() + stderr.String()
				began := !strings.Contains(out, "stopped before tracing began")
				if began && !strings.Contains(out, m.summary) {
					t.Errorf("no summary (%q) after %s; stderr:\n%s", m.summary, how, out)
				}
				// A second and some slack for a loaded machine: detaching the
				// programs waits out RCU grace periods.
				if took > 1500*time.Millisecond {
					t.Errorf("ended %v after %s", took.Round(time.Millisecond), how)
				}
				if m.name == "record" && began {
					if _, stderr, code := runOffline(t, "report", trace); code != 0 || stderr != "" {
						t.Errorf("report of the stopped recording: exit %d, %s", code, stderr)
					}
				}
				t.Logf("ended %v after %s (tracing began: %v)", took.Round(time.Millisecond), how, began)
			})
		}
	}
}

// waitForExec waits until the shell at pid has become tcptrace.
func waitForExec(t *testing.T, pid int) {
	t.Helper()
	want := filepath.Base(tcptraceBinary)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && filepath.Base(exe) == want {
			return
		}
	}
	t.Fatalf("process %d did not exec tcptrace", pid)
}
