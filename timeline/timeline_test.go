package timeline

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

type script struct {
	tl  *Timeline
	out []string
}

func newScript() *script { return &script{tl: New(t0)} }

func (s *script) emit(ev *tcp.Event) {
	line := fmt.Sprintf("%d %s %s->%s owner=%d/%d", ev.Cookie, ev.Kind, ev.Old, ev.New, ev.Owner.PID, ev.Owner.FD)
	if ev.InOld >= 0 && ev.Kind == tcp.KindTransition {
		line += " in=" + ev.InOld.String()
		if ev.OldBeforeTrace {
			line += "+"
		}
	}
	if ev.Source != tcp.SourceKernel {
		line += " src=" + ev.Source.String()
	}
	if ev.TimeWaitLeft > 0 {
		line += " left=" + ev.TimeWaitLeft.String()
	}
	if ev.Flags&tcp.FlagKilled != 0 {
		line += " killed"
	}
	s.out = append(s.out, line)
}

func (s *script) tr(cookie uint64, at time.Duration, old, new tcp.State, owner tcp.Owner) {
	s.tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: cookie, Time: t0.Add(at), Old: old, New: new, Owner: owner, FD: -1}, s.emit)
}

func (s *script) tw(cookie uint64, at time.Duration, seen bool, sub tcp.State, expiry time.Duration) {
	s.tl.ApplyTimeWait(TimeWaitSighting{Cookie: cookie, At: t0.Add(at), Seen: seen, Substate: sub, Expiry: t0.Add(expiry)}, s.emit)
}

func (s *script) checks(at time.Duration) []uint64 {
	var out []uint64
	s.tl.TimeWaitChecks(t0.Add(at), func(c uint64) { out = append(out, c) })
	return out
}

func (s *script) want(t *testing.T, lines ...string) {
	t.Helper()
	if got, want := strings.Join(s.out, "\n"), strings.Join(lines, "\n"); got != want {
		t.Errorf("emitted:\n%s\nwant:\n%s", got, want)
	}
	s.out = nil
}

var (
	client = tcp.Owner{PID: 10, FD: 3, Via: tcp.OwnerConnect}
	server = tcp.Owner{PID: 20, FD: -1, Via: tcp.OwnerListener}
)

func TestTimelineTimeWait(t *testing.T) {
	s := newScript()
	s.tr(1, 0, tcp.StateClose, tcp.StateSynSent, client)
	s.tr(1, time.Millisecond, tcp.StateSynSent, tcp.StateEstablished, tcp.Owner{})
	s.tr(1, time.Second, tcp.StateEstablished, tcp.StateFinWait1, tcp.Owner{})
	s.tr(1, 2*time.Second, tcp.StateFinWait1, tcp.StateFinWait2, tcp.Owner{})
	s.want(t,
		"1 transition CLOSE->SYN_SENT owner=10/3",
		"1 transition SYN_SENT->ESTABLISHED owner=10/3 in=1ms",
		"1 transition ESTABLISHED->FIN_WAIT1 owner=10/3 in=999ms",
		"1 transition FIN_WAIT1->FIN_WAIT2 owner=10/3 in=1s")

	// The CLOSE that is really the handover to a timewait socket is held...
	s.tr(1, 3*time.Second, tcp.StateFinWait2, tcp.StateClose, tcp.Owner{})
	s.want(t)
	if got := s.checks(3 * time.Second); len(got) != 1 || got[0] != 1 {
		t.Fatalf("checks = %v, want [1]", got)
	}
	// ...and shown as TIME_WAIT once a walk finds the timewait socket.
	s.tw(1, 3100*time.Millisecond, true, tcp.StateTimeWait, 63*time.Second)
	s.want(t, "1 transition FIN_WAIT2->TIME_WAIT owner=10/3 in=1s src=timewait left=1m0s")
	if got := s.checks(62 * time.Second); len(got) != 0 {
		t.Errorf("checked before the timer is due: %v", got)
	}
	// Still there just after the nominal expiry: the timer fires a little late.
	s.tw(1, 63*time.Second, true, tcp.StateTimeWait, 63*time.Second)
	s.want(t)
	if got := s.checks(63*time.Second + timeWaitOverdueRecheck); len(got) != 1 {
		t.Errorf("an overdue timewait socket is not checked again: %v", got)
	}
	s.tw(1, 63500*time.Millisecond, false, 0, 0)
	s.want(t, "1 transition TIME_WAIT->CLOSE owner=10/3 in=1m0.5s src=timewait")
	if s.tl.Len() != 0 {
		t.Errorf("%d connections left after the end of TIME_WAIT", s.tl.Len())
	}
}

