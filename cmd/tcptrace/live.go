package main

import (
	"context"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
	"github.com/tcptrace/tcptrace/tracer"
)

// live is what every live mode (the stream, leaks, record, serve) shares: the
// metrics server when asked for, the tracer, a run that Ctrl-C, SIGTERM or
// --duration ends, and the closing of both.
type live struct {
	ctx      context.Context // ends at Ctrl-C or SIGTERM
	filter   *timeline.Filter
	metrics  *metricsFlags
	config   tracer.Config
	duration time.Duration // 0: until stopped
}

// liveMode is what a mode adds to the run (serve adds nothing). start gets
// the open tracer and a function that ends the run, and returns the mode's
// handlers of events and ticks (either may be nil). stop gets the run's error
// once it ended, while the tracer is still open, and returns the mode's.
type liveMode struct {
	start func(tr *tracer.Tracer, cancel context.CancelFunc) (emit func(*tcp.Event), tick func())
	stop  func(tr *tracer.Tracer, err error) error
}

func (l live) run(mode liveMode) error {
	exp, err := l.metrics.start(l.filter)
	if err != nil {
		return err
	}
	defer exp.close()
	tr, err := openTracer(l.ctx, l.config)
	if err != nil {
		return err
	}
	defer tr.Close()
	ctx, cancel := exp.liveContext(l.ctx, tr, l.duration)
	defer cancel()
	var emit func(*tcp.Event)
	var tick func()
	if mode.start != nil {
		emit, tick = mode.start(tr, cancel)
	}
	if emit == nil {
		emit = func(*tcp.Event) {}
	}
	err = exp.finish(tr.Run(ctx, exp.emit(emit), exp.tick(tick)))
	if mode.stop != nil {
		err = mode.stop(tr, err)
	}
	return err
}
