package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/internal/testenv"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
	"github.com/tcptrace/tcptrace/tracefile"
)

var g0 = time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)

// goldenTrace writes a small trace by hand: a server that leaks one
// connection, a client left in TIME_WAIT, a RST and a failed bind.
func goldenTrace(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "golden.trace")
	w, err := tracefile.Create(path, tracefile.Header{Tracer: "tcptrace", Hostname: "web1", Kernel: "6.18", Started: g0,
		Host: tcp.HostTCP{PortRange: [2]int{32768, 60999}, TwReuse: 2, MaxTwBuckets: 131072}},
		tracefile.Options{Frames: func(o tcp.Origin) []tcp.Frame {
			return []tcp.Frame{{Addr: 0x4a1000, Func: "net.(*TCPListener).Accept", File: "/go/src/net/tcpsock.go", Line: 380},
				{Addr: 0x4b2000, Func: "main.serve", File: "/src/api/main.go", Line: 88}}
		}, Process: func(pid uint32) tracefile.Process {
			return tracefile.Process{PID: pid, Comm: "api", Cmdline: "/srv/api --port 8080", Start: g0.Add(-time.Hour)}
		}})
	if err != nil {
		t.Fatal(err)
	}
	srv := netip.MustParseAddrPort("10.0.0.1:8080")
	cli := netip.MustParseAddrPort("10.0.0.9:40000")
	api := tcp.Owner{PID: 4242, Comm: "api", FD: -1, Via: tcp.OwnerListener}
	acc := tcp.Owner{PID: 4242, Comm: "api", FD: 7, Via: tcp.OwnerAccept}
	curl := tcp.Owner{PID: 77, Comm: "curl", FD: 3, Via: tcp.OwnerConnect}
	ev := func(at time.Duration, cookie uint64, kind tcp.Kind, local, remote netip.AddrPort, old, new tcp.State, owner tcp.Owner) timeline.Input {
		return timeline.Input{Kind: timeline.InputEvent, Event: tcp.Event{Kind: kind, Time: g0.Add(at), Cookie: cookie, Inode: cookie + 1000,
			Local: local, Remote: remote, Old: old, New: new, Owner: owner, FD: -1, Origin: tcp.Origin{StackID: -1}}}
	}
	listener := netip.MustParseAddrPort("10.0.0.1:8080")
	ins := []timeline.Input{
		{Kind: timeline.InputTable, Table: timeline.Table{At: g0, Sockets: []tcp.Socket{
			{Cookie: 1, Inode: 1001, Local: listener, State: tcp.StateListen, Reuse: true, Holders: []tcp.Owner{{PID: 4242, Comm: "api", FD: 5, Via: tcp.OwnerSeed}}}}}},
		ev(0, 1, tcp.KindExisting, listener, netip.AddrPort{}, tcp.StateListen, tcp.StateListen, tcp.Owner{PID: 4242, Comm: "api", FD: 5, Via: tcp.OwnerSeed}),
		ev(time.Second, 2, tcp.KindTransition, srv, cli, tcp.StateListen, tcp.StateSynRecv, api),
		ev(time.Second+100*time.Microsecond, 2, tcp.KindTransition, srv, cli, tcp.StateSynRecv, tcp.StateEstablished, tcp.Owner{}),
	}
	accept := ev(time.Second+200*time.Microsecond, 2, tcp.KindAccept, srv, cli, tcp.StateEstablished, tcp.StateEstablished, acc)
	accept.Event.FD = 7
	accept.Event.Origin = tcp.Origin{StackID: 1, Leaf: 0x4b2000, PID: 4242}
	ins = append(ins, accept,
		ev(2*time.Second, 2, tcp.KindTransition, srv, cli, tcp.StateEstablished, tcp.StateCloseWait, tcp.Owner{}),
		ev(3*time.Second, 3, tcp.KindTransition, netip.AddrPort{}, netip.MustParseAddrPort("10.0.0.2:443"), tcp.StateClose, tcp.StateSynSent, curl),
		ev(3*time.Second+time.Millisecond, 3, tcp.KindTransition, netip.MustParseAddrPort("10.0.0.1:50000"), netip.MustParseAddrPort("10.0.0.2:443"), tcp.StateSynSent, tcp.StateEstablished, tcp.Owner{}),
		ev(4*time.Second, 3, tcp.KindTransition, netip.MustParseAddrPort("10.0.0.1:50000"), netip.MustParseAddrPort("10.0.0.2:443"), tcp.StateEstablished, tcp.StateFinWait1, tcp.Owner{}),
		ev(4*time.Second+time.Millisecond, 3, tcp.KindTransition, netip.MustParseAddrPort("10.0.0.1:50000"), netip.MustParseAddrPort("10.0.0.2:443"), tcp.StateFinWait1, tcp.StateFinWait2, tcp.Owner{}),
		ev(4*time.Second+2*time.Millisecond, 3, tcp.KindTransition, netip.MustParseAddrPort("10.0.0.1:50000"), netip.MustParseAddrPort("10.0.0.2:443"), tcp.StateFinWait2, tcp.StateClose, tcp.Owner{}),
		timeline.Input{Kind: timeline.InputTimeWait, TimeWait: timeline.TimeWaitSighting{Cookie: 3, At: g0.Add(4100 * time.Millisecond), Seen: true,
			Substate: tcp.StateTimeWait, Expiry: g0.Add(64*time.Second + 2*time.Millisecond)}},
	)
	reset := ev(5*time.Second, 4, tcp.KindReset, netip.MustParseAddrPort("10.0.0.1:8080"), netip.MustParseAddrPort("10.0.0.7:41000"), tcp.StateEstablished, tcp.StateEstablished, acc)
	reset.Event.ResetSent, reset.Event.ResetReason = true, "TCP_ABORT_ON_CLOSE"
	bind := ev(6*time.Second, 0, tcp.KindBindFail, listener, netip.AddrPort{}, tcp.StateClose, tcp.StateClose, tcp.Owner{PID: 5000, Comm: "api", FD: 3})
	bind.Event.PortHolders = []tcp.Socket{{Cookie: 1, Local: listener, State: tcp.StateListen, Reuse: true, Holders: []tcp.Owner{{PID: 4242, Comm: "api", FD: 5}}}}
	ins = append(ins, reset, bind,
		timeline.Input{Kind: timeline.InputTable, Table: timeline.Table{At: g0.Add(40 * time.Second), Sockets: []tcp.Socket{
			{Cookie: 1, Inode: 1001, Local: listener, State: tcp.StateListen, Reuse: true, Holders: []tcp.Owner{{PID: 4242, Comm: "api", FD: 5}}},
			{Cookie: 2, Inode: 1002, Local: srv, Remote: cli, State: tcp.StateCloseWait, Holders: []tcp.Owner{{PID: 4242, Comm: "api", FD: 7}}},
			{Cookie: 3, Local: netip.MustParseAddrPort("10.0.0.1:50000"), Remote: netip.MustParseAddrPort("10.0.0.2:443"), State: tcp.StateTimeWait, TimeWaitExpiry: g0.Add(64 * time.Second)},
		}}},
		timeline.Input{Kind: timeline.InputStats, Stats: timeline.StatsAt{At: g0.Add(40 * time.Second), Stats: timeline.Stats{Events: 11}}},
	)
	for i := range ins {
		if err := w.Record(&ins[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func runOffline(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(tcptraceBinary, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "NO_COLOR=1")
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// TestGolden replays and reports a hand-made trace; no root needed.
func TestGolden(t *testing.T) {
	path := goldenTrace(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"replay.golden", []string{"replay", path, "--existing"}},
		{"replay-json.golden", []string{"replay", path, "--json", "--port", "8080"}},
		{"report.golden", []string{"report", path, "--threshold", "30s"}},
		{"report-at.golden", []string{"report", path, "--at", "03:00:03", "--threshold", "0s"}},
		{"timelines.golden", []string{"report", path, "--timelines"}},
	} {
		out, stderr, code := runOffline(t, tc.args...)
		if code != 0 {
			t.Errorf("%v: exit %d: %s", tc.args, code, stderr)
		}
		testenv.Golden(t, tc.name, strings.ReplaceAll(out, path, "TRACE"))
	}
}

func TestTraceBadInput(t *testing.T) {
	path := goldenTrace(t)
	data, _ := os.ReadFile(path)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	corrupt := append([]byte(nil), data...)
	corrupt[len(corrupt)/2] ^= 0x55
	cut := write("cut", data[:len(data)-30])
	for _, tc := range []struct {
		path     string
		code     int
		stderrRe string
	}{
		{write("corrupt", corrupt), 1, "corrupt: byte "},
		{write("text", []byte("hello\n")), 1, "not a tcptrace trace"},
		{write("v9", append([]byte("tcptrace"), 9, 0)), 1, "version 9"},
		{cut, 0, "ends in the middle of a record"},
		{filepath.Join(dir, "missing"), 1, "no such file"},
		{dir, 1, "is a directory, not a trace file"},
	} {
		_, stderr, code := runOffline(t, "report", tc.path)
		if code != tc.code || !strings.Contains(stderr, tc.stderrRe) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("report %s: exit %d, stderr %q; want exit %d and one line with %q", filepath.Base(tc.path), code, stderr, tc.code, tc.stderrRe)
		}
	}
	for _, args := range [][]string{{"report"}, {"report", path, "--at", "yesterday"}, {"report", path, "--conn", "x"}, {"record"}, {"record", "-o", "x", "--max-size", "lots"}} {
		if _, stderr, code := runOffline(t, args...); code != 2 || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want exit 2", args, code, stderr)
		}
	}
	// Nothing is known of the time after a trace's end.
	if out, stderr, code := runOffline(t, "report", path, "--at", "23:59:59"); code != 2 || out != "" || !strings.Contains(stderr, "after the trace ends") {
		t.Errorf("report --at after the end: exit %d, stderr %q, %d bytes out; want exit 2", code, stderr, len(out))
	}
	// A trace with nothing timed in it: no negative duration, no year 1.
	empty := filepath.Join(dir, "empty.trace")
	w, err := tracefile.Create(empty, tracefile.Header{Started: time.Date(2026, 12, 3, 3, 0, 0, 0, time.UTC)}, tracefile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, stderr, code := runOffline(t, "replay", empty); code != 0 || strings.Contains(stderr, "in -") {
		t.Errorf("replay of an empty trace: exit %d, stderr %q", code, stderr)
	}
	if out, _, code := runOffline(t, "report", empty); code != 0 || strings.Contains(out, "0001") {
		t.Errorf("report of an empty trace: exit %d:\n%s", code, out)
	}
}

// leakFDs is what a report says of one process: pid, comm, fds, count.
func leakFDs(t *testing.T, out string, pid int) string {
	t.Helper()
	var rep analysis.LeakReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not a JSON report: %v\n%s", err, out)
	}
	for _, p := range rep.Processes {
		if int(p.PID) == pid {
			return fmt.Sprintf("%d %s %v %d", p.PID, p.Comm, p.FDs, p.Count)
		}
	}
	return "absent"
}

// TestBPFRecordReport: a trace recorded while a server leaks gives, through
// report, the leak report that leaks --once gives live.
func TestBPFRecordReport(t *testing.T) {
	testenv.RequireBPF(t)
	trace := filepath.Join(t.TempDir(), "leak.trace")
	_, recErr, wait := startRecord(t, "-o", trace, "--duration", "4s")
	server, _ := testenv.LeakyServer(t, 3)
	if err := wait(); err != nil {
		t.Fatalf("record: %v: %s", err, recErr())
	}
	port := fmt.Sprint(netip.MustParseAddrPort(server.ListenAddr()).Port())
	live, stderr, code := runTcptrace(t, nil, "leaks", "--once", "--json", "--threshold", "1s", "--lport", port)
	if code != exitLeaks {
		t.Fatalf("leaks --once: exit %d: %s", code, stderr)
	}
	report, stderr, code := runOffline(t, "report", trace, "--json", "--threshold", "1s", "--lport", port)
	if code != 0 {
		t.Fatalf("report: exit %d: %s", code, stderr)
	}
	want := leakFDs(t, live, server.PID)
	if got := leakFDs(t, report, server.PID); got != want || want == "absent" {
		t.Errorf("report says %q, leaks --once said %q", got, want)
	}
	if st, _ := os.Stat(trace); st.Mode().Perm() != 0o600 {
		t.Errorf("trace mode %v", st.Mode().Perm())
	}
	// The recorded origin names the accepting function without the process.
	var rep analysis.LeakReport
	json.Unmarshal([]byte(report), &rep)
	for _, p := range rep.Processes {
		if int(p.PID) == server.PID && (len(p.Origins) != 1 || !strings.HasPrefix(p.Origins[0].Where, "main.(*peer).listen.func1")) {
			t.Errorf("origins from the trace: %+v", p.Origins)
		}
	}
}

// TestBPFRecordKilled: after kill -9 of the recorder, report reads the file
// up to the last flush and says where it ended.
func TestBPFRecordKilled(t *testing.T) {
	testenv.RequireBPF(t)
	trace := filepath.Join(t.TempDir(), "killed.trace")
	rec, _, _ := startRecord(t, "-o", trace)
	server := testenv.StartPeer(t, "server", "127.0.0.1:0")
	client := testenv.StartPeer(t, "client", server.ListenAddr())
	cli := client.Conn("connected")
	server.Expect("accepted")
	client.Send("close")
	server.Expect("eof")

	// The server end's transitions up to CLOSE_WAIT, as a replay of the
	// file the recorder is writing reads them.
	replay := func() (states []string, stderr string, code int) {
		out, stderr, code := runOffline(t, "replay", trace, "--json", "--lport", fmt.Sprint(cli.Remote.Port()))
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["type"] == "transition" && m["remote"] == cli.Local.String() {
				states = append(states, m["new"].(string))
			}
		}
		return states, stderr, code
	}
	// Kill it once a flush (one a second) has written the CLOSE_WAIT.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if states, _, _ := replay(); slices.Contains(states, "CLOSE_WAIT") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the recorder wrote no CLOSE_WAIT of the server end in 15s")
		}
	}
	rec.Process.Signal(syscall.SIGKILL)
	rec.Wait()

	states, stderr, code := replay()
	if code != 0 || !(strings.Contains(stderr, "no end record") || strings.Contains(stderr, "ends in the middle of a record")) {
		t.Fatalf("replay of a killed recording: exit %d, stderr %q", code, stderr)
	}
	if !slices.Contains(states, "CLOSE_WAIT") {
		t.Errorf("the server end's transitions before the kill are missing: %v\n%s", states, stderr)
	}
}

