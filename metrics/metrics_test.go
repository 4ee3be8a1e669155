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

func TestRanking(t *testing.T) {
	r := newRanking[string]()
	read := func() string {
		var out []string
		sum := r.top(3, func(k string, n int) { out = append(out, fmt.Sprintf("%s=%d", k, n)) })
		return fmt.Sprint(out, " rest ", r.total-sum)
	}
	for _, k := range []string{"a", "b", "b", "c", "c", "c", "d", "e"} {
		r.add(k, 1)
	}
	if got := read(); got != "[c=3 b=2 a=1] rest 2" {
		t.Errorf("top 3 = %s", got)
	}
	// Ties keep the order in which keys reached the count: d was first at 1.
	r.add("c", -1)
	r.add("c", -1)
	r.add("b", -1)
	r.add("a", -1)
	if got := read(); got != "[d=1 e=1 c=1] rest 1" || r.items["a"] != nil {
		t.Errorf("after decrements: top 3 = %s, a kept: %v", got, r.items["a"] != nil)
	}
	for _, k := range []string{"b", "c", "d", "e"} {
		r.add(k, -1)
	}
	if got := read(); got != "[] rest 0" || len(r.items) != 0 || r.high != nil || r.low != nil {
		t.Errorf("emptied: %s, %d items", got, len(r.items))
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

// attached is a collector that follows a new timeline started at started.
func attached(filter *timeline.Filter, top int, started time.Time) (*Collector, *timeline.Timeline) {
	c := NewCollector(filter, top)
	tl := timeline.New(started)
	c.Attach(tl, 0)
	return c, tl
}

// fivePeers makes processes srv1 to srv5 hold i sockets each in CLOSE_WAIT,
// the oldest i seconds before at (srv1's an hour before), and 10*i sockets
// in TIME_WAIT to 10.0.0.i:443; it returns the CLOSE_WAIT ones.
func fivePeers(emit func(tcp.Event), at time.Time) []uint64 {
	cookie := uint64(0)
	var closeWait []uint64
	for i := 1; i <= 5; i++ {
		owner := tcp.Owner{PID: uint32(100 + i), Comm: fmt.Sprintf("srv%d", i), FD: 3, Via: tcp.OwnerAccept}
		if i == 5 {
			owner.Container = "0123456789abcdef"
		}
		for j := 0; j < i; j++ {
			cookie++
			// srv1's old socket, in a small process: its age goes into other's.
			since := at.Add(-time.Duration(i) * time.Second)
			if i == 1 {
				since = at.Add(-time.Hour)
			}
			emit(tcp.Event{Kind: tcp.KindTransition, Time: since.Add(time.Duration(j) * time.Millisecond), Cookie: cookie, Owner: owner,
				Local: netip.MustParseAddrPort("127.0.0.1:80"), Remote: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(5000+cookie)),
				Old: tcp.StateEstablished, New: tcp.StateCloseWait})
			closeWait = append(closeWait, cookie)
		}
		for range 10 * i {
			cookie++
			emit(tcp.Event{Kind: tcp.KindExisting, Time: at, Cookie: cookie, New: tcp.StateTimeWait, TimeWaitLeft: time.Minute,
				Local: netip.AddrPortFrom(netip.MustParseAddr("10.1.1.1"), uint16(30000+cookie)), Remote: netip.MustParseAddrPort(fmt.Sprintf("10.0.0.%d:443", i))})
		}
	}
	return closeWait
}

// TestCollectorBounds: past the top N, processes and destinations are summed
// under "other"; ages are brought up to the time of the scrape.
func TestCollectorBounds(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c, tl := attached(nil, 3, at.Add(-2*time.Hour))
	c.now = func() time.Time { return at.Add(2 * time.Second) }
	emit := func(ev tcp.Event) { tl.Apply(&ev, c.Observe) }
	closeWait := fivePeers(emit, at)
	if got := gather(t, c); len(got) != 0 {
		t.Errorf("before the first update: %d families, want none", len(got))
	}
	c.Update(timeline.Stats{}, at)
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
		"comm=other,container=,pid=other 3602", // srv1's hour, plus the 2 s to the scrape
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
	// The same counts a second later: older by a second.
	c.now = func() time.Time { return at.Add(3 * time.Second) }
	if g := series(gather(t, c)["tcptrace_close_wait_oldest_seconds"]); !contains(g, "comm=srv5,container=0123456789ab,pid=105 8") {
		t.Errorf("a second later: %v", g)
	}
	// The processes closed their sockets: their series are gone.
	for _, cookie := range closeWait {
		emit(tcp.Event{Kind: tcp.KindTransition, Time: at.Add(4 * time.Second), Cookie: cookie, Old: tcp.StateCloseWait, New: tcp.StateLastAck})
	}
	if g := gather(t, c)["tcptrace_close_wait_sockets"]; g != nil {
		t.Errorf("after every socket closed: %v", series(g))
	}
	if len(c.gauges.procs) != 0 || len(c.gauges.byAge) != 0 || c.gauges.byCount.total != 0 {
		t.Errorf("left behind: %d processes, %d by age, %d counted", len(c.gauges.procs), len(c.gauges.byAge), c.gauges.byCount.total)
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

// TestCollectorEvents counts transitions, RSTs and failed binds that the
// filter selects, with failed binds bounded to the first N port and command pairs.
func TestCollectorEvents(t *testing.T) {
	c, _ := attached(&timeline.Filter{Port: 8080}, 2, time.Now())
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
		c.Observe(&ev)
	}
	c.Update(timeline.Stats{}, time.Now())
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

// seed feeds tl a walk of the socket table at its start, as the tracer does:
// the table, then an event for each socket.
func seed(tl *timeline.Timeline, c *Collector, table []tcp.Socket) {
	in := timeline.Input{Kind: timeline.InputTable, Table: timeline.Table{At: tl.Started(), Sockets: table}}
	tl.Feed(&in, c.Observe)
	for _, s := range table {
		ev := tcp.Event{Kind: tcp.KindExisting, Time: tl.Started(), Cookie: s.Cookie, Local: s.Local, Remote: s.Remote,
			New: s.State, Source: tcp.SourceSeed, Owner: tcp.Owner{FD: -1}}
		if len(s.Holders) > 0 {
			ev.Owner = s.Holders[0]
		}
		if !s.TimeWaitExpiry.IsZero() {
			ev.TimeWaitLeft = s.TimeWaitExpiry.Sub(tl.Started())
		}
		tl.Apply(&ev, c.Observe)
	}
}

// TestCollectorWalk groups the sockets of a walk as the leak report does: by
// holder, a shared socket counting for each, dated by the last segment
// received, with the filter applied; then follows them as events move them.
func TestCollectorWalk(t *testing.T) {
	now := time.Now()
	sock := func(state tcp.State, local, remote string, age time.Duration, holders ...tcp.Owner) tcp.Socket {
		return tcp.Socket{
			State: state, Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote),
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
	table[3].TimeWaitExpiry = now.Add(time.Minute)
	table[4].TimeWaitExpiry = now.Add(time.Minute)
	scrape := func(c *Collector) map[string][]string {
		c.now = func() time.Time { return now }
		c.Update(timeline.Stats{}, now)
		out := map[string][]string{}
		for name, mf := range gather(t, c) {
			out[name] = series(mf)
		}
		return out
	}
	c, tl := attached(nil, 20, now)
	seed(tl, c, table)
	got := scrape(c)
	want := []string{"comm=a,container=,pid=10 2", "comm=b,container=,pid=20 2"}
	if g := got["tcptrace_close_wait_sockets"]; fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("CLOSE_WAIT by process %s, want %s", g, want)
	}
	want = []string{"comm=a,container=,pid=10 9", "comm=b,container=,pid=20 9"}
	if g := got["tcptrace_close_wait_oldest_seconds"]; fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("oldest CLOSE_WAIT by process %s, want %s", g, want)
	}
	if g := got["tcptrace_time_wait_sockets"]; fmt.Sprint(g) != "[destination=127.0.0.1:80 2]" ||
		!contains(got["tcptrace_sockets"], "state=CLOSE_WAIT 3") || !contains(got["tcptrace_sockets"], "state=LISTEN 1") {
		t.Errorf("TIME_WAIT %v, sockets %v", g, got["tcptrace_sockets"])
	}

	// a closes its fd of the shared socket, b the socket: b's count goes to
	// its other socket; the shared one counts for b alone.
	closeFD := tcp.Event{Kind: tcp.KindCloseFD, Time: now, Cookie: 2, FD: 5, Running: tcp.Task{PID: 10}}
	tl.Apply(&closeFD, c.Observe)
	lastAck := tcp.Event{Kind: tcp.KindTransition, Time: now, Cookie: 3, Old: tcp.StateCloseWait, New: tcp.StateLastAck}
	tl.Apply(&lastAck, c.Observe)
	got = scrape(c)
	want = []string{"comm=a,container=,pid=10 1", "comm=b,container=,pid=20 1"}
	if g := got["tcptrace_close_wait_sockets"]; fmt.Sprint(g) != fmt.Sprint(want) || !contains(got["tcptrace_sockets"], "state=LAST_ACK 1") {
		t.Errorf("after close: CLOSE_WAIT by process %s, want %s; sockets %v", g, want, got["tcptrace_sockets"])
	}
	// The TIME_WAITs end: a walk of the timewait sockets finds them gone.
	for _, cookie := range []uint64{4, 5} {
		tl.ApplyTimeWait(timeline.TimeWaitSighting{Cookie: cookie, At: now}, c.Observe)
	}
	if got = scrape(c); got["tcptrace_time_wait_sockets"] != nil || !contains(got["tcptrace_sockets"], "state=TIME_WAIT 0") {
		t.Errorf("after TIME_WAIT ended: %v, sockets %v", got["tcptrace_time_wait_sockets"], got["tcptrace_sockets"])
	}

	// Only local port 81: process b's one socket there.
	c, tl = attached(&timeline.Filter{LPort: 81}, 20, now)
	seed(tl, c, table)
	got = scrape(c)
	if g := got["tcptrace_close_wait_sockets"]; fmt.Sprint(g) != "[comm=b,container=,pid=20 1]" || got["tcptrace_time_wait_sockets"] != nil ||
		!contains(got["tcptrace_close_wait_oldest_seconds"], "comm=b,container=,pid=20 1") {
		t.Errorf("--lport 81: CLOSE_WAIT %v, TIME_WAIT %v", g, got["tcptrace_time_wait_sockets"])
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
	c := NewCollector(nil, DefaultTop)
	c.Update(timeline.Stats{}, time.Now())
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

// TestServerTimeWaitByPeerAddress: TIME_WAIT of accepted connections is
// counted by the peer's address, not by each of its ports.
func TestServerTimeWaitByPeerAddress(t *testing.T) {
	now := time.Now()
	c, tl := attached(&timeline.Filter{}, 10, now)
	server := tcp.Owner{PID: 7, Comm: "srv", FD: 4, Via: tcp.OwnerAccept}
	for i := range 30 {
		cookie := uint64(i + 1)
		ev := tcp.Event{Kind: tcp.KindTransition, Time: now, Cookie: cookie, Owner: server,
			Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.9"), uint16(40000+i)),
			Old: tcp.StateFinWait2, New: tcp.StateClose}
		tl.Apply(&ev, c.Observe)
		tl.ApplyTimeWait(timeline.TimeWaitSighting{Cookie: cookie, At: now, Seen: true, Substate: tcp.StateTimeWait, Expiry: now.Add(time.Minute)}, c.Observe)
	}
	c.Update(timeline.Stats{}, now)
	if g := series(gather(t, c)["tcptrace_time_wait_sockets"]); fmt.Sprint(g) != "[destination=127.0.0.9 30]" {
		t.Errorf("server-side TIME_WAIT: %v, want one series for 127.0.0.9", g)
	}
}