// With the kernel reporting timers that fire, a walk looks only for timewait
// sockets still there a grace period after their timer was due.
func TestTimelineTimeWaitGrace(t *testing.T) {
	s := newScript()
	s.tl.TimeWaitGrace = 6 * time.Second
	for cookie := uint64(1); cookie <= 3; cookie++ {
		s.tr(cookie, 0, tcp.StateFinWait2, tcp.StateClose, client)
		s.tw(cookie, 0, true, tcp.StateTimeWait, time.Duration(60+cookie)*time.Second)
	}
	s.out = nil
	if got := s.checks(64 * time.Second); len(got) != 0 {
		t.Errorf("checked before the grace ran out: %v", got)
	}
	// The timer of 2 fires: it ends, and no walk looks for it.
	s.tw(2, 62500*time.Millisecond, false, 0, 0)
	s.want(t, "2 transition TIME_WAIT->CLOSE owner=10/3 in=1m2.5s src=timewait")
	if got := s.checks(67 * time.Second); fmt.Sprint(got) != "[1]" {
		t.Errorf("checks at 67 s = %v, want [1]", got)
	}
	if got := s.checks(70 * time.Second); fmt.Sprint(got) != "[3]" {
		t.Errorf("checks at 70 s = %v, want [3]", got)
	}
}

// A timeline nobody walks for (replay, report) keeps its due checks bounded.
func TestTimelineChecksBounded(t *testing.T) {
	s := newScript()
	for cookie := uint64(1); cookie <= 20000; cookie++ {
		s.tr(cookie, 0, tcp.StateFinWait2, tcp.StateClose, client)
		s.tw(cookie, 0, true, tcp.StateTimeWait, time.Minute)
		s.tw(cookie, time.Minute, false, 0, 0)
	}
	if n := len(s.tl.checks); n > 1024+1 {
		t.Errorf("%d checks kept for %d connections", n, s.tl.Len())
	}
}

func TestCheckQueueOrder(t *testing.T) {
	var q checkQueue
	for _, at := range []int64{50, 10, 40, 10, 30, 20, 60, 0} {
		q.push(timeWaitCheck{at: at})
	}
	var got []int64
	for len(q) > 0 {
		got = append(got, q.pop().at)
	}
	if fmt.Sprint(got) != "[0 10 10 20 30 40 50 60]" {
		t.Errorf("popped %v, want them in order", got)
	}
}

func TestTimelineRealCloseIsReleased(t *testing.T) {
	s := newScript()
	s.tr(2, 0, tcp.StateFinWait2, tcp.StateClose, client)
	s.tw(2, 100*time.Millisecond, false, 0, 0)
	s.want(t, "2 transition FIN_WAIT2->CLOSE owner=10/3")
	if s.tl.Len() != 0 {
		t.Error("closed connection still tracked")
	}
	// A reset FIN_WAIT2 is not a TIME_WAIT candidate.
	s.tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 3, Time: t0, Old: tcp.StateFinWait2, New: tcp.StateClose, Flags: tcp.FlagError, Errno: 104}, s.emit)
	s.want(t, "3 transition FIN_WAIT2->CLOSE owner=0/0")
}

func TestTimelineOrphanFinWait2(t *testing.T) {
	s := newScript()
	s.tr(4, 0, tcp.StateFinWait1, tcp.StateFinWait2, client)
	s.tr(4, time.Millisecond, tcp.StateFinWait2, tcp.StateClose, tcp.Owner{})
	// An orphan handed to a timewait socket stays in FIN_WAIT2: nothing to show.
	s.tw(4, 50*time.Millisecond, true, tcp.StateFinWait2, 60*time.Second)
	s.want(t, "4 transition FIN_WAIT1->FIN_WAIT2 owner=10/3")
	if c := s.tl.Conn(4); c == nil || c.State != tcp.StateFinWait2 {
		t.Fatalf("orphan state = %+v, want FIN_WAIT2", c)
	}
	if got := s.checks(500 * time.Millisecond); len(got) != 0 {
		t.Errorf("orphan checked again too soon: %v", got)
	}
	if got := s.checks(1100 * time.Millisecond); len(got) != 1 {
		t.Fatalf("orphan not checked again after a second: %v", got)
	}
	// The peer's FIN restarted the timer at TIME_WAIT's length: that dates
	// the entry, and the time left counts from it (the line's time plus
	// what is left is when the timer fires, as on every line).
	s.tw(4, 5*time.Second, true, tcp.StateTimeWait, 64*time.Second)
	s.want(t, "4 transition FIN_WAIT2->TIME_WAIT owner=10/3 in=4s src=timewait left=1m0s")
}

