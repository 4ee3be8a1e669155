//go:build linux

package tracer

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/internal/testenv"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// TestBPFOwnersFollowTheSocket: servers that hand their connections on
// (testdata/holders.c) leak one each; the CLOSE_WAIT line and every holder
// the timeline keeps must be the processes and fds ss lists at that moment.
func TestBPFOwnersFollowTheSocket(t *testing.T) {
	r := startTracer(t, Config{})
	for _, mode := range []string{"fork", "pass", "dup", "exec"} {
		t.Run(mode, func(t *testing.T) {
			server := testenv.StartProcess(t, cHolders, mode)
			keeper := leakThrough(t, r, server)
			if (keeper.PID == server.PID) != (mode == "dup") {
				t.Errorf("pid %d keeps the connection; the server is %d", keeper.PID, server.PID)
			}
		})
	}
}

// leakThrough connects a client to server, waits for the server to say who
// keeps the connection ("kept PID FD LOCAL REMOTE"), closes the client, and
// checks the server's CLOSE_WAIT line and holders against ss.
func leakThrough(t *testing.T, r *recorder, server *testenv.Peer) testenv.Conn {
	t.Helper()
	client := testenv.StartPeer(t, "client", server.ListenAddr())
	client.Expect("connected")
	f := server.Expect("kept")
	keeper := testenv.Conn{PID: mustAtoi(f[0]), FD: int32(mustAtoi(f[1])),
		Local: netip.MustParseAddrPort(f[2]), Remote: netip.MustParseAddrPort(f[3])}
	client.Send("close")
	line := r.waitFor("the server's CLOSE_WAIT", 5*time.Second,
		on(keeper.Local, keeper.Remote, tcp.KindTransition, tcp.StateEstablished, tcp.StateCloseWait))
	checkHoldersAgainstSS(t, r, keeper, line)
	return keeper
}

// checkHoldersAgainstSS compares the line's owner and the timeline's
// holders of the connection with what ss lists for it.
func checkHoldersAgainstSS(t *testing.T, r *recorder, keeper testenv.Conn, line tcp.Event) {
	t.Helper()
	ss, ok := testenv.SSFind(t, keeper.Local, keeper.Remote)
	if !ok {
		t.Fatalf("ss does not list %v -> %v", keeper.Local, keeper.Remote)
	}
	var want []string
	for _, h := range ss.Holders {
		want = append(want, fmt.Sprintf("%d/%d", h.PID, h.FD))
	}
	if !slices.Equal(want, []string{fmt.Sprintf("%d/%d", keeper.PID, keeper.FD)}) {
		t.Errorf("ss holders %v, but the server says %d/%d keeps it", want, keeper.PID, keeper.FD)
	}
	if got := fmt.Sprintf("%d/%d", line.Owner.PID, line.Owner.FD); !slices.Contains(want, got) || len(line.Sharers) != len(want)-1 {
		t.Errorf("CLOSE_WAIT line names %s +%d, ss lists %v", got, len(line.Sharers), want)
	}
	var got []string
	r.inRun(func() {
		r.tr.Timeline().Holders(line.Cookie, func(o tcp.Owner) { got = append(got, fmt.Sprintf("%d/%d", o.PID, o.FD)) })
	})
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("timeline holders %v, ss %v", got, want)
	}
	// The leak report names the same process, with that fd (any age counts).
	var named []string
	for _, p := range r.report(time.Nanosecond).Processes {
		for _, s := range p.Sockets {
			if s.Local.AddrPort == keeper.Local && s.Remote.AddrPort == keeper.Remote {
				named = append(named, fmt.Sprint(p.PID))
				if !slices.Contains(p.FDs, keeper.FD) {
					t.Errorf("leak report: pid %d fds %v, want fd %d among them", p.PID, p.FDs, keeper.FD)
				}
			}
		}
	}
	if !slices.Equal(named, []string{fmt.Sprint(keeper.PID)}) {
		t.Errorf("leak report names %v for the connection, want %d", named, keeper.PID)
	}
}

