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

// exporter serves the metrics of a running tracer. A nil exporter (no
// --metrics-addr) does nothing.
type exporter struct {
	server    *metrics.Server
	collector *metrics.Collector
	tr        *tracer.Tracer
	// netns is the network namespace whose socket table the tracer walks:
	// the gauges count its sockets, as walking it would.
	netns uint32
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
	// Every network namespace, as the tracer walks them, unless --netns
	// names one.
	e := &exporter{collector: metrics.NewCollector(filter, f.top), netns: filter.NetNS}
	var err error
	if e.server, err = metrics.Listen(f.listen, metrics.NewRegistry(e.collector)); err != nil {
		return nil, err
	}
	return e, nil
}

// attach makes the metrics follow tr's timeline, and says where they are.
func (e *exporter) attach(tr *tracer.Tracer) {
	if e == nil {
		return
	}
	e.tr = tr
	e.collector.Attach(tr.Timeline(), e.netns)
	where := e.server.Addr()
	note := ""
	if !where.Addr().IsLoopback() {
		note = " (not loopback: whoever reaches this address can read this host's connections)"
	}
	fmt.Fprintf(os.Stderr, "tcptrace: metrics at %s%s\n", e.server.URL(), note)
}

// emit passes every event to the metrics before passing it on.
func (e *exporter) emit(next func(*tcp.Event)) func(*tcp.Event) {
	if e == nil {
		return next
	}
	return func(ev *tcp.Event) {
		e.collector.Observe(ev)
		next(ev)
	}
}

// tick brings the tracer's counts in the metrics up to date, after calling
// next (if any). The gauges need no walk: the timeline keeps them current.
func (e *exporter) tick(next func()) func() {
	if e == nil {
		return next
	}
	return func() {
		if next != nil {
			next()
		}
		e.collector.Update(e.tr.Stats(), time.Now())
	}
}

// finish stops the server and returns err.
func (e *exporter) finish(err error) error {
	if e != nil {
		e.server.Close()
	}
	return err
}

// liveContext is the context a live mode runs tr in: it ends with parent,
// or after duration when that is not zero.
func (e *exporter) liveContext(parent context.Context, tr *tracer.Tracer, duration time.Duration) (context.Context, context.CancelFunc) {
	e.attach(tr)
	if duration <= 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, duration)
}

// close stops the server; for deferring, in case finish is never reached.
func (e *exporter) close() {
	if e != nil {
		e.server.Close()
	}
}
