package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/host"
	"github.com/tcptrace/tcptrace/internal/testenv"
)

// TestBPFNetNSAndContainer runs a server and a client inside a network
// namespace the test makes, the server in a cgroup named the way Docker
// names a container's, while another pair talks in the host's namespace.
// `--netns` must show the namespace's connections and nothing else (its
// listener found by walking the namespace's socket table), and
// `--container` the server's sockets (not its client's, in the namespace
// too), with the cgroup and container id. A
// tracer with neither follows the namespace's client into TIME_WAIT: it
// walks the namespaces its sockets live in.
func TestBPFNetNSAndContainer(t *testing.T) {
	testenv.RequireBPF(t)
	ns, nsIno := makeNetNS(t)
	ctr, cg, cgID := makeContainerCgroup(t)

	// Into the cgroup first: `ip netns exec` mounts another /sys.
	server := testenv.StartProcess(t, "sh", "-c", fmt.Sprintf("echo $$ > %s/cgroup.procs && exec ip netns exec %s %s server 127.0.0.1:0",
		cg, ns, testenv.PeerBinary))
	_, hostClient, _, _ := testenv.Pair(t, "127.0.0.1:0")

	// A listener on the same port in the host's namespace tells when the
	// host-wide tracer has started.
	port := netip.MustParseAddrPort(server.ListenAddr()).Port()
	testenv.StartPeer(t, "server", fmt.Sprintf("127.0.0.1:%d", port))

	byNetNS := collectJSON(t, "--json", "--existing", "--netns", ns)
	byContainer := collectJSON(t, "--json", "--existing", "--netns", ns, "--container", ctr[:12])
	hostWide := collectJSON(t, "--json", "--existing", "--port", fmt.Sprint(port))
	// The server's listener was there before tcptrace: only a walk inside
	// the namespace finds it. Each tracer has started once it shows one.
	isListener := func(m map[string]any) bool { return m["type"] == "existing" && m["new"] == "LISTEN" }
	for _, c := range []*jsonLines{byNetNS, byContainer, hostWide} {
		c.next(t, isListener)
	}

	client := testenv.StartProcess(t, "ip", "netns", "exec", ns, testenv.PeerBinary, "client", server.ListenAddr())
	cli := client.Conn("connected")
	srv := server.Conn("accepted")
	client.Send("close")
	hostClient.Send("close")
	checkContainerCloseWait(t, []*jsonLines{byNetNS, byContainer}, srv, nsIno, cgID, ctr)
	server.Send("close")
	server.Expect("closed")
	checkNetNSTimeWait(t, []*jsonLines{byNetNS, hostWide}, cli, nsIno)
	hostWide.stop(t)
	time.Sleep(time.Second) // what the host pair did has reached both tracers
	checkOnlyContainer(t, byNetNS, byContainer, nsIno, ctr)
}

// makeNetNS makes a network namespace with lo up, deleted at the end of the
// test, and returns its name and inode.
func makeNetNS(t *testing.T) (ns string, nsIno float64) {
	t.Helper()
	ns = fmt.Sprintf("tcptrace-test-%d", os.Getpid())
	mustRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	mustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+ns, &st); err != nil {
		t.Fatal(err)
	}
	return ns, float64(st.Ino)
}

// makeContainerCgroup makes a cgroup named the way Docker names a
// container's, removed at the end of the test, and returns the container
// id, the cgroup's path and its id.
func makeContainerCgroup(t *testing.T) (ctr, cg string, cgID float64) {
	t.Helper()
	root, err := host.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	idBytes := make([]byte, 32)
	rand.Read(idBytes)
	ctr = hex.EncodeToString(idBytes)
	cg = filepath.Join(root, "docker-"+ctr+".scope")
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(cg) }) // after the peers are gone: cleanups run last first
	var st syscall.Stat_t
	if err := syscall.Stat(cg, &st); err != nil {
		t.Fatal(err)
	}
	return ctr, cg, float64(st.Ino)
}

