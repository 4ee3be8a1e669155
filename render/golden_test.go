package render

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/internal/testenv"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// The adapters: the only lines that changed when the renderers moved here
// from cmd/tcptrace, where the goldens were made.
func gText(ev *tcp.Event) string { return string(AppendText(nil, ev)) }
func gJSON(ev *tcp.Event) string { return string(AppendJSON(nil, ev)) }
func gHeader(w io.Writer)        { NewPrinter(w, false).Header() }
func gSummary(w io.Writer, evs []tcp.Event, st timeline.Stats, d time.Duration) {
	var s Summary
	for i := range evs {
		s.Add(&evs[i])
	}
	s.Print(w, st, d)
}
func gLost(w io.Writer, st timeline.Stats) { Lost(w, st) }
func gReport(w io.Writer, rep *analysis.LeakReport, st timeline.Stats) {
	LeakReport(w, "tcptrace report TRACE", rep, st)
}
func gReportJSON(rep *analysis.LeakReport) []byte { return JSON(rep) }
func gTimelines(w io.Writer, order []uint64, h map[uint64][]tcp.Event, tl *timeline.Timeline, asOf time.Time, asJSON bool) {
	Timelines(w, order, h, tl, asOf, asJSON)
}
func gNoColor() { SetColor("never") }
func gDurations() []string {
	var out []string
	for _, d := range []time.Duration{0, 850 * time.Microsecond, 12 * time.Millisecond, 1234 * time.Millisecond, 185 * time.Second, 121 * time.Minute} {
		out = append(out, Duration(d))
	}
	return append(out, formatAddr(netip.AddrPort{}), formatAddr(netip.MustParseAddrPort("[::ffff:10.0.0.1]:80")))
}

