package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tcptrace/tcptrace/internal/testenv"
)

// freeAddr is a loopback address with a port no one listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type families map[string]*dto.MetricFamily

// scrape reads url and parses it as Prometheus' text format.
func scrape(url string) (families, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	return mfs, string(body), err
}

// value is the value of the series of family name with these labels (and
// maybe others).
func (f families) value(name string, labels ...string) (float64, bool) {
	mf := f[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// waitMetrics scrapes url until ok says yes, for at most 10 s.
func waitMetrics(t *testing.T, url, what string, ok func(families) bool) (families, string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // a loaded guest takes long to start
	var last string
	for {
		mfs, body, err := scrape(url)
		if err == nil && ok(mfs) {
			return mfs, body
		}
		last = body
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %s in 30s; last scrape:\n%s", what, tcptraceLines(last))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tcptraceLines keeps tcptrace's own series of a scrape.
func tcptraceLines(body string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "tcptrace_") {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}

// TestBPFServeMetrics runs `tcptrace serve` against a server that leaks n
// connections into CLOSE_WAIT: the scrape names it with n sockets and an age
// that grows, counts the transitions the test made, and drops the server's
// series once it closes its sockets, when the clients, which closed first,
// go into TIME_WAIT.
func TestBPFServeMetrics(t *testing.T) {
	testenv.RequireBPF(t)
	const n = 3
	server := testenv.StartPeer(t, "server", "127.0.0.1:0")
	port := netip.MustParseAddrPort(server.ListenAddr()).Port()
	addr := freeAddr(t)
	cmd, _, stderr := startTcptrace(t, "serve", "--metrics-addr", addr, "--port", fmt.Sprint(port))
	url := "http://" + addr + "/metrics"
	// The first snapshot: tracing has started.
	waitMetrics(t, url, "a first snapshot", func(m families) bool { return m["tcptrace_sockets"] != nil })

	for i := 0; i < n; i++ {
		client := testenv.StartPeer(t, "client", server.ListenAddr())
		client.Expect("connected")
		server.Expect("accepted")
		client.Send("close")
		server.Expect("eof")
	}
	pid := []string{"pid", fmt.Sprint(server.PID), "comm", "testpeer"}
	m, age := checkCloseWaitMetrics(t, url, server, pid, n)
	checkStandardSeries(t, m)
	checkCloseWaitAgeGrows(t, url, pid, age)
	checkServerClosedMetrics(t, url, server, pid, n)
	checkServeStops(t, cmd, stderr, url)
}

// transitions is the count of transitions from one state to another in a scrape.
func transitions(m families, from, to string) float64 {
	v, _ := m.value("tcptrace_transitions_total", "from", from, "to", to)
	return v
}

// checkCloseWaitMetrics waits for the server's n sockets in CLOSE_WAIT and
// checks the transitions that led there, the count by state and the age of
// the oldest, which it returns with the scrape.
func checkCloseWaitMetrics(t *testing.T, url string, server *testenv.Peer, pid []string, n int) (families, float64) {
	m, body := waitMetrics(t, url, fmt.Sprintf("%d CLOSE_WAIT sockets of pid %d", n, server.PID), func(m families) bool {
		v, _ := m.value("tcptrace_close_wait_sockets", pid...)
		return v == float64(n) && transitions(m, "ESTABLISHED", "CLOSE_WAIT") == float64(n)
	})
	t.Logf("scrape with %d sockets leaked:\n%s", n, tcptraceLines(body))
	for _, tr := range [][2]string{{"LISTEN", "SYN_RECV"}, {"SYN_RECV", "ESTABLISHED"}} {
		if got := transitions(m, tr[0], tr[1]); got != float64(n) {
			t.Errorf("transitions %s -> %s: %v, want %d", tr[0], tr[1], got, n)
		}
	}
	if v, _ := m.value("tcptrace_sockets", "state", "CLOSE_WAIT"); v != float64(n) {
		t.Errorf("sockets in CLOSE_WAIT: %v, want %d", v, n)
	}
	age, ok := m.value("tcptrace_close_wait_oldest_seconds", pid...)
	if !ok || age <= 0 {
		t.Errorf("oldest CLOSE_WAIT age %v (found %v), want > 0", age, ok)
	}
	return m, age
}

// checkStandardSeries checks that a scrape has the tracer's health series
// and the process's and Go's, and a HELP for each of tcptrace's own.
func checkStandardSeries(t *testing.T, m families) {
	for _, s := range []struct {
		name   string
		labels []string
	}{
		{"tcptrace_ringbuf_drops_total", nil},
		{"tcptrace_recursion_misses_total", []string{"program", "state"}},
		{"tcptrace_recursion_misses_total", []string{"program", "syscall"}},
		{"tcptrace_repaired_transitions_total", nil},
		{"process_resident_memory_bytes", nil},
		{"process_cpu_seconds_total", nil},
		{"go_goroutines", nil},
	} {
		if _, ok := m.value(s.name, s.labels...); !ok {
			t.Errorf("no series %s%v", s.name, s.labels)
		}
	}
	for name, mf := range m {
		if strings.HasPrefix(name, "tcptrace_") && mf.GetHelp() == "" {
			t.Errorf("%s has no HELP", name)
		}
	}
}

// checkCloseWaitAgeGrows checks that the oldest CLOSE_WAIT age, age at the
// last scrape, has grown 1.5 s later.
func checkCloseWaitAgeGrows(t *testing.T, url string, pid []string, age float64) {
	// A little later the oldest is older.
	time.Sleep(1500 * time.Millisecond)
	m, _ := waitMetrics(t, url, "the CLOSE_WAIT age", func(m families) bool { _, ok := m.value("tcptrace_close_wait_oldest_seconds", pid...); return ok })
	if later, _ := m.value("tcptrace_close_wait_oldest_seconds", pid...); later < age+1 {
		t.Errorf("oldest CLOSE_WAIT age went from %v to %v in 1.5 s", age, later)
	}
}

// checkServerClosedMetrics has the server close its n sockets and checks
// that its CLOSE_WAIT series go, and its clients' TIME_WAIT sockets show.
func checkServerClosedMetrics(t *testing.T, url string, server *testenv.Peer, pid []string, n int) {
	// The server closes its sockets: its series go.
	server.Send("close")
	server.Expect("closed")
	m, body := waitMetrics(t, url, fmt.Sprintf("pid %d without CLOSE_WAIT", server.PID), func(m families) bool {
		_, ok := m.value("tcptrace_close_wait_sockets", pid...)
		tw, _ := m.value("tcptrace_time_wait_sockets", "destination", server.ListenAddr())
		return !ok && transitions(m, "LAST_ACK", "CLOSE") == float64(n) && tw == float64(n)
	})
	t.Logf("scrape after the server closed:\n%s", tcptraceLines(body))
	if got := transitions(m, "CLOSE_WAIT", "LAST_ACK"); got != float64(n) {
		t.Errorf("transitions CLOSE_WAIT -> LAST_ACK: %v, want %d", got, n)
	}
	if v, _ := m.value("tcptrace_sockets", "state", "CLOSE_WAIT"); v != 0 {
		t.Errorf("sockets in CLOSE_WAIT after close: %v", v)
	}
	if _, ok := m.value("tcptrace_close_wait_oldest_seconds", pid...); ok {
		t.Error("the server's CLOSE_WAIT age outlived its sockets")
	}
}

// checkServeStops stops `tcptrace serve` with SIGTERM and checks it ends
// cleanly, having said where its metrics were.
func checkServeStops(t *testing.T, cmd *exec.Cmd, stderr *bytes.Buffer, url string) {
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: %v; stderr: %s", err, stderr.String())
	}
	if want := "metrics at " + url; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q does not say %q", stderr.String(), want)
	}
}

// TestBPFMetricsModes: stream, leaks and record serve metrics too, and end
// cleanly at Ctrl-C.
func TestBPFMetricsModes(t *testing.T) {
	testenv.RequireBPF(t)
	for _, args := range [][]string{
		{"--port", "1"},
		{"leaks", "--interval", "5s"},
		{"record", "-o", filepath.Join(t.TempDir(), "m.trace")},
	} {
		addr := freeAddr(t)
		cmd, stdout, stderr := startTcptrace(t, append(args, "--metrics-addr", addr)...)
		go io.Copy(io.Discard, stdout)
		waitMetrics(t, "http://"+addr+"/metrics", fmt.Sprintf("a snapshot from %v", args), func(m families) bool {
			_, ok := m.value("tcptrace_sockets", "state", "LISTEN")
			return ok
		})
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Errorf("%v: after SIGINT: %v; stderr: %s", args, err, stderr.String())
		}
	}
}

// TestMetricsAddrInUse: an address already taken fails at once, in one line,
// before any BPF is loaded (so it needs no root).
func TestMetricsAddrInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, stderr, code := runTcptrace(t, nil, "serve", "--metrics-addr", ln.Addr().String())
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "address already in use") {
		t.Errorf("exit %d, stderr %q; want exit 1 and one line saying the address is in use", code, stderr)
	}
}