// checkContainerCloseWait checks that each tracer shows the server's end
// going into CLOSE_WAIT with its owner, namespace, cgroup and container.
func checkContainerCloseWait(t *testing.T, tracers []*jsonLines, srv testenv.Conn, nsIno, cgID float64, ctr string) {
	isCloseWait := func(m map[string]any) bool { return m["new"] == "CLOSE_WAIT" && m["type"] == "transition" }
	for _, c := range tracers {
		cw := c.next(t, isCloseWait)
		owner := cw["owner"].(map[string]any)
		if owner["pid"] != float64(srv.PID) || owner["fd"] != float64(srv.FD) || cw["netns"] != nsIno ||
			owner["cgroup"] != cgID || owner["container"] != ctr {
			t.Errorf("CLOSE_WAIT line %v: want owner pid %d fd %d, netns %v, cgroup %v, container %s", cw, srv.PID, srv.FD, nsIno, cgID, ctr)
		}
	}
}

// checkNetNSTimeWait checks that each tracer follows the namespace's client
// from FIN_WAIT2 into TIME_WAIT.
func checkNetNSTimeWait(t *testing.T, tracers []*jsonLines, cli testenv.Conn, nsIno float64) {
	for _, c := range tracers {
		tw := c.next(t, func(m map[string]any) bool { return m["new"] == "TIME_WAIT" && m["local"] == cli.Local.String() })
		if tw["old"] != "FIN_WAIT2" || tw["netns"] != nsIno {
			t.Errorf("TIME_WAIT line %v: want from FIN_WAIT2 in netns %v", tw, nsIno)
		}
	}
}

// checkOnlyContainer stops the --netns and --container tracers and checks
// that they showed something, and nothing from outside the namespace or,
// for --container, the container.
func checkOnlyContainer(t *testing.T, byNetNS, byContainer *jsonLines, nsIno float64, ctr string) {
	for name, c := range map[string]*jsonLines{"--netns": byNetNS, "--container": byContainer} {
		lines := c.stop(t)
		for _, m := range lines {
			owner := m["owner"].(map[string]any)
			if m["netns"] != nsIno || (name == "--container" && owner["container"] != ctr) {
				t.Errorf("%s showed %v", name, m)
			}
		}
		if len(lines) == 0 {
			t.Errorf("%s showed nothing", name)
		}
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// jsonLines is a tcptrace --json running in the background.
type jsonLines struct {
	cmd    *exec.Cmd
	stderr fmt.Stringer
	lines  chan map[string]any
	seen   []map[string]any
}

func collectJSON(t *testing.T, args ...string) *jsonLines {
	t.Helper()
	cmd, stdout, stderr := startTcptrace(t, args...)
	j := &jsonLines{cmd: cmd, stderr: stderr, lines: make(chan map[string]any, 1000)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Errorf("not JSON: %q", sc.Text())
				continue
			}
			j.lines <- m
		}
		close(j.lines)
	}()
	return j
}

// next waits up to 10 s for a line that matches.
func (j *jsonLines) next(t *testing.T, match func(map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-j.lines:
			if !ok {
				t.Fatalf("tcptrace exited; stderr: %s", j.stderr)
			}
			j.seen = append(j.seen, m)
			if match(m) {
				return m
			}
		case <-timeout:
			t.Fatalf("no matching line in 10s; stderr: %s", j.stderr)
		}
	}
}

// stop ends tcptrace and returns every line it printed.
func (j *jsonLines) stop(t *testing.T) []map[string]any {
	t.Helper()
	j.cmd.Process.Signal(os.Interrupt)
	for m := range j.lines {
		j.seen = append(j.seen, m)
	}
	if err := j.cmd.Wait(); err != nil {
		t.Errorf("after SIGINT: %v; stderr: %s", err, j.stderr)
	}
	return j.seen
}