var (
	rt0      = time.Date(2026, 11, 21, 9, 30, 0, 0, time.UTC)
	ctrID    = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	srvAddr  = netip.MustParseAddrPort("10.0.0.1:8080")
	apiOwner = tcp.Owner{PID: 42, Comm: "api", FD: 7, Via: tcp.OwnerAccept, Cgroup: 9, Container: ctrID}
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// goldenEvents are one of each kind of line the stream shows.
func goldenEvents() []tcp.Event {
	ev := func(kind tcp.Kind, at time.Duration, local, remote netip.AddrPort, old, new tcp.State, inOld time.Duration, owner tcp.Owner) tcp.Event {
		return tcp.Event{Kind: kind, Time: rt0.Add(at), Cookie: uint64(at / time.Millisecond), Inode: 1000, NetNS: 4026531840,
			Local: local, Remote: remote, Old: old, New: new, InOld: inOld, Owner: owner, FD: -1,
			Running: tcp.Task{PID: owner.PID, TID: owner.PID + 1, Comm: owner.Comm}}
	}
	curl := tcp.Owner{PID: 77, Comm: "curl", FD: 3, Via: tcp.OwnerConnect}
	evs := []tcp.Event{
		ev(tcp.KindTransition, 1, srvAddr, ap("10.0.0.9:40001"), tcp.StateEstablished, tcp.StateCloseWait, 1500*time.Millisecond, apiOwner),
		ev(tcp.KindTransition, 2*time.Microsecond, ap("[2001:db8::1]:443"), ap("[2001:db8::2]:51000"), tcp.StateEstablished, tcp.StateFinWait1, 185*time.Second, tcp.Owner{FD: -1}),
		ev(tcp.KindTransition, 3*time.Millisecond, ap("127.0.0.1:40000"), ap("127.0.0.1:80"), tcp.StateFinWait2, tcp.StateTimeWait, 2*time.Second, curl),
		ev(tcp.KindTransition, 4*time.Millisecond, ap("10.0.0.1:50000"), ap("10.0.0.2:443"), tcp.StateSynSent, tcp.StateClose, 850*time.Microsecond, curl),
		ev(tcp.KindAccept, 5*time.Millisecond, srvAddr, ap("10.0.0.9:40002"), tcp.StateEstablished, tcp.StateEstablished, 100*time.Microsecond, apiOwner),
		ev(tcp.KindCloseFD, 6*time.Millisecond, srvAddr, ap("10.0.0.9:40002"), tcp.StateCloseWait, tcp.StateCloseWait, -1, apiOwner),
		ev(tcp.KindExisting, 7*time.Millisecond, srvAddr, netip.AddrPort{}, tcp.StateListen, tcp.StateListen, -1, tcp.Owner{PID: 42, Comm: "api", FD: 5, Via: tcp.OwnerSeed}),
		ev(tcp.KindReset, 8*time.Millisecond, srvAddr, ap("10.0.0.7:41000"), tcp.StateEstablished, tcp.StateEstablished, -1, apiOwner),
		ev(tcp.KindReset, 9*time.Millisecond, srvAddr, ap("10.0.0.7:41001"), tcp.StateEstablished, tcp.StateEstablished, -1, apiOwner),
		ev(tcp.KindReset, 10*time.Millisecond, ap("10.0.0.1:50001"), ap("10.0.0.2:443"), tcp.StateSynSent, tcp.StateSynSent, -1, tcp.Owner{FD: -1}),
		ev(tcp.KindBindFail, 11*time.Millisecond, srvAddr, netip.AddrPort{}, tcp.StateClose, tcp.StateClose, -1, tcp.Owner{PID: 5000, Comm: "api", FD: 3}),
		ev(tcp.KindBindFail, 12*time.Millisecond, ap("[::]:9090"), netip.AddrPort{}, tcp.StateClose, tcp.StateClose, -1, tcp.Owner{PID: 5001, Comm: `we"ird ü`, FD: 4}),
		ev(tcp.KindTransition, 13*time.Millisecond, ap("[::ffff:10.0.0.1]:8080"), ap("[::ffff:10.0.0.3]:1234"), tcp.StateCloseWait, tcp.StateLastAck, 121*time.Minute, tcp.Owner{PID: 9, Comm: "a-very-long-nam", FD: 1234, Via: tcp.OwnerListener}),
		ev(tcp.KindTransition, 14*time.Millisecond, srvAddr, ap("10.0.0.9:40003"), tcp.StateEstablished, tcp.StateCloseWait, -1, apiOwner),
		ev(tcp.KindNewFD, 15*time.Millisecond, srvAddr, ap("10.0.0.9:40004"), tcp.StateEstablished, tcp.StateEstablished, -1, tcp.Owner{PID: 43, Comm: "api-worker", FD: 9, Via: tcp.OwnerReceive}),
		ev(tcp.KindCloseFD, 16*time.Millisecond, srvAddr, ap("10.0.0.9:40004"), tcp.StateEstablished, tcp.StateEstablished, -1, apiOwner),
		ev(tcp.KindCloseFD, 17*time.Millisecond, srvAddr, ap("10.0.0.9:40005"), tcp.StateCloseWait, tcp.StateCloseWait, -1, tcp.Owner{PID: 44, Comm: "sh", FD: 4, Via: tcp.OwnerFork, Closed: true}),
		ev(tcp.KindTransition, 18*time.Millisecond, srvAddr, ap("10.0.0.66:50000"), tcp.StateListen, tcp.StateSynRecv, -1, tcp.Owner{PID: 42, Comm: "api", FD: -1, Via: tcp.OwnerListener}),
		ev(tcp.KindTransition, 19*time.Millisecond, srvAddr, ap("10.0.0.66:50000"), tcp.StateSynRecv, tcp.StateClose, 63*time.Second, tcp.Owner{PID: 42, Comm: "api", FD: -1, Via: tcp.OwnerListener}),
		ev(tcp.KindTransition, 20*time.Millisecond, srvAddr, ap("10.0.0.66:50001"), tcp.StateSynRecv, tcp.StateClose, 3*time.Second, tcp.Owner{PID: 42, Comm: "api", FD: -1, Via: tcp.OwnerListener}),
	}
	evs[1].OldBeforeTrace = true
	evs[2].TimeWaitLeft, evs[2].Source = 58*time.Second, tcp.SourceTimeWait
	evs[3].Flags, evs[3].Errno, evs[3].Source = tcp.FlagError|tcp.FlagOrphan, 111, tcp.SourceRepair
	evs[4].FD = 7
	evs[5].FD, evs[5].Owner.Closed = 7, true
	evs[7].ResetSent, evs[7].ResetReason = true, "TCP_ABORT_ON_CLOSE"
	evs[8].ResetSent = true
	evs[10].ReuseAddr = true
	evs[10].PortHolders = []tcp.Socket{{Local: srvAddr, State: tcp.StateListen}, {Local: srvAddr, State: tcp.StateTimeWait}}
	evs[12].Source = tcp.SourceSeed
	evs[13].Sharers = []tcp.Owner{{PID: 43, Comm: "api-worker", FD: 9, Via: tcp.OwnerFork}, {PID: 44, Comm: "api-worker", FD: 9, Via: tcp.OwnerFork}}
	evs[14].FD, evs[14].Sharers = 9, []tcp.Owner{apiOwner}
	evs[15].FD, evs[15].Owner.Closed = 7, true
	evs[15].Sharers = []tcp.Owner{{PID: 43, Comm: "api-worker", FD: 9, Via: tcp.OwnerReceive}}
	evs[16].FD, evs[16].Source = 4, tcp.SourceExec
	evs[17].Source, evs[17].SynAcks = tcp.SourceSynAck, 1
	evs[18].Source, evs[18].SynAcks, evs[18].Flags = tcp.SourceSynAck, 6, tcp.FlagDropped
	evs[19].Source = tcp.SourceSynAck
	return evs
}

// reportFixture is the timeline and socket table goldenReport builds.
type reportFixture struct {
	tl    *timeline.Timeline
	now   time.Time
	table []tcp.Socket
}

func nop(*tcp.Event) {}

// goldenReport is a leak report with every section and most of their cases.
func goldenReport() analysis.LeakReport {
	f := &reportFixture{tl: timeline.New(rt0), now: rt0.Add(10 * time.Minute)}
	host := tcp.HostTCP{PortRange: [2]int{40000, 40099}, TwReuse: 2, MaxTwBuckets: 150}
	f.closeWait()
	f.stuck()
	f.timeWait()
	f.aborts()
	origin := func(c *timeline.Conn) []tcp.Frame {
		return []tcp.Frame{{Addr: 0x4a1000, Func: "net.(*TCPListener).Accept", File: "/go/src/net/tcpsock.go", Line: 380},
			{Addr: 0x4b2000, Func: "main.serve", File: "/src/api/main.go", Line: 88}}
	}
	rep := analysis.BuildLeakReport(f.table, f.tl, host, f.now, 30*time.Second, origin)
	rep.OriginsSkipped = 3
	rep.Limits = []string{"no fentry: owners of accepted sockets come from the listener", "no BTF"}
	return rep
}

func (f *reportFixture) closeWait() {
	tl, now := f.tl, f.now
	// CLOSE_WAIT: a server leaking toward 7 clients, in a container.
	for i := 0; i < 12; i++ {
		h := apiOwner
		h.FD = int32(10 + i)
		f.table = append(f.table, tcp.Socket{Cookie: uint64(100 + i), Inode: uint64(5000 + i), State: tcp.StateCloseWait, Local: srvAddr,
			Remote:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(i % 7)}), uint16(41000+i)),
			Holders: []tcp.Owner{h}, LastReceived: now.Add(-time.Duration(i+1) * time.Minute)})
	}
	// One seen entering CLOSE_WAIT, with its origin.
	tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 100, Time: rt0, Old: tcp.StateListen, New: tcp.StateSynRecv, Owner: tcp.Owner{PID: 42, FD: -1, Via: tcp.OwnerListener}}, nop)
	tl.Apply(&tcp.Event{Kind: tcp.KindAccept, Cookie: 100, Time: rt0, FD: 10, Owner: apiOwner, Origin: tcp.Origin{StackID: 1, PID: 42}}, nop)
	tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 100, Time: now.Add(-90 * time.Second), Old: tcp.StateEstablished, New: tcp.StateCloseWait}, nop)
	// A client with one leak, exactly dated, by port; and one held by no fd f.table.
	tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 200, Time: rt0, Old: tcp.StateClose, New: tcp.StateSynSent, Owner: tcp.Owner{PID: 7, Comm: "worker", FD: 3, Via: tcp.OwnerConnect}}, nop)
	tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 200, Time: now.Add(-45 * time.Second), Old: tcp.StateEstablished, New: tcp.StateCloseWait}, nop)
	f.table = append(f.table, tcp.Socket{Cookie: 200, State: tcp.StateCloseWait, Local: ap("10.0.0.1:40500"), Remote: ap("[::ffff:10.0.0.2]:5432")})
	f.table = append(f.table, tcp.Socket{Cookie: 201, State: tcp.StateCloseWait, Local: ap("10.0.0.1:40501"), Remote: ap("10.0.0.2:5432"),
		Holders: []tcp.Owner{{PID: 8, Comm: "cron", FD: 4}}, LastReceived: now.Add(-5 * time.Second)}) // young
}