// startRecord starts tcptrace record with args and returns once it says it
// is recording, with its standard error so far and to come, and a wait for
// its end after which that standard error is whole.
func startRecord(t *testing.T, args ...string) (*exec.Cmd, func() string, func() error) {
	t.Helper()
	rec := exec.Command(tcptraceBinary, append([]string{"record"}, args...)...)
	pipe, err := rec.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Process.Kill(); rec.Wait() })
	var mu sync.Mutex
	var stderr strings.Builder
	started, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			mu.Lock()
			stderr.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.HasPrefix(sc.Text(), "recording to ") {
				close(started)
			}
		}
	}()
	text := func() string {
		mu.Lock()
		defer mu.Unlock()
		return stderr.String()
	}
	select {
	case <-started:
	case <-ended:
		t.Fatalf("record ended before it started: %s", text())
	case <-time.After(60 * time.Second):
		t.Fatalf("record did not start in 60s: %s", text())
	}
	// Wait closes the pipe: only once all of it was read.
	wait := func() error {
		<-ended
		return rec.Wait()
	}
	return rec, text, wait
}

// TestBPFRecordPidFilter: a recording filtered by --pid keeps, of the
// socket table, only what that process holds: not the other processes'
// sockets nor their names.
func TestBPFRecordPidFilter(t *testing.T) {
	testenv.RequireBPF(t)
	other, _ := testenv.LeakyServer(t, 3)
	target := testenv.StartPeer(t, "server", "127.0.0.1:0")
	listen := netip.MustParseAddrPort(target.ListenAddr())
	trace := filepath.Join(t.TempDir(), "pid.trace")
	if _, stderr, code := runTcptrace(t, nil, "record", "-o", trace, "--pid", fmt.Sprint(target.PID), "--duration", "2s"); code != 0 {
		t.Fatalf("record: exit %d: %s", code, stderr)
	}
	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := tracefile.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var in timeline.Input
	tables, listener := 0, false
	for rd.Next(&in) == nil {
		if in.Kind != timeline.InputTable {
			continue
		}
		tables++
		for _, s := range in.Table.Sockets {
			listener = listener || s.Local == listen
			for _, h := range s.Holders {
				if int(h.PID) != target.PID {
					t.Errorf("the trace holds %v -> %v of process %d (%s); --pid %d (the leaky server is %d)",
						s.Local, s.Remote, h.PID, h.Comm, target.PID, other.PID)
				}
			}
		}
	}
	if tables == 0 || !listener {
		t.Errorf("%d table walks recorded; the target's listener %v in them: %v", tables, listen, listener)
	}
}

