//go:build linux

package tracer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The BPF tests drive real connections between real processes: testpeer
// (internal/testpeer) plays the server and the client.

var peerBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tcptrace-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	peerBinary = filepath.Join(dir, "testpeer")
	build := exec.Command("go", "build", "-o", peerBinary, "../internal/testpeer")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build testpeer:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireBPF skips a test that needs root, unless CI demands that it run.
func requireBPF(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("TCPTRACE_REQUIRE_BPF") == "1" {
		t.Fatal("BPF tests must run as root here (TCPTRACE_REQUIRE_BPF=1)")
	}
	t.Skip("needs root to load BPF programs")
}

type peer struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	PID   int
	addr  string
}

// listenAddr is the address a server peer listens on.
func (p *peer) listenAddr() string {
	p.t.Helper()
	if p.addr == "" {
		p.addr = p.expect("listening")[0]
	}
	return p.addr
}

func startPeer(t *testing.T, mode, addr string) *peer {
	t.Helper()
	cmd := exec.Command(peerBinary, mode, addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 100), PID: cmd.Process.Pid}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return p
}

// expect waits for the next line starting with word and returns its fields.
func (p *peer) expect(word string) []string {
	p.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("testpeer %d exited while waiting for %q", p.PID, word)
			}
			if f := strings.Fields(line); len(f) > 0 && f[0] == word {
				return f[1:]
			}
		case <-timeout:
			p.t.Fatalf("testpeer %d: no %q line in 10s", p.PID, word)
		}
	}
}

func (p *peer) send(cmd string) {
	p.t.Helper()
	if _, err := fmt.Fprintln(p.stdin, cmd); err != nil {
		p.t.Fatal(err)
	}
}

// conn is one end of a connection as a testpeer reported it.
type conn struct {
	pid           int
	fd            int32
	local, remote netip.AddrPort
}

func (p *peer) conn(word string) conn {
	f := p.expect(word)
	fd, _ := strconv.Atoi(f[0])
	return conn{pid: p.PID, fd: int32(fd), local: netip.MustParseAddrPort(f[1]), remote: netip.MustParseAddrPort(f[2])}
}

// recorder runs a tracer and keeps every event it emits.
type recorder struct {
	t      *testing.T
	tr     *Tracer
	mu     sync.Mutex
	events []Event
	done   chan error
}

func startTracer(t *testing.T, cfg Config) *recorder {
	t.Helper()
	requireBPF(t)
	tr, err := Open(cfg)
	if err != nil {
		t.Fatalf("open tracer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{t: t, tr: tr, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		first := true
		r.done <- tr.Run(ctx, func(ev *Event) {
			r.mu.Lock()
			r.events = append(r.events, *ev)
			r.mu.Unlock()
		}, func() {
			if first {
				first = false
				close(ready)
			}
		})
	}()
	select {
	case <-ready:
	case err := <-r.done:
		t.Fatalf("tracer stopped at start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("tracer run: %v", err)
		}
		tr.Close()
	})
	return r
}

// waitFor waits until an event matches and returns it.
func (r *recorder) waitFor(what string, timeout time.Duration, match func(*Event) bool) Event {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		for i := range r.events {
			if match(&r.events[i]) {
				ev := r.events[i]
				r.mu.Unlock()
				return ev
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			r.dump()
			r.t.Fatalf("no event %s within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *recorder) snapshot() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *recorder) dump() {
	for _, ev := range r.snapshot() {
		r.t.Logf("%s %d %s %s->%s %s->%s owner=%+v running=%+v fd=%d src=%s", ev.Kind, ev.Cookie, ev.Time.Format("15:04:05.000"),
			ev.Local, ev.Remote, ev.Old, ev.New, ev.Owner, ev.Running, ev.FD, ev.Source)
	}
}

// on matches events of the connection end with this local and remote address.
func on(local, remote netip.AddrPort, kind Kind, old, new State) func(*Event) bool {
	return func(ev *Event) bool {
		return ev.Kind == kind && ev.Local == local && ev.Remote == remote && (kind != KindTransition || (ev.Old == old && ev.New == new))
	}
}

// ssSocket is one line of `ss -tanpe`.
type ssSocket struct {
	state         string
	local, remote string
	pid           int
	fd            int32
	inode         uint64
}

var (
	ssUsers = regexp.MustCompile(`pid=(\d+),fd=(\d+)`)
	ssInode = regexp.MustCompile(`ino:(\d+)`)
)

// ssFind runs `ss -tanpe` and returns the socket with these addresses.
func ssFind(t *testing.T, local, remote netip.AddrPort) (ssSocket, bool) {
	t.Helper()
	out, err := exec.Command("ss", "-tanpeH").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[3] != ssAddr(local) || f[4] != ssAddr(remote) {
			continue
		}
		s := ssSocket{state: f[0], local: f[3], remote: f[4], fd: -1}
		if m := ssUsers.FindStringSubmatch(line); m != nil {
			s.pid, _ = strconv.Atoi(m[1])
			fd, _ := strconv.Atoi(m[2])
			s.fd = int32(fd)
		}
		if m := ssInode.FindStringSubmatch(line); m != nil {
			s.inode, _ = strconv.ParseUint(m[1], 10, 64)
		}
		return s, true
	}
	return ssSocket{}, false
}

func ssAddr(ap netip.AddrPort) string {
	if ap.Addr().Is4() {
		return ap.String()
	}
	return "[" + ap.Addr().String() + "]:" + strconv.Itoa(int(ap.Port()))
}