func (f *reportFixture) stuck() {
	tl, now := f.tl, f.now
	// Stuck closes.
	stuck := func(cookie uint64, st tcp.State, local, remote string, age time.Duration, holders ...tcp.Owner) {
		f.table = append(f.table, tcp.Socket{Cookie: cookie, State: st, Local: ap(local), Remote: ap(remote), Holders: holders, LastReceived: now.Add(-age)})
	}
	stuck(300, tcp.StateFinWait2, "10.0.0.1:40600", "10.0.0.3:80", 2*time.Minute)
	tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 300, Time: rt0, Old: tcp.StateClose, New: tcp.StateSynSent, Owner: tcp.Owner{PID: 7, Comm: "worker", FD: 5, Via: tcp.OwnerConnect}}, nop)
	stuck(301, tcp.StateFinWait2, "10.0.0.1:40601", "10.0.0.3:80", 3*time.Minute, tcp.Owner{PID: 7, Comm: "worker", FD: 6})
	stuck(302, tcp.StateFinWait1, "10.0.0.1:40602", "10.0.0.4:80", 4*time.Minute)
	stuck(303, tcp.StateClosing, "10.0.0.1:40603", "10.0.0.4:80", 5*time.Minute)
	stuck(304, tcp.StateLastAck, "127.0.0.1:6000", "127.0.0.1:40604", 6*time.Minute)
	stuck(305, tcp.StateCloseWait, "127.0.0.1:40604", "127.0.0.1:6000", 2*time.Second, tcp.Owner{PID: 9, Comm: "client", FD: 3})
	stuck(306, tcp.StateFinWait1, "127.0.0.1:6001", "127.0.0.1:40605", 7*time.Minute)
	stuck(307, tcp.StateFinWait2, "127.0.0.1:40605", "127.0.0.1:6001", time.Second)
	for i := 0; i < 8; i++ {
		stuck(uint64(310+i), tcp.StateFinWait1, fmt.Sprintf("10.0.0.1:%d", 40700+i), "10.0.0.5:80", time.Minute)
	}
}

