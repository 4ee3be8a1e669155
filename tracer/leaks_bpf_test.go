//go:build linux

package tracer

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/internal/testenv"
	"github.com/tcptrace/tcptrace/kernel"
	"github.com/tcptrace/tcptrace/render"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

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
	before, _ := testenv.LeakyServer(t, 2)
	good, _ := testenv.LeakyServer(t, 1)
	good.Send("close")
	good.Expect("closed")

	r := startTracer(t, Config{})
	after, afterConns := testenv.LeakyServer(t, 2)
	after.Send("share")
	child := after.Expect("shared")[0]

	cserver := testenv.StartProcess(t, cLeakServer)
	cclient := testenv.StartPeer(t, "client", cserver.ListenAddr())
	cclient.Expect("connected")
	cconn := cserver.Conn("accepted")
	cclient.Send("close")
	r.waitFor("C server CLOSE_WAIT", 5*time.Second, on(cconn.Local, cconn.Remote, tcp.KindTransition, tcp.StateEstablished, tcp.StateCloseWait))

	threshold := time.Second
	time.Sleep(threshold + 200*time.Millisecond)
	var rep analysis.LeakReport
	var err error
	r.inRun(func() { rep, err = r.tr.LeakReport(threshold, &timeline.Filter{}) })
	if err != nil {
		t.Fatal(err)
	}

	got := checkLeaksAgainstSS(t, rep, before, good, after, cserver, child)
	checkLeakAges(t, got[before.PID], got[after.PID], after, threshold)
	checkSharedLeaks(t, got[after.PID], after, afterConns, child)
	checkLeakOrigins(t, got[after.PID], got[cserver.PID])
}

// checkLeaksAgainstSS checks the report's processes and fds against the
// CLOSE-WAIT sockets ss shows on the servers' addresses, and returns the
// report's processes by pid.
func checkLeaksAgainstSS(t *testing.T, rep analysis.LeakReport, before, good, after, cserver *testenv.Peer, child string) map[int]analysis.ProcessLeak {
	locals := []string{before.ListenAddr(), good.ListenAddr(), after.ListenAddr(), cserver.ListenAddr()}
	want := ssCloseWaitFDs(t, locals)
	got := map[int]analysis.ProcessLeak{}
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
	return got
}

// checkLeakAges checks the ages of the leak from before tracing (p) and of
// the one the tracer saw (pa), and the verdict on the latter.
func checkLeakAges(t *testing.T, p, pa analysis.ProcessLeak, after *testenv.Peer, threshold time.Duration) {
	// Ages: exact when seen entering CLOSE_WAIT, a lower bound before tracing.
	if !p.AtLeast || p.Oldest < threshold {
		t.Errorf("leak older than the tracer: oldest %v, at least %v", p.Oldest, p.AtLeast)
	}
	if pa.AtLeast || pa.Oldest < threshold || pa.Oldest > 30*time.Second {
		t.Errorf("leak seen by the tracer: oldest %v, at least %v; want exact", pa.Oldest, pa.AtLeast)
	}
	if !strings.Contains(render.Verdict(&pa), fmt.Sprintf("pid %d (testpeer) never closed 2 connections", after.PID)) {
		t.Errorf("verdict %q", render.Verdict(&pa))
	}
}

// checkSharedLeaks checks that each leaked socket the server shares with its
// child names both holders, and that every one is reported.
func checkSharedLeaks(t *testing.T, pa analysis.ProcessLeak, after *testenv.Peer, afterConns []testenv.Conn, child string) {
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
}

// checkLeakOrigins checks where the Go server (pa) and the C server (pc)
// accepted their leaked connections.
func checkLeakOrigins(t *testing.T, pa, pc analysis.ProcessLeak) {
	// Origins: the accepting function of the Go and of the C server.
	if len(pa.Origins) != 1 || !strings.HasPrefix(pa.Origins[0].Where, "main.(*peer).listen.func1 (") {
		t.Errorf("Go server origins: %+v", pa.Origins)
	}
	// glibc's accept keeps no frame: its caller is found through the
	// syscall's registers where bpf_task_pt_regs exists (5.15), else the
	// origin is the next function up, main.
	caller := "accept_connections ("
	if spec, err := btf.LoadKernelSpec(); err == nil && !kernel.HasTaskPtRegs(spec) {
		caller = "main ("
	}
	if len(pc.Origins) != 1 || !strings.HasPrefix(pc.Origins[0].Where, caller) || !strings.Contains(pc.Origins[0].Where, "leakserver.c:") {
		t.Errorf("C server origins: %+v, want %s...leakserver.c:", pc.Origins, caller)
	}
}

func mustAtoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

// report runs a leak report on the tracer's goroutine.
func (r *recorder) report(threshold time.Duration) analysis.LeakReport {
	r.t.Helper()
	var rep analysis.LeakReport
	var err error
	r.inRun(func() { rep, err = r.tr.LeakReport(threshold, &timeline.Filter{}) })
	if err != nil {
		r.t.Fatal(err)
	}
	return rep
}

// TestBPFTimeWaitStorm: a client opens and closes first 60 connections; the
// report counts their TIME_WAIT sockets as ss does, names the client as the
// process that closed first, and measures the rate.
func TestBPFTimeWaitStorm(t *testing.T) {
	const n = 60
	r := startTracer(t, Config{})
	server := testenv.StartPeer(t, "server", "127.0.0.1:0")
	client := testenv.StartPeer(t, "client", server.ListenAddr(), fmt.Sprint(n))
	ours := map[string]bool{}
	for i := 0; i < n; i++ {
		ours[client.Conn("connected").Local.String()] = true
		server.Expect("accepted")
	}
	client.Send("close")
	for i := 0; i < n; i++ {
		server.Expect("eof")
	}
	server.Send("close")
	server.Expect("closed")
	// Wait until the tracer has settled every close of the client: into
	// TIME_WAIT, or CLOSE when the kernel kept no timewait socket.
	deadline := time.Now().Add(5 * time.Second)
	for {
		settled := map[uint64]bool{}
		for _, ev := range r.snapshot() {
			if int(ev.Owner.PID) == client.PID && ev.Kind == tcp.KindTransition && (ev.New == tcp.StateTimeWait || ev.New == tcp.StateClose) {
				settled[ev.Cookie] = true
			}
		}
		if len(settled) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d closes settled", len(settled), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rep := r.report(time.Minute)

	// TIME_WAIT sockets left by earlier runs toward the same address count too.
	var ssCount, ssOurs int
	for _, s := range testenv.SSList(t) {
		if s.State == "TIME-WAIT" && s.Remote == server.ListenAddr() {
			ssCount++
			if ours[s.Local] {
				ssOurs++
			}
		}
	}
	var route *analysis.TimeWaitRoute
	for i := range rep.TimeWait.Routes {
		if rep.TimeWait.Routes[i].Remote.String() == server.ListenAddr() {
			route = &rep.TimeWait.Routes[i]
		}
	}
	// tcptrace must count what ss counts. Most should be in TIME_WAIT, but up
	// to 8 of 60 have been seen to vanish from the kernel's tables right
	// after the handover while other tests ran, which ss confirms.
	if route == nil || route.Count != ssCount || ssOurs < n/2 || !route.Client {
		t.Fatalf("route to %s: %+v; ss counts %d TIME-WAIT (%d of this client's %d)", server.ListenAddr(), route, ssCount, ssOurs, n)
	}
	if route.Rate <= 0 || route.Projected != int(route.Rate*60) {
		t.Errorf("route rate %.2f/s projected %d", route.Rate, route.Projected)
	}
	var closer *analysis.TimeWaitCloser
	for i := range rep.TimeWait.Closers {
		if int(rep.TimeWait.Closers[i].PID) == client.PID {
			closer = &rep.TimeWait.Closers[i]
		}
	}
	if closer == nil || closer.Count != ssOurs || closer.Comm != "testpeer" {
		t.Errorf("closers %+v: want pid %d with %d, as ss counts", rep.TimeWait.Closers, client.PID, ssOurs)
	}
	if advice := render.TimeWaitAdvice(&rep.TimeWait); len(advice) == 0 || !strings.Contains(advice[0], "60 s") {
		t.Errorf("advice %q", advice)
	}
}

// TestBPFStuckFinWait2: a client shuts down its side of a connection to a
// server that never closes: the client waits in FIN_WAIT2, and the report
// names the local peer that holds the other end in CLOSE_WAIT.
func TestBPFStuckFinWait2(t *testing.T) {
	r := startTracer(t, Config{})
	server, client, srv, cli := testenv.Pair(t, "127.0.0.1:0")
	client.Send("shutdown")
	server.Expect("eof")
	r.waitFor("client FIN_WAIT2", 5*time.Second, on(cli.Local, cli.Remote, tcp.KindTransition, tcp.StateFinWait1, tcp.StateFinWait2))
	time.Sleep(1200 * time.Millisecond)
	rep := r.report(time.Second)

	ss, ok := testenv.SSFind(t, cli.Local, cli.Remote)
	if !ok || ss.State != "FIN-WAIT-2" {
		t.Fatalf("ss shows the client end as %+v", ss)
	}
	var stuck *analysis.StuckSocket
	for i := range rep.Stuck {
		if rep.Stuck[i].Local.AddrPort == cli.Local {
			stuck = &rep.Stuck[i]
		}
	}
	if stuck == nil {
		t.Fatalf("client FIN_WAIT2 not reported stuck: %+v", rep.Stuck)
	}
	if stuck.State != tcp.StateFinWait2 || stuck.AtLeast || stuck.Age < time.Second || stuck.Orphan ||
		len(stuck.Holders) != 1 || int(stuck.Holders[0].PID) != ss.PID || stuck.Holders[0].FD != ss.FD {
		t.Errorf("stuck %+v; ss holder pid %d fd %d", stuck, ss.PID, ss.FD)
	}
	if stuck.PeerState != tcp.StateCloseWait || len(stuck.PeerHolders) != 1 || int(stuck.PeerHolders[0].PID) != srv.PID || stuck.PeerHolders[0].FD != srv.FD {
		t.Errorf("peer of the stuck close: %s %+v, want CLOSE_WAIT held by pid %d fd %d", stuck.PeerState, stuck.PeerHolders, srv.PID, srv.FD)
	}
	if !strings.Contains(render.StuckWhy(stuck), "has not called close()") {
		t.Errorf("why: %q", render.StuckWhy(stuck))
	}
}

// TestBPFAbortiveClose: a client closes with SO_LINGER {on, 0}. Its end is
// reported as having sent the RST, the server's as having received it.
func TestBPFAbortiveClose(t *testing.T) {
	r := startTracer(t, Config{})
	_, client, srv, cli := testenv.Pair(t, "127.0.0.1:0")
	client.Send("abort")
	client.Expect("aborted")
	sent := r.waitFor("client RST sent", 5*time.Second, func(ev *tcp.Event) bool {
		return ev.Kind == tcp.KindReset && ev.Local == cli.Local && ev.Remote == cli.Remote
	})
	got := r.waitFor("server RST received", 5*time.Second, func(ev *tcp.Event) bool {
		return ev.Kind == tcp.KindReset && ev.Local == srv.Local && ev.Remote == srv.Remote
	})
	if !sent.ResetSent || int(sent.Owner.PID) != cli.PID {
		t.Errorf("client reset: sent %v owner %+v, want sent by pid %d", sent.ResetSent, sent.Owner, cli.PID)
	}
	if got.ResetSent || int(got.Owner.PID) != srv.PID || got.Owner.FD != srv.FD {
		t.Errorf("server reset: sent %v owner %+v, want received by pid %d fd %d", got.ResetSent, got.Owner, srv.PID, srv.FD)
	}
	cl := r.waitFor("server ESTABLISHED->CLOSE", 5*time.Second, on(srv.Local, srv.Remote, tcp.KindTransition, tcp.StateEstablished, tcp.StateClose))
	if cl.Errno != 104 || cl.Flags&tcp.FlagError == 0 {
		t.Errorf("server close after RST: errno %d flags %d, want ECONNRESET (104)", cl.Errno, cl.Flags)
	}
	rep := r.report(time.Minute)
	var sides []string
	for _, rc := range rep.Resets {
		if rc.Local.AddrPort == cli.Local || rc.Local.AddrPort == srv.Local && rc.Remote.AddrPort == srv.Remote {
			sides = append(sides, fmt.Sprintf("%d:%v", rc.Owner.PID, rc.Sent))
		}
		// The abort is the application's, whatever reason the kernel gives
		// (TCP_STATE from 6.10 on, which an orphan's timeout shares).
		if why := render.ResetWhy(&rc); rc.Local.AddrPort == cli.Local && (rc.Orphan || strings.Contains(why, "orphan")) {
			t.Errorf("the client's abort explained as %q (orphan %v)", why, rc.Orphan)
		}
	}
	slices.Sort(sides)
	want := []string{fmt.Sprintf("%d:true", cli.PID), fmt.Sprintf("%d:false", srv.PID)}
	slices.Sort(want)
	if fmt.Sprint(sides) != fmt.Sprint(want) {
		t.Errorf("report resets (owner:sent) %v, want %v", sides, want)
	}
}

// TestBPFBindInUse: a restart that cannot bind. With only TIME_WAIT left on
// the port, SO_REUSEADDR would have bound (and does); with a live listener it
// would not, and the listener's process is named.
func TestBPFBindInUse(t *testing.T) {
	r := startTracer(t, Config{})

	// The old server closes first: its end waits in TIME_WAIT on its port.
	old := testenv.StartPeer(t, "server", "127.0.0.1:0")
	addr := old.ListenAddr()
	client := testenv.StartPeer(t, "client", addr)
	client.Expect("connected")
	old.Expect("accepted")
	old.Send("close")
	old.Expect("closed")
	client.Send("close")
	client.Expect("closed")
	// The server closed first, so its end (of an MPTCP listener: Go's default) enters TIME_WAIT.
	r.waitFor("old server end in TIME_WAIT", 5*time.Second, func(ev *tcp.Event) bool {
		return ev.Kind == tcp.KindTransition && ev.New == tcp.StateTimeWait && ev.Local.String() == addr && int(ev.Owner.PID) == old.PID
	})
	old.Send("exit")
	r.waitFor("old listener gone", 5*time.Second, func(ev *tcp.Event) bool {
		return ev.Kind == tcp.KindTransition && ev.Old == tcp.StateListen && ev.New == tcp.StateClose && ev.Local.String() == addr
	})

	restart := testenv.StartPeer(t, "bind", addr, "noreuse")
	if f := restart.Expect("bind-error"); f[0] != "EADDRINUSE" {
		t.Fatalf("bind without SO_REUSEADDR: %v, want EADDRINUSE", f)
	}
	fail := r.waitFor("bind failure", 5*time.Second, func(ev *tcp.Event) bool {
		return ev.Kind == tcp.KindBindFail && int(ev.Owner.PID) == restart.PID
	})
	if fail.ReuseAddr || fail.Local.String() != addr || len(fail.PortHolders) == 0 {
		t.Fatalf("bind failure %+v", fail)
	}
	rep := r.report(time.Minute)
	var f *analysis.BindFailure
	for i := range rep.BindFailures {
		if int(rep.BindFailures[i].PID) == restart.PID {
			f = &rep.BindFailures[i]
		}
	}
	if f == nil || !f.ReuseAddrWouldBind || f.Holders[0].State != tcp.StateTimeWait {
		t.Fatalf("bind failure report %+v: want TIME_WAIT holders and SO_REUSEADDR would bind", f)
	}
	if again := testenv.StartPeer(t, "bind", addr, "reuse"); again.Expect("bound") == nil {
		t.Fatal("with SO_REUSEADDR the bind should succeed")
	}

	// A live listener: SO_REUSEADDR does not help, and its owner is named.
	live := testenv.StartPeer(t, "server", "127.0.0.1:0")
	time.Sleep(1100 * time.Millisecond) // ports of failed binds are examined at most once a second
	second := testenv.StartPeer(t, "bind", live.ListenAddr(), "reuse")
	second.Expect("bind-error")
	r.waitFor("second bind failure", 5*time.Second, func(ev *tcp.Event) bool {
		return ev.Kind == tcp.KindBindFail && int(ev.Owner.PID) == second.PID
	})
	rep = r.report(time.Minute)
	f = nil
	for i := range rep.BindFailures {
		if int(rep.BindFailures[i].PID) == second.PID {
			f = &rep.BindFailures[i]
		}
	}
	if f == nil || f.ReuseAddrWouldBind || !f.ReuseAddr || !strings.Contains(render.BindWhy(f), fmt.Sprintf("pid %d", live.PID)) {
		t.Errorf("bind failure beside a listener: %+v", f)
	}
}

// TestBPFStuckLastAck drops, with an nftables rule on just this connection,
// the client's ACK of the server's FIN: the server's end stays in LAST_ACK.
func TestBPFStuckLastAck(t *testing.T) {
	r := startTracer(t, Config{})
	server, client, srv, cli := testenv.Pair(t, "127.0.0.1:0")
	client.Send("close")
	server.Expect("eof")

	table := fmt.Sprintf("tcptrace_test_%d", os.Getpid())
	nft := func(args ...string) {
		if out, err := exec.Command("nft", args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	nft("add", "table", "inet", table)
	t.Cleanup(func() { exec.Command("nft", "delete", "table", "inet", table).Run() })
	nft("add", "chain", "inet", table, "out", "{ type filter hook output priority 0; }")
	nft("add", "rule", "inet", table, "out", "tcp", "sport", fmt.Sprint(cli.Local.Port()), "tcp", "dport", fmt.Sprint(cli.Remote.Port()), "drop")

	server.Send("close")
	r.waitFor("server CLOSE_WAIT->LAST_ACK", 5*time.Second, on(srv.Local, srv.Remote, tcp.KindTransition, tcp.StateCloseWait, tcp.StateLastAck))
	time.Sleep(1200 * time.Millisecond)
	rep := r.report(time.Second)
	if ss, ok := testenv.SSFind(t, srv.Local, srv.Remote); !ok || ss.State != "LAST-ACK" {
		t.Fatalf("ss shows the server end as %+v", ss)
	}
	var stuck *analysis.StuckSocket
	for i := range rep.Stuck {
		if rep.Stuck[i].Local.AddrPort == srv.Local && rep.Stuck[i].Remote.AddrPort == srv.Remote {
			stuck = &rep.Stuck[i]
		}
	}
	if stuck == nil || stuck.State != tcp.StateLastAck || !stuck.Orphan || int(stuck.Owner.PID) != srv.PID || stuck.Age < time.Second || stuck.AtLeast {
		t.Fatalf("stuck LAST_ACK: %+v", stuck)
	}
	if !strings.Contains(render.StuckWhy(stuck), "final ACK from "+srv.Remote.String()+" never came") {
		t.Errorf("why: %q", render.StuckWhy(stuck))
	}
}

// TestBPFOriginRate: past its budget of user stacks a process's accepts
// carry no origin, and each one skipped is counted.
func TestBPFOriginRate(t *testing.T) {
	const rate, n = 2, 6
	r := startTracer(t, Config{OriginRate: rate})
	started := time.Now()
	_, conns := testenv.LeakyServer(t, n)
	elapsed := time.Since(started)
	var with, without int
	for _, c := range conns {
		ev := r.waitFor("server accept", 5*time.Second, on(c.Local, c.Remote, tcp.KindAccept, 0, 0))
		if ev.Origin.Known() {
			with++
		} else {
			without++
		}
	}
	// The budget starts full and refills at rate a second.
	if most := rate + int(elapsed.Seconds()*rate) + 1; with < rate || with > most || without == 0 {
		t.Errorf("%d accepts with an origin, %d without, in %v: want %d to %d with, the rest without", with, without, elapsed, rate, most)
	}
	var skipped uint64
	r.inRun(func() {
		if err := r.tr.readCounters(); err != nil {
			t.Error(err)
		}
		skipped = r.tr.OriginsSkipped()
	})
	if skipped < uint64(without) {
		t.Errorf("%d origins counted as skipped, but %d accepts had none", skipped, without)
	}
}

// TestBPFLeakOriginScript: a script's leak is created in its interpreter's
// own code (here Perl's): the origin names the interpreter, and stops where
// the stack does, not in the junk a frame-pointer walk reads past its end.
func TestBPFLeakOriginScript(t *testing.T) {
	r := startTracer(t, Config{})
	server := testenv.StartProcess(t, "perl", "testdata/leakserver.pl")
	client := testenv.StartPeer(t, "client", server.ListenAddr())
	client.Expect("connected")
	conn := server.Conn("accepted")
	client.Send("close")
	r.waitFor("Perl server CLOSE_WAIT", 5*time.Second, on(conn.Local, conn.Remote, tcp.KindTransition, tcp.StateEstablished, tcp.StateCloseWait))
	rep := r.report(0)
	for _, p := range rep.Processes {
		if int(p.PID) != server.PID {
			continue
		}
		t.Logf("origin %s: %v", p.Origins[0].Where, p.Origins[0].Frames)
		if len(p.Origins) != 1 || !strings.HasPrefix(p.Origins[0].Where, "the perl") {
			t.Errorf("Perl server origins: %+v, want the perl interpreter", p.Origins)
		}
		for _, f := range p.Origins[0].Frames {
			if f.Addr >= 1<<47 || f.Module == "" {
				t.Errorf("origin frame %+v: no return address of this process", f)
			}
		}
		return
	}
	t.Errorf("no leak of the Perl server %d in %+v", server.PID, rep.Processes)
}
