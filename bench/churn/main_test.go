package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServerDiesWithChurn: churn's server child goes when churn is ended
// by a signal, not left behind.
func TestServerDiesWithChurn(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "churn")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v: %s", err, out)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		churn := exec.Command(bin, "-n", "100000000", "-timeout", "30s", "-workers", "1")
		if err := churn.Start(); err != nil {
			t.Fatal(err)
		}
		var server int
		for deadline := time.Now().Add(10 * time.Second); server == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			server = childOf(churn.Process.Pid)
		}
		if server == 0 {
			t.Fatal("churn started no server")
		}
		churn.Process.Signal(sig)
		churn.Wait()
		gone := false
		for deadline := time.Now().Add(5 * time.Second); !gone && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			gone = syscall.Kill(server, 0) != nil || zombie(server)
		}
		if !gone {
			syscall.Kill(server, syscall.SIGKILL)
			t.Errorf("after %v to churn, its server %d still runs", sig, server)
		}
	}
}

// childOf is a child process of pid, 0 when none.
func childOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	child, _ := strconv.Atoi(f[0])
	return child
}

// zombie reports whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}
