//go:build linux

package tracer

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/internal/testenv"
)

// leakyServer starts a server and n clients that connect and close: the
// server reads EOF and, unless told to close, leaves the sockets in CLOSE_WAIT.
func leakyServer(t *testing.T, n int) (*testenv.Peer, []testenv.Conn) {
	t.Helper()
	server := testenv.StartPeer(t, "server", "127.0.0.1:0")
	var conns []testenv.Conn
	for i := 0; i < n; i++ {
		client := testenv.StartPeer(t, "client", server.ListenAddr())
		client.Expect("connected")
		conns = append(conns, server.Conn("accepted"))
		client.Send("close")
		server.Expect("eof")
	}
	return server, conns
}

// ssCloseWaitFDs lists, per pid, the fds ss shows in CLOSE-WAIT on these local addresses.
func ssCloseWaitFDs(t *testing.T, locals []string) map[int][]int32 {
	out := map[int][]int32{}
	for _, s := range testenv.SSList(t) {
		if s.State != "CLOSE-WAIT" || !slices.Contains(locals, s.Local) {
			continue
		}
		for _, h := range s.Holders {
			out[h.PID] = append(out[h.PID], h.FD)
		}
	}
	for _, fds := range out {
		slices.Sort(fds)
	}
	return out
}

// TestBPFLeaks checks the leak report against ss: a Go server that leaked
// before tracing started, one that leaks after, a C server, a socket shared
// with a child process, and a server that closes properly and must not appear.
func TestBPFLeaks(t *testing.T) {
	testenv.RequireBPF(t)
	before, _ := leakyServer(t, 2)
	good, _ := leakyServer(t, 1)
	good.Send("close")
	good.Expect("closed")

	r := startTracer(t, Config{})
	after, afterConns := leakyServer(t, 2)
	after.Send("share")
	child := after.Expect("shared")[0]

	cserver := testenv.StartProcess(t, cLeakServer)
	cclient := testenv.StartPeer(t, "client", cserver.ListenAddr())
	cclient.Expect("connected")
	cconn := cserver.Conn("accepted")
	cclient.Send("close")
	r.waitFor("C server CLOSE_WAIT", 5*time.Second, on(cconn.Local, cconn.Remote, KindTransition, StateEstablished, StateCloseWait))

	threshold := time.Second
	time.Sleep(threshold + 200*time.Millisecond)
	var rep LeakReport
	var err error
	r.inRun(func() { rep, err = r.tr.LeakReport(threshold, &Filter{}) })
	if err != nil {
		t.Fatal(err)
	}

	locals := []string{before.ListenAddr(), good.ListenAddr(), after.ListenAddr(), cserver.ListenAddr()}
	want := ssCloseWaitFDs(t, locals)
	got := map[int]ProcessLeak{}
	for _, p := range rep.Processes {
		got[int(p.PID)] = p
	}
	for pid, fds := range want {
		p, ok := got[pid]
		if !ok {
			t.Errorf("pid %d holds CLOSE-WAIT fds %v (ss) but is not in the report", pid, fds)
			continue
		}
		if fmt.Sprint(p.FDs) != fmt.Sprint(fds) {
			t.Errorf("pid %d: report fds %v, ss fds %v", pid, p.FDs, fds)
		}
	}
	if _, ok := got[good.PID]; ok {
		t.Errorf("the server that closed its connections (pid %d) is reported", good.PID)
	}
	for _, pid := range []int{before.PID, after.PID, cserver.PID} {
		if _, ok := want[pid]; !ok {
			t.Errorf("ss shows no CLOSE-WAIT for leaking pid %d", pid)
		}
	}
	if fmt.Sprint(want[mustAtoi(child)]) != "[3 4]" {
		t.Errorf("the child sharing the sockets holds %v per ss, want fds 3 and 4", want[mustAtoi(child)])
	}

	// Ages: exact when seen entering CLOSE_WAIT, a lower bound before tracing.
	if p := got[before.PID]; !p.AtLeast || p.Oldest < threshold {
		t.Errorf("leak older than the tracer: oldest %v, at least %v", p.Oldest, p.AtLeast)
	}
	pa := got[after.PID]
	if pa.AtLeast || pa.Oldest < threshold || pa.Oldest > 30*time.Second {
		t.Errorf("leak seen by the tracer: oldest %v, at least %v; want exact", pa.Oldest, pa.AtLeast)
	}
	if !strings.Contains(pa.Verdict, fmt.Sprintf("pid %d (testpeer) never closed 2 connections", after.PID)) {
		t.Errorf("verdict %q", pa.Verdict)
	}
	// A shared socket names every holder.
	for _, s := range pa.Sockets {
		var pids []int
		for _, h := range s.Holders {
			pids = append(pids, int(h.PID))
		}
		slices.Sort(pids)
		if fmt.Sprint(pids) != fmt.Sprint([]int{after.PID, mustAtoi(child)}) {
			t.Errorf("socket %s holders %v, want server %d and child %s", s.Remote, pids, after.PID, child)
		}
	}
	if len(pa.Sockets) != len(afterConns) {
		t.Errorf("%d sockets reported for pid %d, want %d", len(pa.Sockets), after.PID, len(afterConns))
	}

	// Origins: the accepting function of the Go and of the C server.
	if len(pa.Origins) != 1 || !strings.HasPrefix(pa.Origins[0].Where, "main.(*peer).serve.func1 (") {
		t.Errorf("Go server origins: %+v", pa.Origins)
	}
	pc := got[cserver.PID]
	if len(pc.Origins) != 1 || !strings.HasPrefix(pc.Origins[0].Where, "accept_connections (") || !strings.Contains(pc.Origins[0].Where, "leakserver.c:") {
		t.Errorf("C server origins: %+v", pc.Origins)
	}
}

func mustAtoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}