// TestBPFRecordDiskFull: a recording that fills its file system ends with
// one line saying so and exit status 1; its summary counts the bytes that
// reached the file, and the trace reads back up to where the disk filled.
func TestBPFRecordDiskFull(t *testing.T) {
	testenv.RequireBPF(t)
	dir := smallFS(t, "size=1m")
	trace := filepath.Join(dir, "full.trace")
	churn, err := testenv.Build(t.TempDir(), "bench/churn")
	if err != nil {
		t.Fatal(err)
	}
	// Connections churn until the disk is full, in the first walk (on a
	// host with many sockets) or in the events after.
	load := exec.Command(churn, "-n", "1000000", "-workers", "2", "-timeout", "60s")
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Process.Kill(); load.Wait() })
	rec := exec.Command(tcptraceBinary, "record", "-o", trace)
	var stderr bytes.Buffer
	rec.Stderr = &stderr
	if err := rec.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rec.Wait() }()
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		rec.Process.Kill()
		t.Fatalf("the recorder still runs after 40s of churn onto 1 MiB:\n%s", stderr.String())
	}
	out := stderr.String()
	if rec.ProcessState.ExitCode() != 1 || !strings.Contains(out, "full.trace: no space left on device") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and the full disk named with the trace", rec.ProcessState.ExitCode(), out)
	}
	st, err := os.Stat(trace)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("(%d bytes)", st.Size()); !strings.Contains(out, want) {
		t.Errorf("the summary does not count the %d bytes on disk:\n%s", st.Size(), out)
	}
	if _, stderr, code := runOffline(t, "report", trace); code != 0 {
		t.Errorf("report of the full trace: exit %d, %s", code, stderr)
	}
}

