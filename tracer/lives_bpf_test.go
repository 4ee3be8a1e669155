//go:build linux

package tracer

import (
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/internal/testenv"
	"github.com/tcptrace/tcptrace/render"
	"github.com/tcptrace/tcptrace/tcp"
)

// ssInfo is what `ss -tanei` says of one socket: its byte and segment
// counters, and its retransmissions in all.
type ssInfo struct {
	bytesAcked, bytesReceived uint64
	segsOut, segsIn, retrans  uint64
}

var ssCounter = regexp.MustCompile(`(?:^|\s)(bytes_acked|bytes_received|segs_out|segs_in|retrans):(?:\d+/)?(\d+)`)

// ssInfoOf runs ss -tanei in the namespace ns and reads the counters of
// the socket from local to remote.
func ssInfoOf(t *testing.T, ns string, local, remote netip.AddrPort) ssInfo {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "ss", "-tneiH", "src", local.String(), "dst", remote.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	var s ssInfo
	for _, m := range ssCounter.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.ParseUint(m[2], 10, 64)
		switch m[1] {
		case "bytes_acked":
			s.bytesAcked = v
		case "bytes_received":
			s.bytesReceived = v
		case "segs_out":
			s.segsOut = v
		case "segs_in":
			s.segsIn = v
		case "retrans":
			s.retrans = v
		}
	}
	return s
}

// TestBPFLives: a client and a server in a namespace of the test's own
// exchange data, part of it through a second of dropped segments (an
// nftables rule), and close: each end's life names its process and role,
// counts exactly the data bytes sent and received, and the segments and
// retransmissions ss -tanei showed just before the close.
func TestBPFLives(t *testing.T) {
	const toServer, toClient = 100000, 30000
	r := startTracer(t, Config{})
	ns, _ := testNetNS(t)
	server := testenv.StartProcess(t, "ip", "netns", "exec", ns, testenv.PeerBinary, "server", "127.0.0.1:0")
	client := testenv.StartProcess(t, "ip", "netns", "exec", ns, testenv.PeerBinary, "client", server.ListenAddr())
	cli := client.Conn("connected")
	srv := server.Conn("accepted")
	client.Send(fmt.Sprintf("send %d", toServer))
	client.Expect("sent")
	// The server's data meets a second of drops on arrival: it gets
	// through by retransmission.
	run(t, "ip", "netns", "exec", ns, "nft", fmt.Sprintf(
		"add table inet lives; add chain inet lives in { type filter hook input priority 0; }; add rule inet lives in tcp sport %d drop", srv.Local.Port()))
	server.Send(fmt.Sprintf("send %d", toClient))
	server.Expect("sent")
	time.Sleep(time.Second)
	run(t, "ip", "netns", "exec", ns, "nft", "delete table inet lives")
	var before [2]ssInfo
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		before = [2]ssInfo{ssInfoOf(t, ns, cli.Local, cli.Remote), ssInfoOf(t, ns, srv.Local, srv.Remote)}
		if before[0].bytesReceived == toClient && before[1].bytesReceived == toServer {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("data not all through after 10s: ss says %+v", before)
		}
	}
	client.Send("close")
	client.Expect("closed")
	server.Expect("eof")
	server.Send("close")
	server.Expect("closed")
	r.waitFor("the server end's close", 5*time.Second, on(srv.Local, srv.Remote, tcp.KindTransition, tcp.StateLastAck, tcp.StateClose))
	r.waitFor("the client end's TIME_WAIT", 5*time.Second, on(cli.Local, cli.Remote, tcp.KindTransition, tcp.StateFinWait2, tcp.StateTimeWait))

	lives := analysis.NewLives()
	found := map[netip.AddrPort]analysis.Life{}
	keep := func(lf *analysis.Life) { found[lf.Local.AddrPort] = *lf }
	for _, ev := range r.snapshot() {
		lives.Feed(&ev, keep)
	}
	lives.Finish(keep)
	for i, tc := range []struct {
		end                 testenv.Conn
		role, closedFirst   string
		sent, received      uint64
		wantRetransmissions bool
	}{
		{cli, "client", "local", toServer, toClient, false},
		{srv, "server", "peer", toClient, toServer, true},
	} {
		lf, ok := found[tc.end.Local]
		if !ok {
			t.Errorf("no life for %v", tc.end.Local)
			continue
		}
		c, ss := lf.Counters, before[i]
		if c == nil || int(lf.Owner.PID) != tc.end.PID || lf.Role != tc.role || lf.ClosedFirst != tc.closedFirst || lf.End != analysis.EndFIN {
			t.Errorf("%s life %+v: want owner %d, %s, %s closed first, FIN both ways", tc.role, lf, tc.end.PID, tc.role, tc.closedFirst)
			continue
		}
		if c.Sent != tc.sent || c.Received != tc.received {
			t.Errorf("%s: %d bytes sent, %d received; the test sent %d and received %d", tc.role, c.Sent, c.Received, tc.sent, tc.received)
		}
		// The close adds a FIN and an ACK or two to what ss counted before it.
		if uint64(c.Retransmits) != ss.retrans || uint64(c.SegsOut) < ss.segsOut || uint64(c.SegsOut) > ss.segsOut+2 ||
			uint64(c.SegsIn) < ss.segsIn || uint64(c.SegsIn) > ss.segsIn+2 {
			t.Errorf("%s: segments out %d in %d, retransmitted %d; ss before the close: %+v", tc.role, c.SegsOut, c.SegsIn, c.Retransmits, ss)
		}
		if tc.wantRetransmissions != (c.Retransmits > 0) || c.SRTT <= 0 || c.MinRTT <= 0 {
			t.Errorf("%s: %d retransmissions (want some: %v), srtt %v, min rtt %v", tc.role, c.Retransmits, tc.wantRetransmissions, c.SRTT, c.MinRTT)
		}
		if lf.Duration < time.Second || lf.InState["ESTABLISHED"] < time.Second {
			t.Errorf("%s lived %v, %v established: want more than the second of drops", tc.role, lf.Duration, lf.InState["ESTABLISHED"])
		}
	}
}

