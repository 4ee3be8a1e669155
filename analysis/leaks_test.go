package analysis

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func TestBuildLeakReport(t *testing.T) {
	tl := timeline.New(t0)
	now := t0.Add(10 * time.Minute)
	server := tcp.Owner{PID: 42, Comm: "api", FD: 7, Via: tcp.OwnerSeed}
	child := tcp.Owner{PID: 43, Comm: "api", FD: 3, Via: tcp.OwnerSeed}
	local := netip.MustParseAddrPort("10.0.0.1:8080")
	// Cookie 1 entered CLOSE_WAIT under the tracer's eyes, 5 minutes ago.
	tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 1, Time: t0, Old: tcp.StateListen, New: tcp.StateSynRecv, Owner: tcp.Owner{PID: 42, FD: -1, Via: tcp.OwnerListener}}, func(*tcp.Event) {})
	tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 1, Time: now.Add(-5 * time.Minute), Old: tcp.StateEstablished, New: tcp.StateCloseWait}, func(*tcp.Event) {})
	table := []tcp.Socket{
		{Cookie: 1, State: tcp.StateCloseWait, Local: local, Remote: netip.MustParseAddrPort("10.0.0.9:40001"), Holders: []tcp.Owner{server, child}},
		// Older than the tracer: the last segment it received bounds its age.
		{Cookie: 2, State: tcp.StateCloseWait, Local: local, Remote: netip.MustParseAddrPort("10.0.0.9:40002"),
			Holders: []tcp.Owner{{PID: 42, Comm: "api", FD: 9}}, LastReceived: now.Add(-12 * time.Minute)},
		// Too young to count.
		{Cookie: 3, State: tcp.StateCloseWait, Local: local, Remote: netip.MustParseAddrPort("10.0.0.9:40003"),
			Holders: []tcp.Owner{{PID: 42, Comm: "api", FD: 11}}, LastReceived: now.Add(-time.Second)},
		{Cookie: 4, State: tcp.StateEstablished, Local: local, Remote: netip.MustParseAddrPort("10.0.0.9:40004"), Holders: []tcp.Owner{{PID: 50, FD: 4}}},
	}
	rep := BuildLeakReport(table, tl, tcp.HostTCP{PortRange: [2]int{32768, 60999}}, now, 30*time.Second, nil)
	if rep.Young != 1 || len(rep.Processes) != 2 {
		t.Fatalf("young %d, processes %+v", rep.Young, rep.Processes)
	}
	p := rep.Processes[0]
	if p.PID != 42 || p.Count != 2 || len(p.FDs) != 2 || p.FDs[0] != 7 || p.FDs[1] != 9 {
		t.Errorf("first process %+v", p)
	}
	if p.Oldest != 12*time.Minute || !p.AtLeast {
		t.Errorf("oldest %v at least %v, want at least 12m", p.Oldest, p.AtLeast)
	}
	if p.Sockets[1].Age != 5*time.Minute || p.Sockets[1].AtLeast {
		t.Errorf("socket seen entering CLOSE_WAIT: age %v at least %v, want exactly 5m", p.Sockets[1].Age, p.Sockets[1].AtLeast)
	}
	if len(p.Peers) != 1 || p.Peers[0].String() != "10.0.0.9" || p.Peers[0].Count != 2 {
		t.Errorf("peers %+v", p.Peers)
	}
	// The verdict's words are render's: render.TestVerdict.
	if c := rep.Processes[1]; c.PID != 43 || c.Count != 1 || c.FDs[0] != 3 {
		t.Errorf("the child sharing a socket: %+v", c)
	}
}

func TestOriginPlace(t *testing.T) {
	goStack := []tcp.Frame{
		{Func: "internal/runtime/syscall/linux.Syscall6", File: "/go/src/internal/runtime/syscall/linux/asm_linux_amd64.s"},
		{Func: "net.(*TCPListener).Accept", File: "/go/src/net/tcpsock.go", Line: 387},
		{Func: "github.com/acme/api/server.(*S).serve", File: "/src/server/serve.go", Line: 88},
		{Func: "main.main", File: "/src/main.go", Line: 12},
	}
	if got, _ := originPlace(goStack); !strings.HasPrefix(got, "github.com/acme/api/server.(*S).serve (/src/server/serve.go:88)") {
		t.Errorf("Go origin %q", got)
	}
	cStack := []tcp.Frame{
		{Func: "accept", Module: "/usr/lib/x86_64-linux-gnu/libc.so.6"},
		{Func: "accept_connections", File: "leakserver.c", Line: 28, Module: "/tmp/leakserver"},
	}
	if got, _ := originPlace(cStack); got != "accept_connections (leakserver.c:28)" {
		t.Errorf("C origin %q", got)
	}
	stripped := []tcp.Frame{{Addr: 0x401000, Module: "/usr/bin/server"}}
	if got, known := originPlace(stripped); known || got != "unknown: /usr/bin/server gives no symbols" {
		t.Errorf("stripped origin %q", got)
	}
}

