package timeline

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// lifecycle is the events of one client connection to a local server, in order.
func lifecycle(i int, at time.Time) []tcp.Event {
	cookie, srvCookie := uint64(2*i+1), uint64(2*i+2)
	cli := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(32768+i%28000))
	srv := netip.MustParseAddrPort("127.0.0.1:8080")
	client := tcp.Owner{PID: 10, Comm: "client", FD: 5, Via: tcp.OwnerConnect}
	server := tcp.Owner{PID: 20, Comm: "server", FD: -1, Via: tcp.OwnerListener}
	tr := func(c uint64, d time.Duration, l, r netip.AddrPort, old, new tcp.State, o tcp.Owner) tcp.Event {
		return tcp.Event{Kind: tcp.KindTransition, Cookie: c, Time: at.Add(d), Local: l, Remote: r, Old: old, New: new, Owner: o, FD: -1}
	}
	return []tcp.Event{
		tr(cookie, 0, cli, srv, tcp.StateClose, tcp.StateSynSent, client),
		tr(cookie, 1, cli, srv, tcp.StateSynSent, tcp.StateEstablished, tcp.Owner{}),
		tr(srvCookie, 2, srv, cli, tcp.StateListen, tcp.StateSynRecv, server),
		tr(srvCookie, 3, srv, cli, tcp.StateSynRecv, tcp.StateEstablished, tcp.Owner{}),
		tr(cookie, 4, cli, srv, tcp.StateEstablished, tcp.StateFinWait1, tcp.Owner{}),
		tr(srvCookie, 5, srv, cli, tcp.StateEstablished, tcp.StateCloseWait, tcp.Owner{}),
		tr(cookie, 6, cli, srv, tcp.StateFinWait1, tcp.StateFinWait2, tcp.Owner{}),
		tr(srvCookie, 7, srv, cli, tcp.StateCloseWait, tcp.StateLastAck, tcp.Owner{}),
		tr(srvCookie, 8, srv, cli, tcp.StateLastAck, tcp.StateClose, tcp.Owner{}),
		tr(cookie, 9, cli, srv, tcp.StateFinWait2, tcp.StateClose, tcp.Owner{}),
	}
}

// BenchmarkTimeline is the timeline's cost per event for a churn of short
// connections, TIME_WAIT confirmation included.
func BenchmarkTimeline(b *testing.B) {
	tl := New(t0)
	emit := func(*tcp.Event) {}
	const conns = 1000
	var evs [][]tcp.Event
	for i := 0; i < conns; i++ {
		evs = append(evs, lifecycle(i, t0))
	}
	// One Event for all, as the decoder does.
	var ev tcp.Event
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for n < b.N {
		for i := 0; i < conns && n < b.N; i++ {
			for j := range evs[i] {
				ev = evs[i][j]
				tl.Apply(&ev, emit)
			}
			cookie := uint64(2*i + 1)
			tl.ApplyTimeWait(TimeWaitSighting{Cookie: cookie, At: t0, Seen: true, Substate: tcp.StateTimeWait, Expiry: t0.Add(time.Minute)}, emit)
			tl.ApplyTimeWait(TimeWaitSighting{Cookie: cookie, At: t0.Add(time.Minute), Seen: false}, emit)
			n += len(evs[i]) + 2
		}
		// The walks a live tracer makes drain the checks that came due.
		tl.TimeWaitChecks(t0.Add(time.Hour), func(uint64) {})
	}
}

// BenchmarkTrackedConnMemory is the heap the timeline keeps per open
// connection (B/conn), for a million connections.
func BenchmarkTrackedConnMemory(b *testing.B) {
	const conns = 1_000_000
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tl := New(t0)
		var ev tcp.Event
		for c := 0; c < conns; c++ {
			ev = tcp.Event{Kind: tcp.KindTransition, Cookie: uint64(c + 1), Time: t0, Old: tcp.StateSynSent, New: tcp.StateEstablished,
				Local:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(c >> 16), byte(c >> 8)}), uint16(c)),
				Remote: netip.MustParseAddrPort("10.1.0.1:443"), Owner: tcp.Owner{PID: 42, Comm: "api", FD: int32(c), Via: tcp.OwnerConnect}}
			tl.Apply(&ev, func(*tcp.Event) {})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/conns, "B/conn")
		runtime.KeepAlive(tl)
	}
}

// BenchmarkForkOfABusyProcess is the cost of a fork by a process holding
// 10,000 connections (Redis saving, a server spawning a helper) and of the
// child's exit: the child holds a copy of each until it goes (ns per fork).
func BenchmarkForkOfABusyProcess(b *testing.B) {
	const conns = 10_000
	tl := New(t0)
	var ev tcp.Event
	for c := 0; c < conns; c++ {
		ev = tcp.Event{Kind: tcp.KindTransition, Cookie: uint64(c + 1), Time: t0, Old: tcp.StateClose, New: tcp.StateSynSent,
			Owner: tcp.Owner{PID: 42, Comm: "api", FD: int32(c + 3), Via: tcp.OwnerConnect}}
		tl.Apply(&ev, func(*tcp.Event) {})
	}
	emit := func(*tcp.Event) {}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		child := uint32(1000 + i)
		ev = tcp.Event{Kind: tcp.KindFork, Time: t0, Running: tcp.Task{PID: 42}, Owner: tcp.Owner{PID: child, Comm: "api", FD: -1}}
		tl.Apply(&ev, emit)
		ev = tcp.Event{Kind: tcp.KindExit, Time: t0, Running: tcp.Task{PID: child}}
		tl.Apply(&ev, emit)
	}
}