// TestBPFFailedConnects: in a namespace of the test's own, a connect() to a
// port nothing listens on is refused, and one whose SYNs an nftables rule
// drops times out (one SYN retry allowed): each is counted as failed, with
// its process and destination.
func TestBPFFailedConnects(t *testing.T) {
	r := startTracer(t, Config{})
	ns, _ := testNetNS(t, "net.ipv4.tcp_syn_retries=1")
	run(t, "ip", "netns", "exec", ns, "nft",
		"add table inet failed; add chain inet failed out { type filter hook output priority 0; }; add rule inet failed out tcp dport 9 drop")
	refused, dropped := netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:9")
	pids := map[netip.AddrPort]int{}
	for _, to := range []netip.AddrPort{refused, dropped} {
		c := exec.Command("ip", "netns", "exec", ns, testenv.PeerBinary, "client", to.String())
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		pids[to] = c.Process.Pid // ip netns exec execs the peer: same pid
		if err := c.Wait(); err == nil {
			t.Fatalf("connect to %v succeeded", to)
		}
	}
	r.waitFor("the dropped connect's end", 10*time.Second, func(ev *tcp.Event) bool {
		return ev.Kind == tcp.KindTransition && ev.Remote == dropped && ev.New == tcp.StateClose
	})
	lives := analysis.NewLives()
	var failures analysis.Failures
	for _, ev := range r.snapshot() {
		lives.Feed(&ev, failures.Add)
	}
	lives.Finish(failures.Add)
	got := map[netip.AddrPort]analysis.Failed{}
	for _, f := range failures.List() {
		got[f.Remote.AddrPort] = f
	}
	for to, end := range map[netip.AddrPort]string{refused: analysis.EndRefused, dropped: analysis.EndTimedOut} {
		if f := got[to]; f.End != end || f.Count != 1 || int(f.PID) != pids[to] || f.Comm != "testpeer" {
			t.Errorf("failures to %v: %+v; want one %s by pid %d (testpeer)", to, f, end, pids[to])
		}
	}
}

