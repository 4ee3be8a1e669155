package render

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// TestVerdict: the report of analysis.TestBuildLeakReport, in words.
func TestVerdict(t *testing.T) {
	tl := timeline.New(t0)
	now := t0.Add(10 * time.Minute)
	server := tcp.Owner{PID: 42, Comm: "api", FD: 7, Via: tcp.OwnerSeed}
	child := tcp.Owner{PID: 43, Comm: "api", FD: 3, Via: tcp.OwnerSeed}
	local := netip.MustParseAddrPort("10.0.0.1:8080")
	tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 1, Time: t0, Old: tcp.StateListen, New: tcp.StateSynRecv, Owner: tcp.Owner{PID: 42, FD: -1, Via: tcp.OwnerListener}}, func(*tcp.Event) {})
	tl.Apply(&tcp.Event{Kind: tcp.KindTransition, Cookie: 1, Time: now.Add(-5 * time.Minute), Old: tcp.StateEstablished, New: tcp.StateCloseWait}, func(*tcp.Event) {})
	table := []tcp.Socket{
		{Cookie: 1, State: tcp.StateCloseWait, Local: local, Remote: netip.MustParseAddrPort("10.0.0.9:40001"), Holders: []tcp.Owner{server, child}},
		{Cookie: 2, State: tcp.StateCloseWait, Local: local, Remote: netip.MustParseAddrPort("10.0.0.9:40002"),
			Holders: []tcp.Owner{{PID: 42, Comm: "api", FD: 9}}, LastReceived: now.Add(-12 * time.Minute)},
	}
	rep := analysis.BuildLeakReport(table, tl, tcp.HostTCP{PortRange: [2]int{32768, 60999}}, now, 30*time.Second, nil)
	want := "pid 42 (api) never closed 2 connections after 10.0.0.9 closed them; oldest at least 12m00s"
	if got := Verdict(&rep.Processes[0]); got != want {
		t.Errorf("verdict %q\nwant    %q", got, want)
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
	rep := analysis.BuildLeakReport(table, tl, host, now, time.Minute, nil).TimeWait
	warnings := TimeWaitWarnings(&rep)
	if len(warnings) != 1 || !strings.Contains(warnings[0], "10.0.0.9:5432: 60 ports in TIME_WAIT") {
		t.Errorf("warnings %q", warnings)
	}
	var advice = strings.Join(TimeWaitAdvice(&rep), "\n")
	for _, want := range []string{"does not shorten it", "tcp_tw_reuse=1 (now 0)", "40000-40099", "keep-alive"} {
		if !strings.Contains(advice, want) {
			t.Errorf("advice lacks %q:\n%s", want, advice)
		}
	}
}

func TestJSONLine(t *testing.T) {
	ev := tcp.Event{
		Kind: tcp.KindTransition, Time: time.Date(2026, 11, 21, 12, 0, 0, 5, time.UTC), Cookie: 77, Inode: 1234, NetNS: 4026531840,
		Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort("[::1]:9"),
		Old: tcp.StateEstablished, New: tcp.StateCloseWait, InOld: 1500 * time.Millisecond,
		Running: tcp.Task{PID: 5, TID: 6, Comm: `cli"ent`}, Owner: tcp.Owner{PID: 42, Comm: "server", FD: 7, Via: tcp.OwnerAccept, Cgroup: 9, Container: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		FD: -1, Flags: tcp.FlagOrphan,
	}
	got := string(AppendJSON(nil, &ev))
	want := `{"time":"2026-11-21T12:00:00.000000005Z","type":"transition","conn":77,"inode":1234,"netns":4026531840,"family":4,` +
		`"local":"127.0.0.1:8080","remote":"[::1]:9","old":"ESTABLISHED","new":"CLOSE_WAIT","in_old_ns":1500000000,"in_old_at_least":false,` +
		`"owner":{"pid":42,"comm":"server","fd":7,"via":"accept","fd_closed":false,"cgroup":9,` +
		`"container":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"sharers":[],"running":{"pid":5,"tid":6,"comm":"cli\"ent"},` +
		`"fd":-1,"source":"kernel","orphan":true,"error":0}`
	if got != want {
		t.Errorf("JSON:\n%s\nwant:\n%s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Error("not valid JSON")
	}
}

func TestTextLine(t *testing.T) {
	ev := tcp.Event{
		Kind: tcp.KindTransition, Time: time.Date(2026, 11, 21, 12, 0, 0, 0, time.Local),
		Local: netip.MustParseAddrPort("127.0.0.1:40000"), Remote: netip.MustParseAddrPort("127.0.0.1:80"),
		Old: tcp.StateFinWait2, New: tcp.StateTimeWait, InOld: 2 * time.Second, TimeWaitLeft: 60 * time.Second,
		Owner: tcp.Owner{PID: 42, Comm: "curl", FD: 3, Via: tcp.OwnerConnect}, Source: tcp.SourceTimeWait,
	}
	SetColor("never")
	got := string(AppendText(nil, &ev))
	want := "12:00:00.000000      42 curl               3 127.0.0.1:40000         127.0.0.1:80            FIN_WAIT2 -> TIME_WAIT  2.0s  (expires in 1m00s)"
	if got != want {
		t.Errorf("text:\n%q\nwant:\n%q", got, want)
	}
	ev.Owner.Container = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if got := string(AppendText(nil, &ev)); got != want+"  container=0123456789ab" {
		t.Errorf("text in a container:\n%q", got)
	}
}

// TestResetWhy: the kernel's reason TCP_STATE covers an application's abort
// (SO_LINGER {1, 0}) and an orphan's FIN_WAIT2 timeout; the orphan flag of
// the RST tells them apart.
func TestResetWhy(t *testing.T) {
	for _, tc := range []struct {
		r    analysis.ResetClose
		want string
	}{
		{analysis.ResetClose{Sent: true, Reason: "TCP_STATE", State: tcp.StateEstablished}, "the application aborted it (close() with SO_LINGER {1, 0}"},
		{analysis.ResetClose{Sent: true, Reason: "TCP_STATE", State: tcp.StateFinWait2}, "the application aborted it"},
		{analysis.ResetClose{Sent: true, Reason: "TCP_STATE", State: tcp.StateFinWait2, Orphan: true}, "an orphan in FIN_WAIT2 timed out"},
		{analysis.ResetClose{Sent: true, Reason: "TCP_ABORT_ON_LINGER", State: tcp.StateFinWait2, Orphan: true}, "TCP_LINGER2 negative"},
		{analysis.ResetClose{Sent: true, Reason: "TCP_ABORT_ON_CLOSE"}, "closed with data still unread"},
		{analysis.ResetClose{Remote: tcp.Endpoint{AddrPort: netip.MustParseAddrPort("10.0.0.9:80")}}, "reset by the peer 10.0.0.9:80"},
	} {
		if got := ResetWhy(&tc.r); !strings.Contains(got, tc.want) {
			t.Errorf("%+v: %q, want %q in it", tc.r, got, tc.want)
		}
	}
}