func TestTimeWaitWarning(t *testing.T) {
	tl := timeline.New(t0)
	now := t0.Add(2 * time.Minute)
	host := tcp.HostTCP{PortRange: [2]int{40000, 40099}, TwReuse: 0, MaxTwBuckets: 1000}
	var table []tcp.Socket
	dst := netip.MustParseAddrPort("10.0.0.9:5432")
	for i := 0; i < 60; i++ {
		cookie := uint64(100 + i)
		tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: cookie, Time: t0, Old: tcp.StateClose, New: tcp.StateSynSent, Owner: tcp.Owner{PID: 7, Comm: "worker", FD: 3, Via: tcp.OwnerConnect}}, func(*tcp.Event) {})
		tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: cookie, Time: now.Add(-30 * time.Second), Old: tcp.StateFinWait2, New: tcp.StateClose}, func(*tcp.Event) {})
		tl.ApplyTimeWait(timeline.TimeWaitSighting{Cookie: cookie, At: now.Add(-30 * time.Second), Seen: true, Substate: tcp.StateTimeWait, Expiry: now.Add(30 * time.Second)}, func(*tcp.Event) {})
		table = append(table, tcp.Socket{Cookie: cookie, State: tcp.StateTimeWait, Local: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(40000+i)), Remote: dst})
	}
	rep := buildTimeWait(table, tl, host, now)
	if rep.Total != 60 || len(rep.Routes) != 1 || !rep.Routes[0].Client || rep.Routes[0].Count != 60 {
		t.Fatalf("report %+v", rep)
	}
	// 60 entries in the last minute: 1/s, 60 at steady state, past half of
	// 100 ports; render.TestTimeWaitWarning checks the words.
	if r := rep.Routes[0]; r.Projected != 60 || !r.Exhausting || r.Reusable || rep.Ports != 100 || rep.NearMaxBuckets != 0 {
		t.Errorf("route %+v, ports %d, near max %d", r, rep.Ports, rep.NearMaxBuckets)
	}
	if len(rep.Closers) != 1 || rep.Closers[0].PID != 7 || rep.Closers[0].Count != 60 {
		t.Errorf("closers %+v", rep.Closers)
	}
	if want := []TimeWaitAdvice{AdviseLength, AdviseReuseConnections, AdvisePorts}; !slices.Equal(rep.Advice, want) {
		t.Errorf("advice %v, want %v", rep.Advice, want)
	}
}

// TestFilteredLeakReportContainer: a socket shared with a process outside the
// container does not bring that process into a --container report.
func TestFilteredLeakReportContainer(t *testing.T) {
	const ctr = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tl := timeline.New(t0)
	now := t0.Add(10 * time.Minute)
	inside := tcp.Owner{PID: 42, Comm: "api", FD: 7, Via: tcp.OwnerSeed, Cgroup: 9, Container: ctr}
	outside := tcp.Owner{PID: 43, Comm: "debug", FD: 3, Via: tcp.OwnerSeed, Cgroup: 1}
	table := []tcp.Socket{{Cookie: 1, State: tcp.StateCloseWait, Local: netip.MustParseAddrPort("10.0.0.1:8080"),
		Remote: netip.MustParseAddrPort("10.0.0.9:40001"), Holders: []tcp.Owner{inside, outside}, LastReceived: t0}}
	for _, tc := range []struct {
		f    timeline.Filter
		want []uint32
	}{
		{timeline.Filter{}, []uint32{42, 43}},
		{timeline.Filter{Container: ctr[:12]}, []uint32{42}},
		{timeline.Filter{Cgroups: map[uint64]bool{1: true}}, []uint32{43}},
		{timeline.Filter{Container: "fedcba"}, nil},
	} {
		rep := FilteredLeakReport(table, tl, tcp.HostTCP{}, now, time.Minute, &tc.f, nil)
		var got []uint32
		for _, p := range rep.Processes {
			got = append(got, p.PID)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%+v: processes %v, want %v", tc.f, got, tc.want)
		}
	}
}

// TestReadBack: reports read back from JSON keep their addresses and peers.
func TestReadBack(t *testing.T) {
	in := ProcessLeak{PID: 1, Peers: []PeerCount{{Addr: netip.MustParseAddr("10.0.0.9"), Count: 2}, {Addr: netip.MustParseAddr("::1"), Port: 80, Count: 1}},
		Sockets: []LeakedSocket{{Local: tcp.Endpoint{AddrPort: netip.MustParseAddrPort("[::ffff:10.0.0.1]:8080")}}, {}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out ProcessLeak
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if !slices.Equal(out.Peers, in.Peers) || out.Sockets[0].Local != in.Sockets[0].Local || out.Sockets[1].Remote.IsValid() {
		t.Errorf("read back %+v from %s", out, b)
	}
}

// TestOriginOfAScript: a script's sockets are created in its interpreter's
// C code, which is said, not named as the place to fix.
func TestOriginOfAScript(t *testing.T) {
	for _, tc := range []struct {
		frames []tcp.Frame
		want   string
	}{
		{[]tcp.Frame{{Func: "accept4", Module: "/usr/lib/x86_64-linux-gnu/libc.so.6"}, {Func: "sock_accept", Module: "/usr/bin/python3.11"}}, "the python3.11 interpreter"},
		{[]tcp.Frame{{Func: "accept4", Module: "/usr/lib/x86_64-linux-gnu/libc.so.6"}, {Func: "rb_io_x", Module: "/usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1"}}, "the ruby-3.1 interpreter"},
		{[]tcp.Frame{{Func: "main.serve", File: "/src/main.go", Line: 3, Module: "/srv/api"}}, "main.serve (/src/main.go:3)"},
	} {
		where, known := originPlace(tc.frames)
		if !strings.HasPrefix(where, tc.want) || !known {
			t.Errorf("%v: %q (known %v), want %q", tc.frames, where, known, tc.want)
		}
	}
}