func (f *reportFixture) timeWait() {
	tl, now := f.tl, f.now
	// TIME_WAIT: clients toward three destinations, a server, small ones.
	tw := func(cookie uint64, local, remote netip.AddrPort, closer tcp.Owner, entered time.Duration) {
		if closer.Known() {
			tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: cookie, Time: rt0, Old: tcp.StateClose, New: tcp.StateSynSent, Owner: closer}, nop)
			tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: cookie, Time: now.Add(-entered), Old: tcp.StateFinWait2, New: tcp.StateClose}, nop)
			tl.ApplyTimeWait(timeline.TimeWaitSighting{Cookie: cookie, At: now.Add(-entered), Seen: true, Substate: tcp.StateTimeWait, Expiry: now.Add(time.Minute - entered)}, nop)
		}
		f.table = append(f.table, tcp.Socket{Cookie: cookie, State: tcp.StateTimeWait, Local: local, Remote: remote})
	}
	cookie := uint64(1000)
	for i, dst := range []netip.AddrPort{ap("127.0.0.1:5432"), ap("10.0.0.2:443"), ap("[::ffff:127.0.0.1]:6379")} {
		for j := 0; j < 60-10*i; j++ {
			w := 0 // closers of distinct counts: a tie would sort either way
			for _, from := range []int{5, 15, 30, 50} {
				if j >= from {
					w++
				}
			}
			owner := tcp.Owner{PID: uint32(20 + w), Comm: fmt.Sprintf("w%d", w), FD: 3, Via: tcp.OwnerConnect}
			tw(cookie, netip.AddrPortFrom(dst.Addr(), uint16(40000+j)), dst, owner, time.Duration(j)*time.Second)
			cookie++
		}
	}
	for j := 0; j < 12; j++ {
		tw(cookie, srvAddr, netip.AddrPortFrom(netip.MustParseAddr("10.0.0.9"), uint16(50000+j)), tcp.Owner{}, 0)
		cookie++
	}
	for j := 0; j < 4; j++ {
		tw(cookie, ap("10.0.0.1:40090"), netip.AddrPortFrom(netip.MustParseAddr("10.0.3.1"), uint16(80+j)), tcp.Owner{PID: 99, Comm: "probe", FD: 3, Via: tcp.OwnerConnect}, 2*time.Minute)
		cookie++
	}
}

