//go:build linux

package tracer

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/internal/testenv"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// testNetNS makes a network namespace for the test, deleted after it, with
// loopback up and the sysctls given (name=value) set; it returns the
// namespace's name and inode.
func testNetNS(t *testing.T, sysctls ...string) (string, uint32) {
	t.Helper()
	ns := fmt.Sprintf("tcptrace-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), os.Getpid())
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+ns, &st); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	for _, s := range sysctls {
		run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", s)
	}
	return ns, uint32(st.Ino)
}

// halfOpenNetNS makes a namespace for the test with the SYN-ACK retries
// given, and a server listening in it; it returns the namespace's name and
// inode and the server.
func halfOpenNetNS(t *testing.T, synAckRetries int) (string, uint32, *testenv.Peer) {
	t.Helper()
	ns, ino := testNetNS(t, fmt.Sprintf("net.ipv4.tcp_synack_retries=%d", synAckRetries))
	server := testenv.StartProcess(t, "ip", "netns", "exec", ns, testenv.PeerBinary, "server", "127.0.0.1:0")
	return ns, ino, server
}

// TestBPFHalfOpen: in a network namespace of the test's own, a SYN comes
// from an address routed to loopback, where the SYN-ACKs, addressed to no
// local address, vanish; the kernel gives up after one SYN-ACK
// retransmission. The stream must show the
// request in SYN_RECV while ss does, credited to the server, and its end
// when the kernel drops it.
func TestBPFHalfOpen(t *testing.T) {
	r := startTracer(t, Config{})
	ns, nsIno, server := halfOpenNetNS(t, 1)
	srv := netip.MustParseAddrPort(server.ListenAddr())
	cli := netip.MustParseAddrPort("10.9.9.9:40000")
	run(t, "ip", "netns", "exec", ns, "ip", "route", "add", cli.Addr().String()+"/32", "dev", "lo")
	run(t, "ip", "netns", "exec", ns, testenv.PeerBinary, "syn", srv.String(), cli.String())

	open := r.waitFor("the half-open LISTEN -> SYN_RECV", 5*time.Second, func(ev *tcp.Event) bool {
		return ev.Source == tcp.SourceSynAck && ev.New == tcp.StateSynRecv && ev.Remote == cli
	})
	if state := ssState(t, ns, srv, cli); state != "SYN-RECV" {
		t.Errorf("ss shows the server's end in %q, want SYN-RECV", state)
	}
	if open.Local != srv || open.NetNS != nsIno || open.Owner.PID != uint32(server.PID) || open.Owner.Via != tcp.OwnerListener {
		t.Errorf("half-open line %+v: want %v in netns %d, owned by the server %d through its listener", open, srv, nsIno, server.PID)
	}
	if at := open.FirstSynAck; at.IsZero() || time.Since(at) > 10*time.Second || !open.Time.Equal(at) {
		t.Errorf("half-open line at %v, first SYN-ACK at %v", open.Time, at)
	}
	end := r.waitFor("the half-open end", 10*time.Second, func(ev *tcp.Event) bool {
		return ev.Source == tcp.SourceSynAck && ev.New == tcp.StateClose && ev.Remote == cli
	})
	// One retransmission allowed: the first SYN-ACK and one more, dropped at
	// the timer's second firing, about 3 s after the SYN.
	if end.Flags&tcp.FlagDropped == 0 || end.SynAcks != 2 || end.InOld < 2*time.Second || end.InOld > 8*time.Second {
		t.Errorf("half-open end %+v: want dropped after 2 SYN-ACKs, about 3 s in SYN_RECV", end)
	}
	if state := ssState(t, ns, srv, cli); state != "" {
		t.Errorf("ss still shows the request (%s) after the drop", state)
	}
}

// TestBPFHalfOpenCompletesLate: an nftables rule drops the final ACK of
// a handshake until it is removed; the ACK to the next SYN-ACK completes
// it. The child takes the request's place: nothing says it failed.
func TestBPFHalfOpenCompletesLate(t *testing.T) {
	r := startTracer(t, Config{})
	ns, _, server := halfOpenNetNS(t, 3)
	srv := netip.MustParseAddrPort(server.ListenAddr())
	run(t, "ip", "netns", "exec", ns, "nft", fmt.Sprintf(
		"add table inet halfopen { chain in { type filter hook input priority 0; tcp dport %d tcp flags & (syn | ack) == ack drop; }; }", srv.Port()))
	late := testenv.StartProcess(t, "ip", "netns", "exec", ns, testenv.PeerBinary, "client", srv.String()).Conn("connected").Local
	r.waitFor("the half-open line", 5*time.Second, func(ev *tcp.Event) bool {
		return ev.Source == tcp.SourceSynAck && ev.New == tcp.StateSynRecv && ev.Remote == late
	})
	run(t, "ip", "netns", "exec", ns, "nft", "delete table inet halfopen")
	accepted := server.Conn("accepted")
	r.waitFor("the late child's accept", 5*time.Second, on(accepted.Local, accepted.Remote, tcp.KindAccept, 0, 0))
	var requests int
	r.inRun(func() {
		r.tr.Timeline().Each(func(c *timeline.Conn) {
			if c.HalfOpen() && c.Remote == late {
				requests++
			}
		})
	})
	if requests != 0 || accepted.Remote != late {
		t.Errorf("after the late handshake (accepted %v): %d half-open requests still tracked for %v", accepted.Remote, requests, late)
	}
	for _, ev := range r.snapshot() {
		if ev.Source == tcp.SourceSynAck && ev.New == tcp.StateClose && ev.Remote == late {
			t.Errorf("a completed handshake shown as failed: %+v", ev)
		}
	}
}

// ssState is the state ss shows in namespace ns for the socket local -> remote, "" if none.
func ssState(t *testing.T, ns string, local, remote netip.AddrPort) string {
	for _, s := range testenv.SSListIn(t, ns) {
		if s.Local == testenv.SSAddr(local) && s.Remote == testenv.SSAddr(remote) {
			return s.State
		}
	}
	return ""
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}
