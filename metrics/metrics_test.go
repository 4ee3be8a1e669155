package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

func TestTopN(t *testing.T) {
	byValue := func(a, b int) bool { return a > b }
	top, rest := topN([]int{3, 9, 1, 7, 5}, 2, byValue)
	if fmt.Sprint(top, rest) != "[9 7] [5 3 1]" {
		t.Errorf("top 2 = %v, rest %v", top, rest)
	}
	top, rest = topN([]int{3, 9}, 5, byValue)
	if fmt.Sprint(top) != "[9 3]" || rest != nil {
		t.Errorf("top 5 of 2 = %v, rest %v", top, rest)
	}
}

func TestFirstN(t *testing.T) {
	f := newFirstN[string](2)
	for _, k := range []string{"a", "b", "c", "a", "d", "b", "c"} {
		f.add(k)
	}
	if len(f.counts) != 2 || f.counts["a"] != 2 || f.counts["b"] != 2 || f.other != 3 {
		t.Errorf("counts %v, other %d; want a=2 b=2, other 3 (c, d, c)", f.counts, f.other)
	}
	c := f.clone()
	f.add("a")
	if c.counts["a"] != 2 {
		t.Error("a clone changed with the original")
	}
}

// gather collects c through a pedantic registry, which also checks that
// every series matches what Describe announced and that none repeats.
func gather(t *testing.T, c *Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// series writes a family's series as "label=value,... value", sorted.
func series(mf *dto.MetricFamily) []string {
	var out []string
	for _, m := range mf.GetMetric() {
		var labels []string
		for _, l := range m.GetLabel() {
			labels = append(labels, l.GetName()+"="+l.GetValue())
		}
		v := m.GetGauge().GetValue()
		if m.Counter != nil {
			v = m.GetCounter().GetValue()
		}
		out = append(out, fmt.Sprintf("%s %g", strings.Join(labels, ","), v))
	}
	sort.Strings(out)
	return out
}

// TestCollectorBounds: past the top N, processes and destinations are summed
// under "other"; ages are brought up to the time of the scrape.
func TestCollectorBounds(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &Snapshot{At: at}
	for i := 1; i <= 5; i++ {
		s.CloseWait = append(s.CloseWait, ProcessCloseWait{PID: uint32(100 + i), Comm: fmt.Sprintf("srv%d", i), Count: i, Oldest: time.Duration(i) * time.Second})
		if i == 5 {
			s.CloseWait[i-1].Container = "0123456789ab"
		}
		s.TimeWait = append(s.TimeWait, DestinationCount{Destination: fmt.Sprintf("10.0.0.%d:443", i), Count: 10 * i})
	}
	// An old socket in a small process: its age goes into other's.
	s.CloseWait[0].Oldest = time.Hour
	s.Sockets[tcp.StateCloseWait] = 15
	c := NewCollector(3)
	c.now = func() time.Time { return at.Add(2 * time.Second) }
	if got := gather(t, c); len(got) != 0 {
		t.Errorf("before the first snapshot: %d families, want none", len(got))
	}
	c.Publish(s)
	got := gather(t, c)

	want := []string{
		"comm=other,container=,pid=other 3", // srv1 (1) + srv2 (2)
		"comm=srv3,container=,pid=103 3",
		"comm=srv4,container=,pid=104 4",
		"comm=srv5,container=0123456789ab,pid=105 5",
	}
	if g := series(got["tcptrace_close_wait_sockets"]); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("close_wait_sockets:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
	want = []string{
		"comm=other,container=,pid=other 3602", // srv1's hour, plus the 2 s since the snapshot
		"comm=srv3,container=,pid=103 5",
		"comm=srv4,container=,pid=104 6",
		"comm=srv5,container=0123456789ab,pid=105 7",
	}
	if g := series(got["tcptrace_close_wait_oldest_seconds"]); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("close_wait_oldest_seconds:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
	want = []string{"destination=10.0.0.3:443 30", "destination=10.0.0.4:443 40", "destination=10.0.0.5:443 50", "destination=other 30"}
	if g := series(got["tcptrace_time_wait_sockets"]); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("time_wait_sockets:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
	// States are a closed set: every one is present, zero or not.
	if g := series(got["tcptrace_sockets"]); len(g) != 12 || !contains(g, "state=CLOSE_WAIT 15") || !contains(g, "state=LISTEN 0") {
		t.Errorf("sockets: %v", g)
	}
	for _, name := range []string{"tcptrace_ringbuf_drops_total", "tcptrace_recursion_misses_total", "tcptrace_repaired_transitions_total", "tcptrace_events_total",
		"tcptrace_owners_not_stored_total", "tcptrace_netns_unfollowed_total"} {
		if got[name] == nil || got[name].GetType() != dto.MetricType_COUNTER || got[name].GetHelp() == "" {
			t.Errorf("%s: %v, want a counter with help", name, got[name])
		}
	}
	// The same snapshot a second later: older by a second.
	c.now = func() time.Time { return at.Add(3 * time.Second) }
	if g := series(gather(t, c)["tcptrace_close_wait_oldest_seconds"]); !contains(g, "comm=srv5,container=0123456789ab,pid=105 8") {
		t.Errorf("a second later: %v", g)
	}
	// The process closed its sockets: its series are gone.
	c.Publish(&Snapshot{At: at.Add(4 * time.Second)})
	if g := gather(t, c)["tcptrace_close_wait_sockets"]; g != nil {
		t.Errorf("after every socket closed: %v", series(g))
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestObserver counts transitions, RSTs and failed binds that the filter
// selects, with failed binds bounded to the first N port and command pairs.
func TestObserver(t *testing.T) {
	filter := &timeline.Filter{Port: 8080}
	o := NewObserver(filter, 2)
	local := netip.MustParseAddrPort("127.0.0.1:8080")
	remote := netip.MustParseAddrPort("127.0.0.1:40000")
	for _, ev := range []tcp.Event{
		{Kind: tcp.KindTransition, Local: local, Remote: remote, Old: tcp.StateEstablished, New: tcp.StateCloseWait},
		{Kind: tcp.KindTransition, Local: local, Remote: remote, Old: tcp.StateEstablished, New: tcp.StateCloseWait},
		{Kind: tcp.KindTransition, Local: netip.MustParseAddrPort("127.0.0.1:9"), Remote: remote, Old: tcp.StateEstablished, New: tcp.StateCloseWait},
		{Kind: tcp.KindAccept, Local: local, Remote: remote, Old: tcp.StateEstablished, New: tcp.StateEstablished},
		{Kind: tcp.KindReset, Local: local, Remote: remote, ResetSent: true, ResetReason: "TCP_ABORT_ON_CLOSE"},
		{Kind: tcp.KindReset, Local: local, Remote: remote},
		{Kind: tcp.KindBindFail, Local: local, Owner: tcp.Owner{Comm: "a"}},
		{Kind: tcp.KindBindFail, Local: local, Owner: tcp.Owner{Comm: "b\xff"}},
		{Kind: tcp.KindBindFail, Local: local, Owner: tcp.Owner{Comm: "c"}},
		{Kind: tcp.KindBindFail, Local: local, Owner: tcp.Owner{Comm: "a"}},
	} {
		o.Observe(&ev)
	}
	c := NewCollector(2)
	c.Publish(o.Snapshot(nil, timeline.NewTimeline(time.Now()), timeline.Stats{}, time.Now()))
	got := gather(t, c)
	for name, want := range map[string][]string{
		"tcptrace_transitions_total":     {"from=ESTABLISHED,to=CLOSE_WAIT 2"},
		"tcptrace_resets_total":          {"reason=TCP_ABORT_ON_CLOSE,side=sent 1", "reason=unknown,side=received 1"},
		"tcptrace_bind_eaddrinuse_total": {"comm=a,port=8080 2", "comm=b?,port=8080 1", "comm=other,port=other 1"},
	} {
		if g := series(got[name]); fmt.Sprint(g) != fmt.Sprint(want) {
			t.Errorf("%s:\n%s\nwant:\n%s", name, strings.Join(g, "\n"), strings.Join(want, "\n"))
		}
	}
}

// TestObserverSnapshot groups a socket table as the leak report does: by
// holder, a shared socket counting for each, with the filter applied.
func TestObserverSnapshot(t *testing.T) {
	now := time.Now()
	sock := func(state tcp.State, local, remote string, age time.Duration, holders ...tcp.Owner) tcp.Socket {
		return tcp.Socket{
			Cookie: uint64(len(local) + len(remote)*100 + int(age)), State: state,
			Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote),
			LastReceived: now.Add(-age), Holders: holders,
		}
	}
	a := tcp.Owner{PID: 10, Comm: "a", FD: 5, Via: tcp.OwnerSeed}
	b := tcp.Owner{PID: 20, Comm: "b", FD: 7, Via: tcp.OwnerSeed}
	table := []tcp.Socket{
		sock(tcp.StateCloseWait, "127.0.0.1:80", "127.0.0.1:5001", 3*time.Second, a),
		sock(tcp.StateCloseWait, "127.0.0.1:80", "127.0.0.1:5002", 9*time.Second, a, b),
		sock(tcp.StateCloseWait, "127.0.0.1:81", "127.0.0.1:5003", time.Second, b),
		sock(tcp.StateTimeWait, "127.0.0.1:5004", "127.0.0.1:80", 0),
		sock(tcp.StateTimeWait, "127.0.0.1:5005", "127.0.0.1:80", 0),
		sock(tcp.StateListen, "127.0.0.1:80", "0.0.0.0:0", 0, a),
	}
	for i := range table {
		table[i].Cookie = uint64(i + 1)
	}
	tl := timeline.NewTimeline(now.Add(-time.Minute))
	s := NewObserver(nil, 20).Snapshot(table, tl, timeline.Stats{}, now)
	got := fmt.Sprint(s.CloseWait)
	want := fmt.Sprint([]ProcessCloseWait{{10, "a", 2, 9 * time.Second, ""}, {20, "b", 2, 9 * time.Second, ""}})
	if got != want {
		t.Errorf("CLOSE_WAIT by process %s, want %s", got, want)
	}
	if fmt.Sprint(s.TimeWait) != "[{127.0.0.1:80 2}]" || s.Sockets[tcp.StateCloseWait] != 3 || s.Sockets[tcp.StateListen] != 1 {
		t.Errorf("TIME_WAIT %v, sockets %v", s.TimeWait, s.Sockets)
	}

	// Only local port 81: process b's one socket there.
	s = NewObserver(&timeline.Filter{LPort: 81}, 20).Snapshot(table, tl, timeline.Stats{}, now)
	if fmt.Sprint(s.CloseWait) != fmt.Sprint([]ProcessCloseWait{{20, "b", 1, time.Second, ""}}) || len(s.TimeWait) != 0 {
		t.Errorf("--lport 81: CLOSE_WAIT %v, TIME_WAIT %v", s.CloseWait, s.TimeWait)
	}
}

func TestParseListenAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9669": "127.0.0.1:9669",
		":9669":          "127.0.0.1:9669",
		"9669":           "127.0.0.1:9669",
		"localhost:0":    "127.0.0.1:0",
		"[::1]:9669":     "[::1]:9669",
		"0.0.0.0:9669":   "0.0.0.0:9669",
		"10.1.2.3:80":    "10.1.2.3:80",
	} {
		got, err := ParseListenAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseListenAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "1.2.3:80", "example.com:80", "127.0.0.1:-1", "127.0.0.1:08"} {
		if got, err := ParseListenAddr(in); err == nil {
			t.Errorf("ParseListenAddr(%q) = %v, want an error", in, got)
		}
	}
}

// TestServer serves a registry on loopback: /metrics in the text format,
// / linking to it, anything else not found.
func TestServer(t *testing.T) {
	c := NewCollector(DefaultTop)
	c.Publish(&Snapshot{At: time.Now()})
	srv, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), NewRegistry(c))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + srv.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if code != 200 || err != nil {
		t.Fatalf("/metrics: %d, %v", code, err)
	}
	for _, name := range []string{"tcptrace_sockets", "process_resident_memory_bytes", "process_cpu_seconds_total", "go_goroutines"} {
		if mfs[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, `href="/metrics"`) {
		t.Errorf("/: %d %q", code, body)
	}
	if code, _ := get("/nothing"); code != 404 {
		t.Errorf("/nothing: %d, want 404", code)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}