func (f *reportFixture) aborts() {
	tl, now := f.tl, f.now
	// Resets, more than are shown, and failed binds of every cause.
	for i := 0; i < 12; i++ {
		r := tcp.Event{Kind: tcp.KindReset, Time: now.Add(-time.Duration(12-i) * time.Second), Cookie: uint64(400 + i), Local: srvAddr,
			Remote: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.7"), uint16(41000+i)), Old: tcp.StateEstablished, New: tcp.StateEstablished, Owner: apiOwner}
		switch i % 4 {
		case 0:
			r.ResetSent, r.ResetReason = true, "TCP_ABORT_ON_CLOSE"
		case 1:
			r.ResetSent, r.ResetReason = true, "TCP_SOMETHING_NEW"
		case 2:
			r.ResetSent, r.Owner, r.Local = true, tcp.Owner{}, netip.AddrPort{}
		}
		tl.Resets = append(tl.Resets, r)
	}
	listener := tcp.Socket{Local: srvAddr, State: tcp.StateListen, Reuse: true, Holders: []tcp.Owner{{PID: 42, Comm: "api", FD: 5}, {PID: 43, Comm: "api", FD: 5}}}
	left := tcp.Socket{Local: srvAddr, Remote: ap("10.0.0.9:50000"), State: tcp.StateTimeWait, Reuse: true}
	est := tcp.Socket{Local: srvAddr, Remote: ap("10.0.0.9:50001"), State: tcp.StateEstablished, Holders: []tcp.Owner{{PID: 42, Comm: "api", FD: 8}}}
	for i, holders := range [][]tcp.Socket{nil, {}, {listener, left}, {left, left}, {left, est, est}, {left}} {
		b := tcp.Event{Kind: tcp.KindBindFail, Time: now.Add(-time.Duration(6-i) * time.Second), Local: srvAddr, Owner: tcp.Owner{PID: uint32(5000 + i), Comm: "api", FD: 3}, PortHolders: holders}
		b.ReuseAddr = i == 5
		tl.BindFailures = append(tl.BindFailures, b)
	}
}

// goldenTimelines are the histories of two connections.
func goldenTimelines() ([]uint64, map[uint64][]tcp.Event, *timeline.Timeline, time.Time) {
	tl := timeline.New(rt0)
	h := map[uint64][]tcp.Event{}
	var order []uint64
	emit := func(ev *tcp.Event) {
		if h[ev.Cookie] == nil {
			order = append(order, ev.Cookie)
		}
		h[ev.Cookie] = append(h[ev.Cookie], *ev)
	}
	srv, cli := srvAddr, ap("10.0.0.9:40000")
	tl.Apply(&tcp.Event{Kind: tcp.KindExisting, Cookie: 1, Time: rt0.Add(time.Millisecond), Local: srv, Remote: ap("10.0.0.8:1234"), Old: tcp.StateEstablished, New: tcp.StateEstablished, FD: -1}, emit)
	tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 2, Time: rt0.Add(time.Second), Local: srv, Remote: cli, Old: tcp.StateListen, New: tcp.StateSynRecv, FD: -1, Owner: tcp.Owner{PID: 42, Comm: "api", FD: -1, Via: tcp.OwnerListener}}, emit)
	tl.Apply(&tcp.Event{Kind: tcp.KindAccept, Cookie: 2, Time: rt0.Add(time.Second + time.Millisecond), Local: srv, Remote: cli, FD: 7, Owner: apiOwner}, emit)
	tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 2, Time: rt0.Add(3 * time.Second), Local: srv, Remote: cli, Old: tcp.StateEstablished, New: tcp.StateCloseWait, FD: -1}, emit)
	return order, h, tl, rt0.Add(95 * time.Second)
}