// TestBPFLeakInANamespace: a CLOSE_WAIT leak inside a network namespace and
// a container cgroup the test makes, there before tcptrace starts, shows in
// `leaks` and in the metrics with no flag given, with the fds ss shows
// inside the namespace; --container and --cgroup narrow leaks to it.
func TestBPFLeakInANamespace(t *testing.T) {
	testenv.RequireBPF(t)
	ns, nsIno := makeNetNS(t)
	ctr, cg, _ := makeContainerCgroup(t)
	// iproute2's ip by its path: busybox's sh runs its own ip applet first.
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	server := testenv.StartProcess(t, "sh", "-c", fmt.Sprintf("echo $$ > %s/cgroup.procs && exec %s netns exec %s %s server 127.0.0.1:0",
		cg, ip, ns, testenv.PeerBinary))
	client := testenv.StartProcess(t, "ip", "netns", "exec", ns, testenv.PeerBinary, "client", server.ListenAddr())
	client.Expect("connected")
	srv := server.Conn("accepted")
	client.Send("close")
	server.Expect("eof")
	var ssFDs []int32
	for _, s := range testenv.SSListIn(t, ns) {
		if s.State == "CLOSE-WAIT" && s.Local == server.ListenAddr() {
			ssFDs = append(ssFDs, s.FD)
		}
	}
	if fmt.Sprint(ssFDs) != fmt.Sprint([]int32{srv.FD}) {
		t.Fatalf("ss in the namespace lists CLOSE-WAIT fds %v, want [%d]", ssFDs, srv.FD)
	}
	time.Sleep(1100 * time.Millisecond)

	stdout, stderr, code := runTcptrace(t, nil, "leaks", "--once", "--json", "--threshold", "1s")
	if code != exitLeaks {
		t.Fatalf("leaks: exit %d, want %d; stderr: %s", code, exitLeaks, stderr)
	}
	var rep analysis.LeakReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("not one JSON report: %v\n%s", err, stdout)
	}
	found := false
	for _, p := range rep.Processes {
		if int(p.PID) == srv.PID {
			found = true
			if fmt.Sprint(p.FDs) != fmt.Sprint(ssFDs) || len(p.Sockets) != 1 || float64(p.Sockets[0].NetNS) != nsIno {
				t.Errorf("leaks: pid %d fds %v sockets %+v; want fds %v in netns %v", p.PID, p.FDs, p.Sockets, ssFDs, nsIno)
			}
		}
	}
	if !found {
		t.Errorf("leaks names no leak of pid %d, in the namespace: %+v", srv.PID, rep.Processes)
	}
	other := "000000000000" // a container id that ctr does not start with
	if strings.HasPrefix(ctr, other) {
		other = "111111111111"
	}
	for _, narrow := range []struct {
		args []string
		want bool
	}{{[]string{"--container", ctr[:12]}, true}, {[]string{"--cgroup", cg}, true}, {[]string{"--container", other}, false}} {
		if got := leaksOf(t, narrow.args...)[srv.PID]; got != narrow.want {
			t.Errorf("leaks %v: names the container's leak %v, want %v", narrow.args, got, narrow.want)
		}
	}

	addr := freeAddr(t)
	startTcptrace(t, "serve", "--metrics-addr", addr)
	url := "http://" + addr + "/metrics"
	// Started (a slow guest takes seconds to load the programs).
	waitMetrics(t, url, "a first snapshot", func(m families) bool { return m["tcptrace_sockets"] != nil })
	pid := []string{"pid", fmt.Sprint(srv.PID), "comm", "testpeer"}
	waitMetrics(t, url, "the namespace's leak", func(m families) bool {
		v, ok := m.value("tcptrace_close_wait_sockets", pid...)
		return ok && v == 1
	})
}

// leaksOf runs `leaks --once --json` with these flags and returns the pids it names.
func leaksOf(t *testing.T, args ...string) map[int]bool {
	t.Helper()
	stdout, stderr, code := runTcptrace(t, nil, append([]string{"leaks", "--once", "--json", "--threshold", "1s"}, args...)...)
	if code != exitLeaks && code != 0 {
		t.Fatalf("leaks %v: exit %d; stderr: %s", args, code, stderr)
	}
	var rep analysis.LeakReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("leaks %v: not one JSON report: %v\n%s", args, err, stdout)
	}
	pids := map[int]bool{}
	for _, p := range rep.Processes {
		pids[int(p.PID)] = true
	}
	return pids
}