// TestBPFRecordReadOnly: a trace that cannot be created is one line and
// exit status 1, before anything is loaded.
func TestBPFRecordReadOnly(t *testing.T) {
	testenv.RequireBPF(t)
	dir := smallFS(t, "ro")
	_, stderr, code := runTcptrace(t, nil, "record", "-o", filepath.Join(dir, "x.trace"), "--duration", "1s")
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "read-only file system") {
		t.Errorf("exit %d, stderr %q; want exit 1 and one line naming the read-only file system", code, stderr)
	}
}

// smallFS mounts a tmpfs with these options for the test.
func smallFS(t *testing.T, options string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", options, "tcptrace-test", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// TestBPFRecordStopWhileRotating: a stop request while a recording rotates
// its files under load ends it within the second, and every file reads.
func TestBPFRecordStopWhileRotating(t *testing.T) {
	testenv.RequireBPF(t)
	trace := filepath.Join(t.TempDir(), "rot.trace")
	churn, err := testenv.Build(t.TempDir(), "bench/churn")
	if err != nil {
		t.Fatal(err)
	}
	rec, stderr, wait := startRecord(t, "-o", trace, "--max-size", "1M", "--max-files", "3")
	load := exec.Command(churn, "-n", "1000000", "-workers", "2", "-timeout", "40s")
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Process.Kill(); load.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(trace + ".1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rotation in 30s:\n%s", stderr())
		}
	}
	rec.Process.Signal(syscall.SIGINT)
	sent := time.Now()
	if err := wait(); err != nil {
		t.Fatalf("record: %v:\n%s", err, stderr())
	}
	if took := time.Since(sent); took > 1500*time.Millisecond {
		t.Errorf("ended %v after SIGINT", took.Round(time.Millisecond))
	}
	for _, p := range []string{trace, trace + ".1"} {
		if _, errs, code := runOffline(t, "report", p); code != 0 || errs != "" {
			t.Errorf("report %s: exit %d, %s", filepath.Base(p), code, errs)
		}
	}
}

// TestBPFRecordKilledStarting: a recorder killed while it starts leaves a
// trace that reads, or none; never an empty file.
func TestBPFRecordKilledStarting(t *testing.T) {
	testenv.RequireBPF(t)
	for _, delay := range []time.Duration{20 * time.Millisecond, 200 * time.Millisecond, 700 * time.Millisecond, 1500 * time.Millisecond} {
		trace := filepath.Join(t.TempDir(), "killed.trace")
		rec := exec.Command(tcptraceBinary, "record", "-o", trace)
		if err := rec.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		rec.Process.Kill()
		rec.Wait()
		if _, err := os.Stat(trace); err != nil {
			continue // none
		}
		if _, errs, code := runOffline(t, "report", trace); code != 0 {
			t.Errorf("killed after %v: report exit %d, %s", delay, code, errs)
		}
	}
}
