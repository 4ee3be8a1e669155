//go:build linux

package tracer

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/internal/testenv"
	"github.com/tcptrace/tcptrace/tcp"
)

// The BPF tests drive real connections between real processes: testpeer
// (internal/testpeer) plays the server and the client, and cLeakServer
// (testdata/leakserver.c) a C server that never closes.

var cLeakServer, cHolders string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tcptrace-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testenv.PeerBinary, err = testenv.Build(dir, "internal/testpeer")
	if err == nil {
		cLeakServer, err = testenv.BuildC(dir, "testdata/leakserver.c")
	}
	if err == nil {
		cHolders, err = testenv.BuildC(dir, "testdata/holders.c")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// recorder runs a tracer and keeps every event it emits.
type recorder struct {
	t      *testing.T
	tr     *Tracer
	mu     sync.Mutex
	events []tcp.Event
	done   chan error
	calls  chan func() // run on Run's goroutine, at its next tick
}

// inRun runs fn on the goroutine that runs the tracer, as tick callbacks do.
func (r *recorder) inRun(fn func()) {
	done := make(chan struct{})
	r.calls <- func() { fn(); close(done) }
	<-done
}

func startTracer(t *testing.T, cfg Config) *recorder {
	t.Helper()
	testenv.RequireBPF(t)
	tr, err := Open(cfg)
	if err != nil {
		t.Fatalf("open tracer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{t: t, tr: tr, done: make(chan error, 1), calls: make(chan func())}
	ready := make(chan struct{})
	go func() {
		first := true
		r.done <- tr.Run(ctx, func(ev *tcp.Event) {
			kept := *ev
			kept.Sharers = slices.Clone(ev.Sharers) // the timeline's, not ours to keep
			r.mu.Lock()
			r.events = append(r.events, kept)
			r.mu.Unlock()
		}, func() {
			if first {
				first = false
				close(ready)
			}
			select {
			case fn := <-r.calls:
				fn()
			default:
			}
		})
	}()
	select {
	case <-ready:
	case err := <-r.done:
		t.Fatalf("tracer stopped at start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("tracer run: %v", err)
		}
		tr.Close()
	})
	return r
}

// clientHoldsTimeWait makes a connection whose client shuts down its side
// first and keeps its fd, and whose server then closes: the client's end
// waits in TIME_WAIT. It returns once the tracer shows that, with the
// peers, the client's end and the line of its TIME_WAIT.
func clientHoldsTimeWait(t *testing.T, r *recorder) (server, client *testenv.Peer, cli testenv.Conn, entered tcp.Event) {
	t.Helper()
	server, client, _, cli = testenv.Pair(t, "127.0.0.1:0")
	client.Send("shutdown")
	client.Expect("shut")
	server.Expect("eof")
	server.Send("close")
	server.Expect("closed")
	entered = r.waitFor("client FIN_WAIT2->TIME_WAIT", 5*time.Second, on(cli.Local, cli.Remote, tcp.KindTransition, tcp.StateFinWait2, tcp.StateTimeWait))
	return server, client, cli, entered
}

// waitFor waits until an event matches and returns it.
func (r *recorder) waitFor(what string, timeout time.Duration, match func(*tcp.Event) bool) tcp.Event {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		for i := range r.events {
			if match(&r.events[i]) {
				ev := r.events[i]
				r.mu.Unlock()
				return ev
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			r.dump()
			r.t.Fatalf("no event %s within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *recorder) snapshot() []tcp.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tcp.Event(nil), r.events...)
}

func (r *recorder) dump() {
	for _, ev := range r.snapshot() {
		r.t.Logf("%s %d %s %s->%s %s->%s owner=%+v running=%+v fd=%d src=%s", ev.Kind, ev.Cookie, ev.Time.Format("15:04:05.000"),
			ev.Local, ev.Remote, ev.Old, ev.New, ev.Owner, ev.Running, ev.FD, ev.Source)
	}
}

// on matches events of the connection end with this local and remote address.
func on(local, remote netip.AddrPort, kind tcp.Kind, old, new tcp.State) func(*tcp.Event) bool {
	return func(ev *tcp.Event) bool {
		return ev.Kind == kind && ev.Local == local && ev.Remote == remote && (kind != tcp.KindTransition || (ev.Old == old && ev.New == new))
	}
}