func TestTimelineAcceptAfterCloseWait(t *testing.T) {
	s := newScript()
	s.tr(5, 0, tcp.StateListen, tcp.StateSynRecv, server)
	s.tr(5, time.Millisecond, tcp.StateSynRecv, tcp.StateEstablished, tcp.Owner{})
	s.tr(5, 2*time.Millisecond, tcp.StateEstablished, tcp.StateCloseWait, tcp.Owner{})
	// accept() names the fd after the fact; later transitions carry it.
	s.tl.Apply(&tcp.Event{Kind: tcp.KindAccept, Cookie: 5, Time: t0.Add(time.Second), Owner: tcp.Owner{PID: 20, FD: 7, Via: tcp.OwnerAccept}, FD: 7}, s.emit)
	s.tl.Apply(&tcp.Event{Kind: tcp.KindCloseFD, Cookie: 5, Time: t0.Add(2 * time.Second), Running: tcp.Task{PID: 20}, FD: 7, Owner: tcp.Owner{FD: -1}}, s.emit)
	s.tr(5, 2*time.Second, tcp.StateCloseWait, tcp.StateLastAck, tcp.Owner{})
	s.want(t,
		"5 transition LISTEN->SYN_RECV owner=20/-1",
		"5 transition SYN_RECV->ESTABLISHED owner=20/-1 in=1ms",
		"5 transition ESTABLISHED->CLOSE_WAIT owner=20/-1 in=1ms",
		"5 accept CLOSE_WAIT->CLOSE_WAIT owner=20/7",
		"5 close CLOSE_WAIT->CLOSE_WAIT owner=20/7",
		"5 transition CLOSE_WAIT->LAST_ACK owner=20/7 in=1.998s")
	if c := s.tl.Conn(5); !c.Owner.Closed {
		t.Error("the owner's close() of its fd was not recorded")
	}
}

func TestTimelineExisting(t *testing.T) {
	s := newScript()
	holder := tcp.Owner{PID: 30, FD: 4, Via: tcp.OwnerSeed}
	s.tl.Apply(&tcp.Event{Kind: tcp.KindExisting, Cookie: 6, Time: t0, New: tcp.StateEstablished, Owner: holder, Source: tcp.SourceSeed}, s.emit)
	s.tr(6, 5*time.Second, tcp.StateEstablished, tcp.StateCloseWait, tcp.Owner{})
	// Seeding does not overwrite what was seen since tracing started.
	s.tl.Apply(&tcp.Event{Kind: tcp.KindExisting, Cookie: 6, Time: t0, New: tcp.StateEstablished, Owner: holder, Source: tcp.SourceSeed}, s.emit)
	s.want(t,
		"6 existing ESTABLISHED->ESTABLISHED owner=30/4 src=seed",
		"6 transition ESTABLISHED->CLOSE_WAIT owner=30/4 in=5s+")
}

func TestTimelineReconcile(t *testing.T) {
	s := newScript()
	s.tr(7, 0, tcp.StateClose, tcp.StateSynSent, client)
	s.tr(7, time.Millisecond, tcp.StateSynSent, tcp.StateEstablished, tcp.Owner{})
	s.tr(8, 0, tcp.StateClose, tcp.StateSynSent, client)
	s.tr(8, time.Millisecond, tcp.StateSynSent, tcp.StateEstablished, tcp.Owner{})
	s.tr(9, 0, tcp.StateClose, tcp.StateSynSent, client)
	s.tr(9, 10*time.Second, tcp.StateSynSent, tcp.StateEstablished, tcp.Owner{})
	s.out = nil
	local := netip.MustParseAddrPort("127.0.0.1:5000")
	table := []tcp.Socket{
		{Cookie: 7, State: tcp.StateCloseWait, Local: local}, // a missed ESTABLISHED -> CLOSE_WAIT
		{Cookie: 9, State: tcp.StateFinWait1},                // changed after the walk began: not judged
	}
	// Cookie 8 is gone from the table: its close was missed.
	s.tl.Reconcile(&Table{Sockets: table, At: t0.Add(5 * time.Second)}, s.emit)
	s.want(t,
		"7 transition ESTABLISHED->CLOSE_WAIT owner=10/3 in=4.999s src=repair",
		"8 transition ESTABLISHED->CLOSE owner=10/3 in=4.999s src=repair")
}