// TestBPFDaemonOwners: a server that listens, then daemonizes (two forks,
// the first two processes exit) into a master and two workers, all after
// tracing started. Every line about its connections must name a live
// process of the daemon, never the exited ones.
func TestBPFDaemonOwners(t *testing.T) {
	r := startTracer(t, Config{})
	server := testenv.StartProcess(t, cHolders, "daemon")
	addr := netip.MustParseAddrPort(server.ListenAddr())
	pgid := mustAtoi(server.Expect("daemon")[0])
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
	for range 3 {
		leakThrough(t, r, server)
	}
	// The daemon's connections: from the first line (LISTEN -> SYN_RECV) on,
	// after the first two processes exited.
	checked := 0
	for _, ev := range r.snapshot() {
		if ev.Local.Port() != addr.Port() || ev.Remote.Port() == 0 {
			continue
		}
		checked++
		if id, err := syscall.Getpgid(int(ev.Owner.PID)); !ev.Owner.Known() || err != nil || id != pgid {
			t.Errorf("%v %v -> %v of %v names pid %d, not a live process of the daemon (group %d)",
				ev.Kind, ev.Old, ev.New, ev.Remote, ev.Owner.PID, pgid)
		}
	}
	// Per connection: LISTEN -> SYN_RECV, SYN_RECV -> ESTABLISHED, accept, -> CLOSE_WAIT.
	if checked < 3*4 {
		t.Errorf("%d lines about the daemon's connections, want at least 12", checked)
	}
}

// TestBPFNginxOwners runs nginx as it runs in production, daemonized into a
// master and two workers after tracing started, under 60 requests: every
// line about its connections names a live nginx process, and the
// listener's holders are the processes ss lists.
func TestBPFNginxOwners(t *testing.T) {
	r := startTracer(t, Config{})
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		t.Fatal("nginx is not installed (make deps installs nginx-light)")
	}
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf(`daemon on; master_process on; worker_processes 2;
pid %[1]s/nginx.pid; error_log %[1]s/error.log;
events { worker_connections 64; }
http { access_log off; client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s;
  uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
  server { listen 127.0.0.1:%[2]d; location / { return 200 "ok\n"; } } }
`, dir, port)
	if err := os.WriteFile(dir+"/nginx.conf", []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nginx, "-p", dir, "-c", dir+"/nginx.conf").CombinedOutput(); err != nil {
		t.Fatalf("nginx: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command(nginx, "-p", dir, "-c", dir+"/nginx.conf", "-s", "stop").Run() })
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for range 60 {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	listener := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	for deadline := time.Now().Add(5 * time.Second); countAccepts(r, port) < 60 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	checked := 0
	for _, ev := range r.snapshot() {
		if ev.Local.Port() != port || ev.Remote.Port() == 0 {
			continue
		}
		checked++
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ev.Owner.PID)); err != nil || string(comm) != "nginx\n" {
			t.Errorf("%v %v -> %v of %v names pid %d (%s), not a live nginx", ev.Kind, ev.Old, ev.New, ev.Remote, ev.Owner.PID, ev.Owner.Comm)
		}
	}
	if checked < 60*3 {
		t.Errorf("%d lines about nginx's connections, want at least 180", checked)
	}
	var want, got []string
	for _, s := range testenv.SSList(t) {
		if s.State == "LISTEN" && s.Local == testenv.SSAddr(listener) {
			for _, h := range s.Holders {
				want = append(want, fmt.Sprintf("%d/%d", h.PID, h.FD))
			}
		}
	}
	r.inRun(func() {
		tl := r.tr.Timeline()
		tl.Each(func(c *timeline.Conn) {
			if c.Local == listener && c.State == tcp.StateListen {
				tl.Holders(c.Cookie, func(o tcp.Owner) { got = append(got, fmt.Sprintf("%d/%d", o.PID, o.FD)) })
			}
		})
	})
	slices.Sort(want)
	slices.Sort(got)
	if len(want) != 3 || !slices.Equal(got, want) {
		t.Errorf("nginx's listener: timeline holders %v, ss %v (want the master and 2 workers)", got, want)
	}
}

func countAccepts(r *recorder, port uint16) int {
	n := 0
	for _, ev := range r.snapshot() {
		if ev.Kind == tcp.KindAccept && ev.Local.Port() == port {
			n++
		}
	}
	return n
}

// freePort is a loopback port nobody listens on.
func freePort(t *testing.T) uint16 {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}
