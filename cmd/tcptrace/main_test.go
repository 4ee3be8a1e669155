package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/internal/testenv"
)

var tcptraceBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tcptrace-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // the not-root test runs the binary as nobody
	for pkg, dst := range map[string]*string{"cmd/tcptrace": &tcptraceBinary, "internal/testpeer": &testenv.PeerBinary} {
		if *dst, err = testenv.Build(dir, pkg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func runTcptrace(t *testing.T, attr *syscall.SysProcAttr, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(tcptraceBinary, args...)
	cmd.SysProcAttr = attr
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// startTcptrace runs tcptrace in the background; the test ends it.
func startTcptrace(t *testing.T, args ...string) (*exec.Cmd, io.Reader, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(tcptraceBinary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, stdout, stderr
}

// TestBadInput: every bad value is one line on stderr and exit status 2, before
// anything is loaded (so it needs no root).
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--port", "70000"}, "invalid port"},
		{[]string{"--lport", "http"}, "invalid port"},
		{[]string{"--pid", "999999999"}, "no process with pid 999999999"},
		{[]string{"--pid", "abc"}, "invalid argument"},
		{[]string{"--state", "FOO"}, "unknown TCP state"},
		{[]string{"--addr", "300.1.1.1"}, "invalid address"},
		{[]string{"--duration", "soon"}, "invalid argument"},
		{[]string{"--duration", "0s"}, "invalid --duration"},
		{[]string{"record", "-o", "x.trace", "--duration", "0s"}, "invalid --duration"},
		{[]string{"record", "-o", "x.trace", "--max-size", "100K"}, "invalid --max-size"},
		{[]string{"record", "-o", "x.trace", "--max-size", "1"}, "invalid --max-size"},
		{[]string{"--color", "pink"}, "invalid --color"},
		{[]string{"--nope"}, "unknown flag"},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"leaks", "--threshold", "soon"}, "invalid argument"},
		{[]string{"leaks", "--threshold", "-1s"}, "invalid --threshold"},
		{[]string{"leaks", "--state", "CLOSE_WAIT"}, "--state does not apply"},
		{[]string{"leaks", "--pid", "999999999"}, "no process with pid 999999999"},
		{[]string{"leaks", "--interval", "1ms"}, "invalid --interval"},
		{[]string{"--netns", "no-such-namespace"}, "invalid --netns"},
		{[]string{"--netns", "/etc/passwd"}, "not a network namespace"},
		{[]string{"--cgroup", "/no/such/cgroup"}, "invalid --cgroup"},
		{[]string{"--container", "xyz"}, "invalid --container"},
		{[]string{"serve", "--metrics-addr", "nowhere"}, "invalid --metrics-addr"},
		{[]string{"serve", "--metrics-addr", "127.0.0.1:99999"}, "invalid --metrics-addr"},
		{[]string{"serve", "--metrics-addr", ""}, "serve needs --metrics-addr"},
		{[]string{"serve", "--metrics-top", "0"}, "invalid --metrics-top"},
		{[]string{"serve", "--state", "LISTEN"}, "--state does not apply"},
		{[]string{"--metrics-addr", "1.2.3:80"}, "invalid --metrics-addr"},
		{[]string{"leaks", "--metrics-addr", "host:9669"}, "invalid --metrics-addr"},
		{[]string{"record", "-o", "/nonexistent/x.trace", "--metrics-addr", "127.0.0.1:"}, "invalid --metrics-addr"},
	} {
		_, stderr, code := runTcptrace(t, nil, tc.args...)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "tcptrace: ") || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line with %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestHelp(t *testing.T) {
	stdout, _, code := runTcptrace(t, nil, "--help")
	if code != 0 || !strings.Contains(stdout, "Examples:") || !strings.Contains(stdout, "--pid") {
		t.Errorf("--help: exit %d, output:\n%s", code, stdout)
	}
}

// TestNotRoot: without privileges, one line says what is needed.
func TestNotRoot(t *testing.T) {
	var attr *syscall.SysProcAttr
	if os.Geteuid() == 0 {
		attr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	_, stderr, code := runTcptrace(t, attr, "--duration", "1s")
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "needs root, or the CAP_BPF and CAP_PERFMON capabilities") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// TestBPFCommand runs the real command against a real server and client:
// the JSON stream names the server as owner of its CLOSE_WAIT, and SIGINT
// ends it with the summary.
func TestBPFCommand(t *testing.T) {
	testenv.RequireBPF(t)
	server := testenv.StartPeer(t, "server", "127.0.0.1:0")
	addr := netip.MustParseAddrPort(server.ListenAddr())

	cmd, stdout, stderr := startTcptrace(t, "--json", "--existing", "--port", fmt.Sprint(addr.Port()))
	lines := make(chan map[string]any, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("not JSON: %q", sc.Text())
				continue
			}
			lines <- m
		}
		close(lines)
	}()
	next := func(match func(map[string]any) bool) map[string]any {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m, ok := <-lines:
				if !ok {
					t.Fatalf("tcptrace exited; stderr: %s", stderr.String())
				}
				if match(m) {
					return m
				}
			case <-timeout:
				t.Fatalf("no matching line in 10s; stderr: %s", stderr.String())
			}
		}
	}
	// The listener, existing before tcptrace started, tells that tracing has begun.
	listener := next(func(m map[string]any) bool { return m["type"] == "existing" && m["new"] == "LISTEN" })
	if owner := listener["owner"].(map[string]any); owner["pid"] != float64(server.PID) {
		t.Errorf("listener owner %v, want pid %d", owner, server.PID)
	}

	client := testenv.StartPeer(t, "client", addr.String())
	client.Expect("connected")
	srv := server.Conn("accepted")
	client.Send("close")
	cw := next(func(m map[string]any) bool { return m["new"] == "CLOSE_WAIT" && m["type"] == "transition" })
	owner := cw["owner"].(map[string]any)
	if owner["pid"] != float64(srv.PID) || owner["fd"] != float64(srv.FD) || cw["local"] != srv.Local.String() {
		t.Errorf("CLOSE_WAIT line %v, want owner pid %d fd %d at %s", cw, srv.PID, srv.FD, srv.Local)
	}

	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGINT: %v; stderr: %s", err, stderr.String())
	}
	for _, want := range []string{"ESTABLISHED -> CLOSE_WAIT", "ring-buffer drops", "recursion misses"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestBPFLeaksOnce runs `leaks --once --json` against a server that leaked
// before tcptrace started and one that closes properly: exit status 3, and
// the report names the leaking pid, comm and exactly the fds ss shows.
func TestBPFLeaksOnce(t *testing.T) {
	testenv.RequireBPF(t)
	servers := map[string]*testenv.Peer{}
	for _, name := range []string{"leaky", "good"} {
		servers[name], _ = testenv.LeakyServer(t, 2)
	}
	servers["good"].Send("close")
	servers["good"].Expect("closed")
	time.Sleep(1100 * time.Millisecond)

	port := netip.MustParseAddrPort(servers["leaky"].ListenAddr()).Port()
	goodPort := netip.MustParseAddrPort(servers["good"].ListenAddr()).Port()
	stdout, stderr, code := runTcptrace(t, nil, "leaks", "--once", "--json", "--threshold", "1s", "--lport", fmt.Sprint(port))
	if code != exitLeaks {
		t.Fatalf("exit %d, want %d; stderr: %s", code, exitLeaks, stderr)
	}
	var rep analysis.LeakReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("not one JSON report: %v\n%s", err, stdout)
	}
	var ssFDs []int32
	for _, s := range testenv.SSList(t) {
		if s.State == "CLOSE-WAIT" && s.Local == servers["leaky"].ListenAddr() {
			ssFDs = append(ssFDs, s.FD)
		}
	}
	slices.Sort(ssFDs)
	if len(rep.Processes) != 1 {
		t.Fatalf("report has %d processes, want the leaky server only: %+v", len(rep.Processes), rep.Processes)
	}
	p := rep.Processes[0]
	if int(p.PID) != servers["leaky"].PID || p.Comm != "testpeer" || fmt.Sprint(p.FDs) != fmt.Sprint(ssFDs) || len(ssFDs) != 2 {
		t.Errorf("report pid %d comm %s fds %v; want pid %d testpeer, ss fds %v", p.PID, p.Comm, p.FDs, servers["leaky"].PID, ssFDs)
	}
	// What the kernel lacks is in the report: reset reasons came in 6.10.
	var reasons *btf.Enum
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	lacksReasons := spec.TypeByName("sk_rst_reason", &reasons) != nil
	if named := strings.Contains(strings.Join(rep.Limits, "\n"), "sk_rst_reason"); named != lacksReasons {
		t.Errorf("limits %q: reset reasons named %v, kernel lacks them %v", rep.Limits, named, lacksReasons)
	}

	// The well-behaved server alone: no leak, exit 0.
	_, stderr, code = runTcptrace(t, nil, "leaks", "--once", "--threshold", "1s", "--lport", fmt.Sprint(goodPort))
	if code != 0 {
		t.Errorf("leaks on a server that closes: exit %d; stderr: %s", code, stderr)
	}
}

