package analysis

import (
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// TestLives: connections' lives from the events a timeline emits.
func TestLives(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	l := NewLives()
	var got []string
	out := func(lf *Life) {
		line := fmt.Sprintf("%d %s %v %s %s", lf.Conn, lf.Role, lf.Duration, lf.End, lf.ClosedFirst)
		if c := lf.Counters; c != nil {
			line += fmt.Sprintf(" sent=%d received=%d", c.Sent, c.Received)
		}
		got = append(got, line)
	}
	local, remote := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:80")
	ev := func(cookie uint64, at time.Duration, old, new tcp.State) *tcp.Event {
		return &tcp.Event{Kind: tcp.KindTransition, Cookie: cookie, Time: t0.Add(at), Old: old, New: new, Local: local, Remote: remote, InOld: -1}
	}
	totals := func(e *tcp.Event, sent, received uint64) *tcp.Event {
		e.Totals = tcp.Totals{Read: true, BytesAcked: sent, BytesReceived: received}
		return e
	}
	// A client sends 1,000 bytes, gets 300, closes first: its life ends
	// as it enters TIME_WAIT (the peer's FIN counted in the 301).
	l.Feed(ev(1, 0, tcp.StateClose, tcp.StateSynSent), out)
	l.Feed(ev(1, time.Millisecond, tcp.StateSynSent, tcp.StateEstablished), out)
	l.Feed(ev(1, time.Second, tcp.StateEstablished, tcp.StateFinWait1), out)
	l.Feed(ev(1, time.Second+time.Millisecond, tcp.StateFinWait1, tcp.StateFinWait2), out)
	tw := totals(ev(1, 2*time.Second, tcp.StateFinWait2, tcp.StateTimeWait), 1002, 301)
	tw.Source = tcp.SourceTimeWait
	l.Feed(tw, out)
	// Its TIME_WAIT's end later adds nothing.
	end := ev(1, 62*time.Second, tcp.StateTimeWait, tcp.StateClose)
	end.Source = tcp.SourceTimeWait
	l.Feed(end, out)
	// A server whose peer closed first.
	l.Feed(ev(2, 0, tcp.StateListen, tcp.StateSynRecv), out)
	l.Feed(ev(2, time.Millisecond, tcp.StateSynRecv, tcp.StateEstablished), out)
	l.Feed(ev(2, time.Second, tcp.StateEstablished, tcp.StateCloseWait), out)
	l.Feed(ev(2, 2*time.Second, tcp.StateCloseWait, tcp.StateLastAck), out)
	l.Feed(totals(ev(2, 2*time.Second+time.Millisecond, tcp.StateLastAck, tcp.StateClose), 301, 1001), out)
	// A connect() refused.
	refused := ev(3, 3*time.Second, tcp.StateSynSent, tcp.StateClose)
	refused.Errno = int32(syscall.ECONNREFUSED)
	l.Feed(ev(3, 3*time.Second, tcp.StateClose, tcp.StateSynSent), out)
	l.Feed(totals(refused, 0, 0), out)
	// An abortive close: CLOSE, then the RST the kernel sends for it.
	l.Feed(ev(4, 0, tcp.StateClose, tcp.StateSynSent), out)
	l.Feed(ev(4, time.Millisecond, tcp.StateSynSent, tcp.StateEstablished), out)
	l.Feed(totals(ev(4, 4*time.Second, tcp.StateEstablished, tcp.StateClose), 11, 0), out)
	l.Feed(&tcp.Event{Kind: tcp.KindReset, Cookie: 4, Time: t0.Add(4*time.Second + time.Microsecond), ResetSent: true, ResetReason: "TCP_STATE"}, out)
	// A listener lives no life; nor does a TIME_WAIT older than tracing.
	l.Feed(ev(5, 0, tcp.StateClose, tcp.StateListen), out)
	l.Feed(ev(5, 5*time.Second, tcp.StateListen, tcp.StateClose), out)
	old := &tcp.Event{Kind: tcp.KindExisting, Cookie: 6, Time: t0, Old: tcp.StateTimeWait, New: tcp.StateTimeWait}
	l.Feed(old, out)
	l.Finish(out)
	want := []string{
		"1 client 2s fin local sent=1000 received=300",
		"2 server 2.001s fin peer sent=300 received=1000",
		"3 client 0s refused  sent=0 received=0",
		"4 client 4s aborted  sent=10 received=0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lives:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if l.Open() != 0 {
		t.Errorf("%d connections still followed", l.Open())
	}
}
