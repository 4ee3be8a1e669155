//go:build linux

package tracer

import (
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// BenchmarkDecode is the cost of turning one ring-buffer record into an Event.
func BenchmarkDecode(b *testing.B) {
	t := &Tracer{comms: make(commCache), clock: newClock()}
	raw := tcptraceEvent{Kind: uint8(tcptraceEventKindEVENT_STATE), TsNs: 1, Cookie: 7, Family: afInet, Sport: 40000, Dport: 80,
		Oldstate: 1, Newstate: 8, Pid: 42, Tid: 42, Owner: tcptraceOwner{Pid: 42, Fd: 5, Source: uint8(OwnerAccept)}}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&raw.Comm[0])), 16), "server")
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&raw.Owner.Comm[0])), 16), "server")
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&raw)), unsafe.Sizeof(raw))
	var ev Event
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !t.decode(buf, &ev) {
			b.Fatal("not decoded")
		}
	}
}

// lifecycle is the events of one client connection to a local server, in order.
func lifecycle(i int, at time.Time) []Event {
	cookie, srvCookie := uint64(2*i+1), uint64(2*i+2)
	cli := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(32768+i%28000))
	srv := netip.MustParseAddrPort("127.0.0.1:8080")
	client := Owner{PID: 10, Comm: "client", FD: 5, Via: OwnerConnect}
	server := Owner{PID: 20, Comm: "server", FD: -1, Via: OwnerListener}
	tr := func(c uint64, d time.Duration, l, r netip.AddrPort, old, new State, o Owner) Event {
		return Event{Kind: KindTransition, Cookie: c, Time: at.Add(d), Local: l, Remote: r, Old: old, New: new, Owner: o, FD: -1}
	}
	return []Event{
		tr(cookie, 0, cli, srv, StateClose, StateSynSent, client),
		tr(cookie, 1, cli, srv, StateSynSent, StateEstablished, Owner{}),
		tr(srvCookie, 2, srv, cli, StateListen, StateSynRecv, server),
		tr(srvCookie, 3, srv, cli, StateSynRecv, StateEstablished, Owner{}),
		tr(cookie, 4, cli, srv, StateEstablished, StateFinWait1, Owner{}),
		tr(srvCookie, 5, srv, cli, StateEstablished, StateCloseWait, Owner{}),
		tr(cookie, 6, cli, srv, StateFinWait1, StateFinWait2, Owner{}),
		tr(srvCookie, 7, srv, cli, StateCloseWait, StateLastAck, Owner{}),
		tr(srvCookie, 8, srv, cli, StateLastAck, StateClose, Owner{}),
		tr(cookie, 9, cli, srv, StateFinWait2, StateClose, Owner{}),
	}
}

// BenchmarkTimeline is the timeline's cost per event for a churn of short
// connections, TIME_WAIT confirmation included.
func BenchmarkTimeline(b *testing.B) {
	tl := NewTimeline(t0)
	emit := func(*Event) {}
	const conns = 1000
	var evs [][]Event
	for i := 0; i < conns; i++ {
		evs = append(evs, lifecycle(i, t0))
	}
	// One Event for all, as the decoder does.
	var ev Event
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
			tl.ApplyTimeWait(TimeWaitSighting{Cookie: cookie, At: t0, Seen: true, Substate: StateTimeWait, Expiry: t0.Add(time.Minute)}, emit)
			tl.ApplyTimeWait(TimeWaitSighting{Cookie: cookie, At: t0.Add(time.Minute), Seen: false}, emit)
			n += len(evs[i]) + 2
		}
		// The walks a live tracer makes drain the checks that came due.
		tl.TimeWaitChecks(t0.Add(time.Hour), func(uint64) {})
	}
}

// BenchmarkLeakReport is the leak report's cost per socket of the table.
func BenchmarkLeakReport(b *testing.B) {
	tl := NewTimeline(t0)
	var table []SocketSnapshot
	for i := 0; i < 10000; i++ {
		st := StateEstablished
		if i%10 == 0 {
			st = StateCloseWait
		}
		table = append(table, SocketSnapshot{Cookie: uint64(i), State: st,
			Local:   netip.MustParseAddrPort("10.0.0.1:8080"),
			Remote:  netip.AddrPortFrom(netip.MustParseAddr("10.0.0.9"), uint16(1024+i)),
			Holders: []Owner{{PID: 42, Comm: "api", FD: int32(10 + i)}}, LastReceived: t0})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		BuildLeakReport(table, tl, HostTCP{PortRange: [2]int{32768, 60999}}, t0.Add(time.Minute), 30*time.Second, nil)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(table)), "ns/socket")
}

// BenchmarkTrackedConnMemory is the heap the timeline keeps per open
// connection (B/conn), for a million connections.
func BenchmarkTrackedConnMemory(b *testing.B) {
	const conns = 1_000_000
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tl := NewTimeline(t0)
		var ev Event
		for c := 0; c < conns; c++ {
			ev = Event{Kind: KindTransition, Cookie: uint64(c + 1), Time: t0, Old: StateSynSent, New: StateEstablished,
				Local:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(c >> 16), byte(c >> 8)}), uint16(c)),
				Remote: netip.MustParseAddrPort("10.1.0.1:443"), Owner: Owner{PID: 42, Comm: "api", FD: int32(c), Via: OwnerConnect}}
			tl.Apply(&ev, func(*Event) {})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/conns, "B/conn")
		runtime.KeepAlive(tl)
	}
}