// TestReconcileOnlyWalkedNamespaces: a connection of a network namespace
// the walk did not list is not judged gone.
func TestReconcileOnlyWalkedNamespaces(t *testing.T) {
	s := newScript()
	for cookie, netns := range map[uint64]uint32{1: 100, 2: 200} {
		s.tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: cookie, NetNS: netns, Time: t0, Old: tcp.StateSynSent,
			New: tcp.StateEstablished, Owner: client, FD: -1}, s.emit)
	}
	s.out = nil
	s.tl.Reconcile(&Table{At: t0.Add(time.Second), NetNS: []uint32{100}}, s.emit)
	s.want(t, "1 transition ESTABLISHED->CLOSE owner=10/3 in=1s src=repair")
	if s.tl.Conn(2) == nil {
		t.Error("the connection of a namespace not walked was dropped")
	}
}

// TestFamilyBeforeAPort: an IPv4 connect's first transition has no local
// port yet; its line keeps the socket's family.
func TestFamilyBeforeAPort(t *testing.T) {
	tl := New(time.Unix(100, 0))
	for _, local := range []string{"0.0.0.0:0", "[::]:0"} {
		in := Input{Kind: InputEvent, Event: tcp.Event{Kind: tcp.KindTransition, Time: time.Unix(101, 0), Cookie: 9,
			Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort("127.0.0.1:80"), Old: tcp.StateClose, New: tcp.StateSynSent}}
		if local == "[::]:0" {
			in.Event.Cookie, in.Event.Remote = 10, netip.MustParseAddrPort("[::1]:80")
		}
		var got *tcp.Event
		tl.Feed(&in, func(ev *tcp.Event) { got = ev })
		if want := tcp.FamilyOf(netip.MustParseAddrPort(local)); got == nil || got.Family() != want {
			t.Errorf("%s: got %+v, want family %d", local, got, want)
		}
	}
}

// TestTimeWaitTakenOver: a new socket that takes over a timewait socket's
// four-tuple (connect() with tcp_tw_reuse, a SYN reopening a server's) ends
// that TIME_WAIT then; a connect() refused the tuple ends nothing.
func TestTimeWaitTakenOver(t *testing.T) {
	s := newScript()
	local, remote := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:80")
	on := func(cookie uint64, at time.Duration, old, new tcp.State) {
		s.tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: cookie, Time: t0.Add(at), Old: old, New: new,
			Local: local, Remote: remote, Owner: client, FD: -1}, s.emit)
	}
	on(1, 0, tcp.StateEstablished, tcp.StateFinWait1)
	on(1, time.Millisecond, tcp.StateFinWait1, tcp.StateFinWait2)
	on(1, 2*time.Millisecond, tcp.StateFinWait2, tcp.StateClose)
	s.tw(1, 2*time.Millisecond, true, tcp.StateTimeWait, time.Minute)
	s.out = nil
	// Refused: the SYN_SENT -> CLOSE of a connect() that could not have the tuple.
	on(2, 2*time.Second, tcp.StateSynSent, tcp.StateClose)
	s.want(t, "2 transition SYN_SENT->CLOSE owner=10/3")
	on(3, 5*time.Second, tcp.StateSynSent, tcp.StateEstablished)
	s.want(t,
		"1 transition TIME_WAIT->CLOSE owner=10/3 in=4.998s src=timewait killed",
		"3 transition SYN_SENT->ESTABLISHED owner=10/3")
	if s.tl.Conn(1) != nil || len(s.tl.tuples) != 0 {
		t.Errorf("the ended connection is still tracked (%d in the index)", len(s.tl.tuples))
	}
	// A timer that fires later for it shows nothing more.
	s.tw(1, time.Minute, false, 0, 0)
	s.want(t)
}