var goldenStats = timeline.Stats{Events: 100, RingbufDrops: 1, StateMisses: 2, SyscallMisses: 3, OwnerMapFull: 4, Repairs: 5, NetNSUnfollowed: 6}

// TestRenderGolden renders representative events and reports, color off,
// and compares them with testdata/*.golden (go test -update rewrites them).
func TestRenderGolden(t *testing.T) {
	gNoColor()
	evs := goldenEvents()
	var text, js bytes.Buffer
	gHeader(&text)
	for i := range evs {
		fmt.Fprintln(&text, gText(&evs[i]))
		fmt.Fprintln(&js, gJSON(&evs[i]))
	}
	for _, s := range gDurations() {
		fmt.Fprintln(&text, s)
	}
	gSummary(&text, evs, goldenStats, 83*time.Second)
	gLost(&text, timeline.Stats{})
	testenv.Golden(t, "events.golden", text.String())
	testenv.Golden(t, "events-json.golden", js.String())

	rep := goldenReport()
	var out bytes.Buffer
	gReport(&out, &rep, goldenStats)
	testenv.Golden(t, "report.golden", out.String())
	testenv.Golden(t, "report-json.golden", string(gReportJSON(&rep))+"\n")

	empty := analysis.BuildLeakReport(nil, timeline.New(rt0), tcp.HostTCP{PortRange: [2]int{32768, 60999}}, rt0.Add(time.Minute), time.Minute, nil)
	out.Reset()
	gReport(&out, &empty, timeline.Stats{})
	testenv.Golden(t, "report-empty.golden", out.String())
	testenv.Golden(t, "report-empty-json.golden", string(gReportJSON(&empty))+"\n")

	order, h, tl, asOf := goldenTimelines()
	out.Reset()
	gTimelines(&out, order, h, tl, asOf, false)
	gTimelines(&out, order, h, tl, asOf, true)
	testenv.Golden(t, "timelines.golden", out.String())
}