// TestBPFLeaksLive runs the live `leaks --json` view, then starts a server
// that leaks: a later report names it, with the fds ss shows and the
// function that accepted the connections.
func TestBPFLeaksLive(t *testing.T) {
	testenv.RequireBPF(t)
	cmd, stdout, stderr := startTcptrace(t, "leaks", "--json", "--threshold", "1s", "--interval", "500ms")
	reports := make(chan analysis.LeakReport, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var rep analysis.LeakReport
			if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
				t.Errorf("not a JSON report: %v", err)
				continue
			}
			reports <- rep
		}
		close(reports)
	}()
	<-reports // tracing has started

	server, _ := testenv.LeakyServer(t, 2)
	timeout := time.After(10 * time.Second)
	waiting := "no report named it"
	for {
		select {
		case rep, ok := <-reports:
			if !ok {
				t.Fatalf("tcptrace leaks exited: %s", stderr.String())
			}
			for _, p := range rep.Processes {
				if int(p.PID) != server.PID {
					continue
				}
				var ssFDs []int32
				for _, s := range testenv.SSList(t) {
					if s.State == "CLOSE-WAIT" && s.Local == server.ListenAddr() {
						ssFDs = append(ssFDs, s.FD)
					}
				}
				slices.Sort(ssFDs)
				if len(p.FDs) < len(ssFDs) {
					// The clients close apart (far apart in a slow guest):
					// the youngest may not be past the threshold yet.
					waiting = fmt.Sprintf("the last report named fds %v; ss lists %v", p.FDs, ssFDs)
					continue
				}
				if fmt.Sprint(p.FDs) != fmt.Sprint(ssFDs) || p.AtLeast || len(p.Origins) != 1 || !strings.HasPrefix(p.Origins[0].Where, "main.(*peer).listen.func1") {
					t.Errorf("report %+v; ss fds %v", p, ssFDs)
				}
				cmd.Process.Signal(os.Interrupt)
				if err := cmd.Wait(); err != nil {
					t.Errorf("after SIGINT: %v: %s", err, stderr.String())
				}
				return
			}
		case <-timeout:
			t.Fatalf("no report named both leaks of pid %d within 10s: %s", server.PID, waiting)
		}
	}
}
