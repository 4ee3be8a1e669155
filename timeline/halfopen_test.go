package timeline

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// TestHalfOpen: a request's SYN-ACK timer shows the handshake from its
// first SYN-ACK; the firing the kernel drops it at ends it; a walk that no
// longer finds one ends it too; a child with its four-tuple ends it silently.
func TestHalfOpen(t *testing.T) {
	s := newScript()
	srv, cli := netip.MustParseAddrPort("127.0.0.1:80"), netip.MustParseAddrPort("127.0.0.1:5000")
	// Each request sent its first SYN-ACK a second before its first firing.
	first := map[uint64]time.Time{}
	timer := func(id uint64, at time.Duration, synAcks uint8, flags uint8, remote netip.AddrPort) {
		if first[id].IsZero() {
			first[id] = t0.Add(at - time.Second)
		}
		s.tl.Apply(&tcp.Event{Kind: tcp.KindHalfOpen, Cookie: id, Time: t0.Add(at), Local: srv, Remote: remote, Owner: server,
			SynAcks: synAcks, Flags: flags, FirstSynAck: first[id]}, s.emit)
	}
	const id = 1 << 52
	timer(id, time.Second, 1, 0, cli)
	timer(id, 3*time.Second, 2, 0, cli)
	timer(id, 7*time.Second, 3, tcp.FlagDropped, cli)
	s.want(t, "4503599627370496 transition LISTEN->SYN_RECV owner=20/-1 src=synack",
		"4503599627370496 transition SYN_RECV->CLOSE owner=20/-1 in=7s src=synack")

	// Gone between firings: the walk after the next one was due.
	timer(id+1, time.Minute, 1, 0, netip.MustParseAddrPort("127.0.0.1:5001"))
	if got := s.checks(time.Minute + 2*time.Second); len(got) != 1 || got[0] != id+1 {
		t.Errorf("checks due: %v, want the request", got)
	}
	s.tw(id+1, time.Minute+2*time.Second, false, 0, 0)
	s.want(t, "4503599627370497 transition LISTEN->SYN_RECV owner=20/-1 src=synack",
		"4503599627370497 transition SYN_RECV->CLOSE owner=20/-1 in=3s src=synack")

	// Completed late: the child takes the tuple; no end line for the request.
	late := netip.MustParseAddrPort("127.0.0.1:5002")
	timer(id+2, 2*time.Minute, 1, 0, late)
	s.tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 9, Time: t0.Add(2*time.Minute + 3*time.Second), Local: srv, Remote: late,
		Old: tcp.StateListen, New: tcp.StateSynRecv, Owner: server, FD: -1}, s.emit)
	s.want(t, "4503599627370498 transition LISTEN->SYN_RECV owner=20/-1 src=synack", "9 transition LISTEN->SYN_RECV owner=20/-1")
	if s.tl.Conn(id+2) != nil {
		t.Error("the completed request is still tracked")
	}
}
