// Package testenv runs the other processes tcptrace's tests need: testpeer
// servers and clients, and ss to compare with.
package testenv

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PrebuiltEnv names a folder of binaries built beforehand (by vmtest, for a
// guest kernel that has no Go toolchain or C compiler): Build and BuildC take
// them from there.
const PrebuiltEnv = "TCPTRACE_TEST_BINARIES"

// prebuilt returns the binary named name in the PrebuiltEnv folder, if set.
func prebuilt(name string) (string, bool, error) {
	dir := os.Getenv(PrebuiltEnv)
	if dir == "" {
		return "", false, nil
	}
	path := filepath.Join(dir, name)
	if _, err := os.Stat(path); err != nil {
		return "", true, fmt.Errorf("%s=%s: %w", PrebuiltEnv, dir, err)
	}
	return path, true, nil
}

// Build compiles the package at path (relative to the repository root) into
// dir and returns the binary's path.
func Build(dir, pkg string) (string, error) {
	if path, ok, err := prebuilt(filepath.Base(pkg)); ok {
		return path, err
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "./"+pkg)
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	return out, nil
}

// PeerBinary is the testpeer binary; a TestMain sets it with Build.
var PeerBinary string

// BuildC compiles a C test program with frame pointers and debug information.
func BuildC(dir, src string) (string, error) {
	out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".c"))
	if path, ok, err := prebuilt(filepath.Base(out)); ok {
		return path, err
	}
	cmd := exec.Command("cc", "-g", "-O0", "-fno-omit-frame-pointer", "-o", out, src)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("compile %s: %w", src, err)
	}
	return out, nil
}

// RequireBPF skips a test that needs root, unless CI demands that it run.
func RequireBPF(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("TCPTRACE_REQUIRE_BPF") == "1" {
		t.Fatal("BPF tests must run as root here (TCPTRACE_REQUIRE_BPF=1)")
	}
	t.Skip("needs root to load BPF programs")
}

type Peer struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	PID   int
	addr  string
}

// ListenAddr is the address a server peer listens on.
func (p *Peer) ListenAddr() string {
	p.t.Helper()
	if p.addr == "" {
		p.addr = p.Expect("listening")[0]
	}
	return p.addr
}

func StartPeer(t *testing.T, mode, addr string, args ...string) *Peer {
	t.Helper()
	return StartProcess(t, PeerBinary, append([]string{mode, addr}, args...)...)
}

// Pair starts a testpeer server on addr and a client connected to it, and
// returns both with the two ends of their connection.
func Pair(t *testing.T, addr string) (server, client *Peer, srv, cli Conn) {
	t.Helper()
	server = StartPeer(t, "server", addr)
	client = StartPeer(t, "client", server.ListenAddr())
	cli = client.Conn("connected")
	srv = server.Conn("accepted")
	return server, client, srv, cli
}

// LeakyServer starts a server and n clients that connect and close: the
// server reads EOF and, unless told to close, leaves the sockets in CLOSE_WAIT.
func LeakyServer(t *testing.T, n int) (*Peer, []Conn) {
	t.Helper()
	server := StartPeer(t, "server", "127.0.0.1:0")
	var conns []Conn
	for i := 0; i < n; i++ {
		client := StartPeer(t, "client", server.ListenAddr())
		client.Expect("connected")
		conns = append(conns, server.Conn("accepted"))
		client.Send("close")
		server.Expect("eof")
	}
	return server, conns
}

// StartProcess starts a program that speaks testpeer's line protocol.
func StartProcess(t *testing.T, path string, args ...string) *Peer {
	t.Helper()
	cmd := exec.Command(path, args...)
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
	p := &Peer{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 100), PID: cmd.Process.Pid}
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

// Expect waits for the next line starting with word and returns its fields.
func (p *Peer) Expect(word string) []string {
	p.t.Helper()
	return p.ExpectWithin(word, 10*time.Second)
}

// ExpectWithin is Expect for a line that takes longer than most to come.
func (p *Peer) ExpectWithin(word string, wait time.Duration) []string {
	p.t.Helper()
	timeout := time.After(wait)
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
			p.t.Fatalf("testpeer %d: no %q line in %v", p.PID, word, wait)
		}
	}
}

func (p *Peer) Send(cmd string) {
	p.t.Helper()
	if _, err := fmt.Fprintln(p.stdin, cmd); err != nil {
		p.t.Fatal(err)
	}
}

// Conn is one end of a connection as a testpeer reported it.
type Conn struct {
	PID           int
	FD            int32
	Local, Remote netip.AddrPort
}

func (p *Peer) Conn(word string) Conn {
	f := p.Expect(word)
	fd, _ := strconv.Atoi(f[0])
	return Conn{PID: p.PID, FD: int32(fd), Local: netip.MustParseAddrPort(f[1]), Remote: netip.MustParseAddrPort(f[2])}
}

// SSSocket is one line of `ss -tanpe`.
type SSSocket struct {
	State         string
	Local, Remote string
	// PID and FD are the first holder ss lists (0 and -1 when none); Holders, all.
	PID     int
	FD      int32
	Holders []SSHolder
	Inode   uint64
}

// SSHolder is a process and fd that ss lists for a socket.
type SSHolder struct {
	PID int
	FD  int32
}

var (
	ssUsers = regexp.MustCompile(`pid=(\d+),fd=(\d+)`)
	ssInode = regexp.MustCompile(`ino:(\d+)`)
)

// SSList runs `ss -tanpe` and returns every TCP socket it lists.
func SSList(t *testing.T) []SSSocket {
	t.Helper()
	return SSListIn(t, "")
}

// SSListIn runs `ss -tanpe` inside the network namespace named netns (made
// by `ip netns add`; "" for the test's own).
func SSListIn(t *testing.T, netns string) []SSSocket {
	t.Helper()
	cmd := exec.Command("ss", "-tanpeH")
	if netns != "" {
		cmd = exec.Command("ip", "netns", "exec", netns, "ss", "-tanpeH")
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	var list []SSSocket
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		s := SSSocket{State: f[0], Local: f[3], Remote: f[4], FD: -1}
		for _, m := range ssUsers.FindAllStringSubmatch(line, -1) {
			pid, _ := strconv.Atoi(m[1])
			fd, _ := strconv.Atoi(m[2])
			s.Holders = append(s.Holders, SSHolder{PID: pid, FD: int32(fd)})
		}
		if len(s.Holders) > 0 {
			s.PID, s.FD = s.Holders[0].PID, s.Holders[0].FD
		}
		if m := ssInode.FindStringSubmatch(line); m != nil {
			s.Inode, _ = strconv.ParseUint(m[1], 10, 64)
		}
		list = append(list, s)
	}
	return list
}

// SSFind returns the socket ss lists with these addresses.
func SSFind(t *testing.T, local, remote netip.AddrPort) (SSSocket, bool) {
	t.Helper()
	for _, s := range SSList(t) {
		if s.Local == SSAddr(local) && s.Remote == SSAddr(remote) {
			return s, true
		}
	}
	return SSSocket{}, false
}

// SSAddr writes an address as ss does.
func SSAddr(ap netip.AddrPort) string {
	if ap.Addr().Is4() {
		return ap.String()
	}
	return "[" + ap.Addr().String() + "]:" + strconv.Itoa(int(ap.Port()))
}