// TestBPFPortExhaustion: in a namespace of the test's own, with ten
// ephemeral ports, a client holds ten connections to a server; another's
// connect() to it finds no port (EADDRNOTAVAIL). tcptrace reports it with
// the failing process, the destination, the namespace's port range, and
// the ten connections that hold the ports, by their process.
func TestBPFPortExhaustion(t *testing.T) {
	r := startTracer(t, Config{})
	ns, _ := testNetNS(t, "net.ipv4.ip_local_port_range=40000 40009")
	// A port of its own, outside the range: a listener bound to port 0
	// would take one of the ten.
	server := testenv.StartProcess(t, "ip", "netns", "exec", ns, testenv.PeerBinary, "server", "127.0.0.1:5000")
	dest := netip.MustParseAddrPort(server.ListenAddr())
	holder := testenv.StartProcess(t, "ip", "netns", "exec", ns, testenv.PeerBinary, "client", dest.String(), "10")
	for range 10 {
		holder.Expect("connected")
	}
	failing := exec.Command("ip", "netns", "exec", ns, testenv.PeerBinary, "client", dest.String())
	if out, err := failing.CombinedOutput(); err == nil || !strings.Contains(string(out), "cannot assign requested address") {
		t.Fatalf("an eleventh connect: %v: %s", err, out)
	}
	ev := r.waitFor("the failed connect", 5*time.Second, func(ev *tcp.Event) bool { return ev.Kind == tcp.KindConnectFail && ev.Remote == dest })
	if int(ev.Owner.PID) != failing.Process.Pid || ev.PortRange != [2]uint16{40000, 40009} || len(ev.PortHolders) != 10 {
		t.Errorf("failed connect %+v: want pid %d, ports 40000-40009, 10 holders", ev, failing.Process.Pid)
	}
	// Go's dialer tries connect() again on EADDRNOTAVAIL: each try is one;
	// the ports were examined for the first.
	rep := r.report(time.Hour)
	var p analysis.PortExhaustion
	for _, e := range rep.PortExhaustions {
		if int(e.PID) != failing.Process.Pid {
			t.Errorf("port exhaustion of pid %d, want only %d's", e.PID, failing.Process.Pid)
		}
		if e.Examined {
			p = e
		}
	}
	want := []analysis.PortUse{{State: tcp.StateEstablished, PID: uint32(holder.PID), Comm: "testpeer", Count: 10}}
	if p.PortRange != [2]int{40000, 40009} || !slices.Equal(p.Uses, want) || p.Remote.AddrPort != dest {
		t.Errorf("port exhaustion %+v: want ports 40000-40009 to %v, uses %+v", p, dest, want)
	}
	if why := render.PortExhaustionWhy(&p); !strings.Contains(why, fmt.Sprintf("10 ESTABLISHED held by pid %d (testpeer)", holder.PID)) {
		t.Errorf("explained as %q", why)
	}
	// Each try's socket went SYN_SENT and back: its life says why.
	lives := analysis.NewLives()
	var failures analysis.Failures
	for _, ev := range r.snapshot() {
		lives.Feed(&ev, failures.Add)
	}
	lives.Finish(failures.Add)
	if f := failures.List(); len(f) != 1 || f[0].End != analysis.EndNoPort || int(f[0].PID) != failing.Process.Pid || f[0].Remote.AddrPort != dest {
		t.Errorf("failures %+v: want connects of pid %d to %v without a port", f, failing.Process.Pid, dest)
	}
}
