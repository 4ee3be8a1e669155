package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcptrace/tcptrace/metrics"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
	"github.com/tcptrace/tcptrace/tracer"
)

// metricsFlags are the flags of every mode that can serve Prometheus metrics.
type metricsFlags struct {
	addr string
	top  int
	// listen is addr, checked.
	listen netip.AddrPort
}

func (f *metricsFlags) register(fs *pflag.FlagSet, defaultAddr string) {
	fs.StringVar(&f.addr, "metrics-addr", defaultAddr, "serve Prometheus metrics at http://ADDR/metrics; ADDR is IP:PORT, a port alone means 127.0.0.1")
	fs.IntVar(&f.top, "metrics-top", metrics.DefaultTop, "series of their own for at most this many processes, destinations and failed binds; the rest are summed as \"other\"")
}

// Snapshots for the metrics are taken this often, or less often when
// walking the socket table is slow, so that it takes at most 1/walkShare of
// a CPU.
const (
	snapshotEvery = time.Second
	walkShare     = 20
)

// exporter serves the metrics of a running tracer. A nil exporter (no
// --metrics-addr) does nothing.
type exporter struct {
	server    *metrics.Server
	collector *metrics.Collector
	observer  *metrics.Observer
	tr        *tracer.Tracer
	cancel    context.CancelFunc
	next      time.Time
	err       error
}

// check checks the flags; every error is a usage error.
func (f *metricsFlags) check() error {
	if f.top < 1 {
		return usagef("invalid --metrics-top %d: want at least 1", f.top)
	}
	if f.addr == "" {
		return nil
	}
	addr, err := metrics.ParseListenAddr(f.addr)
	if err != nil {
		return usageError{err}
	}
	f.listen = addr
	return nil
}

// start checks the flags and, when an address was given, listens on it at
// once, so that an address in use fails before tracing starts.
func (f *metricsFlags) start(filter *timeline.Filter) (*exporter, error) {
	if err := f.check(); err != nil || f.addr == "" {
		return nil, err
	}
	e := &exporter{collector: metrics.NewCollector(f.top), observer: metrics.NewObserver(filter, f.top)}
	var err error
	if e.server, err = metrics.Listen(f.listen, metrics.NewRegistry(e.collector)); err != nil {
		return nil, err
	}
	return e, nil
}

// attach starts taking snapshots of tr, and says where the metrics are. A
// snapshot that fails calls cancel, and err tells why.
func (e *exporter) attach(tr *tracer.Tracer, cancel context.CancelFunc) {
	if e == nil {
		return
	}
	e.tr, e.cancel = tr, cancel
	where := e.server.Addr()
	note := ""
	if !where.Addr().IsLoopback() {
		note = " (not loopback: whoever reaches this address can read this host's connections)"
	}
	fmt.Fprintf(os.Stderr, "tcptrace: metrics at %s%s\n", e.server.URL(), note)
}

// emit counts every event before passing it on.
func (e *exporter) emit(next func(*tcp.Event)) func(*tcp.Event) {
	if e == nil {
		return next
	}
	return func(ev *tcp.Event) {
		e.observer.Observe(ev)
		next(ev)
	}
}

// tick takes a snapshot when one is due, after calling next (if any).
func (e *exporter) tick(next func()) func() {
	if e == nil {
		return next
	}
	return func() {
		if next != nil {
			next()
		}
		e.snapshot()
	}
}

// snapshot runs on Run's goroutine, which alone may read the timeline.
func (e *exporter) snapshot() {
	now := time.Now()
	if now.Before(e.next) || e.err != nil {
		return
	}
	table, err := e.tr.SocketTable()
	if err != nil {
		e.err = fmt.Errorf("metrics: %w", err)
		e.cancel()
		return
	}
	s := e.observer.Snapshot(table, e.tr.Timeline(), e.tr.Stats(), now)
	s.Took = time.Since(now)
	e.collector.Publish(s)
	e.next = now.Add(max(snapshotEvery, walkShare*s.Took))
}

// finish stops the server and returns err, or else the exporter's own error.
func (e *exporter) finish(err error) error {
	if e == nil {
		return err
	}
	e.server.Close()
	if err == nil {
		err = e.err
	}
	return err
}

// liveContext is the context a live mode runs tr in: it ends at Ctrl-C or
// SIGTERM, after duration when that is not zero, or when the metrics server
// fails.
func (e *exporter) liveContext(tr *tracer.Tracer, duration time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := interrupted(duration)
	ctx, cancel := context.WithCancel(ctx)
	e.attach(tr, cancel)
	return ctx, func() { cancel(); stop() }
}

// close stops the server; for deferring, in case finish is never reached.
func (e *exporter) close() {
	if e != nil {
		e.server.Close()
	}
}