// TestTimeWaitKilled: the kernel killed a timewait socket before its timer
// fired; the kill also tells what the socket was until then, which no walk
// may have seen yet.
func TestTimeWaitKilled(t *testing.T) {
	s := newScript()
	killed := func(cookie uint64, at time.Duration, sub tcp.State, expiry time.Duration) {
		s.tl.ApplyTimeWait(TimeWaitSighting{Cookie: cookie, At: t0.Add(at), Substate: sub, Expiry: t0.Add(expiry), Killed: true}, s.emit)
	}
	// Seen in TIME_WAIT, killed 3 s in.
	s.tr(1, 0, tcp.StateFinWait2, tcp.StateClose, client)
	s.tw(1, 0, true, tcp.StateTimeWait, time.Minute)
	s.out = nil
	killed(1, 3*time.Second, tcp.StateTimeWait, time.Minute)
	s.want(t, "1 transition TIME_WAIT->CLOSE owner=10/3 in=3s src=timewait killed")
	// An orphan waiting in FIN_WAIT2 got the peer's FIN at 2 s (its timer
	// restarted then), unseen, and was killed at 3 s.
	s.tr(2, 0, tcp.StateFinWait1, tcp.StateFinWait2, client)
	s.tr(2, time.Millisecond, tcp.StateFinWait2, tcp.StateClose, tcp.Owner{})
	s.tw(2, time.Millisecond, true, tcp.StateFinWait2, time.Minute)
	s.out = nil
	killed(2, 3*time.Second, tcp.StateTimeWait, 62*time.Second)
	s.want(t,
		"2 transition FIN_WAIT2->TIME_WAIT owner=10/3 in=2s src=timewait left=1m0s",
		"2 transition TIME_WAIT->CLOSE owner=10/3 in=1s src=timewait killed")
	// An orphan killed in FIN_WAIT2.
	s.tr(3, 0, tcp.StateFinWait1, tcp.StateFinWait2, client)
	s.tr(3, time.Millisecond, tcp.StateFinWait2, tcp.StateClose, tcp.Owner{})
	s.tw(3, time.Millisecond, true, tcp.StateFinWait2, time.Minute)
	s.out = nil
	killed(3, 3*time.Second, tcp.StateFinWait2, time.Minute)
	s.want(t, "3 transition FIN_WAIT2->CLOSE owner=10/3 in=3s src=timewait killed")
	// A CLOSE held because no timewait socket was found at once: the kill
	// says there was one.
	s.tr(4, 0, tcp.StateFinWait2, tcp.StateClose, client)
	killed(4, 2*time.Second, tcp.StateTimeWait, 58*time.Second)
	s.want(t,
		"4 transition FIN_WAIT2->TIME_WAIT owner=10/3 src=timewait left=58s",
		"4 transition TIME_WAIT->CLOSE owner=10/3 in=2s src=timewait killed")
	if s.tl.Len() != 0 {
		t.Errorf("%d killed connections still tracked", s.tl.Len())
	}
}

// TestExitClosesFDs: a process that exits holding sockets closes them
// without close(): each shows a close line, once.
func TestExitClosesFDs(t *testing.T) {
	s := newScript()
	s.tr(1, 0, tcp.StateClose, tcp.StateSynSent, client)
	s.tr(1, time.Millisecond, tcp.StateSynSent, tcp.StateEstablished, tcp.Owner{})
	s.tr(2, 0, tcp.StateClose, tcp.StateSynSent, tcp.Owner{PID: 11, FD: 4, Via: tcp.OwnerConnect})
	s.out = nil
	exit := &tcp.Event{Kind: tcp.KindExit, Time: t0.Add(time.Second), Running: tcp.Task{PID: 10, TID: 10, Comm: "cli"}}
	s.tl.Apply(exit, s.emit)
	s.want(t, "1 close ESTABLISHED->ESTABLISHED owner=10/3 src=exit")
	if c := s.tl.Conn(1); c == nil || !c.Owner.Closed {
		t.Errorf("after the exit: %+v, want its owner's fd closed", c)
	}
	s.tl.Apply(exit, s.emit)
	s.want(t)
}
