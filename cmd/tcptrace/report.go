package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/render"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

const reportHelp = `tcptrace report: what a recorded trace says, as 'tcptrace leaks' would have
said it live: CLOSE_WAIT owners and fds, stuck closes, TIME_WAIT pressure, RST
closes, failed binds. As of the end of the trace, or of --at. With --conn or
--timelines, the history of each connection instead; with --lives, each
connection's life as 'tcptrace lives' shows it. Needs no root.

Usage:
  tcptrace report FILE [flags]

Examples:
  tcptrace report web1.trace
  tcptrace report web1.trace --at 03:12:00 --json
  tcptrace report web1.trace --timelines --rport 5432
  tcptrace report web1.trace --conn 864562
  tcptrace report web1.trace --lives --min-duration 1s --sort sent

--at takes a time (RFC 3339, or 15:04:05 on the day the trace began) or an
offset from the start of the trace (+90s, +1h).

Flags:
`

type reportFlags struct {
	filterFlags
	at        string
	conns     []string
	timelines bool
	lives     bool
	minLife   time.Duration
	sortBy    string
	threshold time.Duration
	json      bool
	color     string
}

func (f *reportFlags) register(fs *pflag.FlagSet) {
	f.filterFlags.register(fs)
	fs.StringVar(&f.at, "at", "", "report as of this time instead of the end of the trace")
	fs.StringSliceVar(&f.conns, "conn", nil, "show the timeline of this connection (its conn id; repeatable)")
	fs.BoolVar(&f.timelines, "timelines", false, "show the timeline of every connection the filters select")
	fs.BoolVar(&f.lives, "lives", false, "show the life of every connection that closed, as 'tcptrace lives' does")
	fs.DurationVar(&f.minLife, "min-duration", 0, "with --lives: only connections that lived at least this long")
	fs.StringVar(&f.sortBy, "sort", "closed", "with --lives: order by closed, duration, sent, received or retransmits (the largest first)")
	fs.DurationVar(&f.threshold, "threshold", analysis.DefaultLeakThreshold, "how long in CLOSE_WAIT counts as a leak")
	fs.BoolVar(&f.json, "json", false, "print JSON")
	fs.StringVar(&f.color, "color", "auto", "color: auto, always or never (NO_COLOR is respected)")
}

// parseAt reads --at against the trace's start.
func parseAt(s string, started time.Time) (time.Time, error) {
	if rest, ok := strings.CutPrefix(s, "+"); ok {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 {
			return time.Time{}, fmt.Errorf("invalid --at %q: an offset looks like +90s or +1h", s)
		}
		return started.Add(d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	local := started.Local()
	for _, layout := range []string{"15:04:05.999999999", "15:04"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return time.Date(local.Year(), local.Month(), local.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.Local), nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid --at %q: want 15:04:05, an RFC 3339 time, or an offset like +90s", s)
}

func inputTime(in *timeline.Input) time.Time {
	switch in.Kind {
	case timeline.InputEvent:
		return in.Event.Time
	case timeline.InputTimeWait:
		return in.TimeWait.At
	case timeline.InputTable:
		return in.Table.At
	default:
		return in.Stats.At
	}
}

func runReport(ctx context.Context, args []string) error {
	var f reportFlags
	fs := newFlagSet("tcptrace report", reportHelp)
	f.register(fs)
	conns := map[uint64]bool{}
	tr, err := openOffline(ctx, fs, args, &f.filterFlags, &f.color, func() error {
		for _, c := range f.conns {
			id, err := strconv.ParseUint(c, 10, 64)
			if err != nil {
				return usagef("invalid --conn %q: want a connection id (the conn field of the stream)", c)
			}
			conns[id] = true
		}
		if f.threshold < 0 {
			return usagef("invalid --threshold %v: want a positive duration", f.threshold)
		}
		if lifeOrder[f.sortBy] == nil {
			return usagef("invalid --sort %q: want closed, duration, sent, received or retransmits", f.sortBy)
		}
		if f.minLife < 0 {
			return usagef("invalid --min-duration %v: want a positive duration", f.minLife)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer tr.close()
	var at time.Time
	var stop func(*timeline.Input) bool
	if f.at != "" {
		if at, err = parseAt(f.at, tr.rd.Header.Started); err != nil {
			return usageError{err}
		}
		stop = func(in *timeline.Input) bool { return inputTime(in).After(at) }
	}

	if f.lives {
		return reportLives(tr, stop, &f)
	}
	histories := map[uint64][]tcp.Event{}
	var order []uint64
	timelines := f.timelines || len(conns) > 0
	emit := func(ev *tcp.Event) {
		if !timelines || (len(conns) > 0 && !conns[ev.Cookie]) || !tr.filter.Match(ev) {
			return
		}
		if histories[ev.Cookie] == nil {
			order = append(order, ev.Cookie)
		}
		histories[ev.Cookie] = append(histories[ev.Cookie], *ev)
	}
	readErr := tr.feed(stop, emit)
	asOf := at
	if asOf.IsZero() {
		asOf = tr.rd.Last
		if asOf.IsZero() { // no timed record: as of the start
			asOf = tr.rd.Header.Started
		}
	} else if readErr == nil && at.After(tr.rd.Last) {
		// Nothing is known of the time after the trace.
		return usagef("--at %s is after the trace ends (%s)", f.at, tr.rd.Last.Format("2006-01-02 15:04:05"))
	}

	switch {
	case timelines:
		render.Timelines(os.Stdout, order, histories, tr.tl, asOf, f.json)
	default:
		origin := func(c *timeline.Conn) []tcp.Frame { return tr.rd.Origin(c.Origin) }
		rep := analysis.FilteredLeakReport(tr.tl.TableAt(asOf), tr.tl, tr.rd.Header.Host, asOf, f.threshold, &tr.filter, origin)
		if f.json {
			fmt.Println(string(render.JSON(&rep)))
		} else {
			render.LeakReport(os.Stdout, "tcptrace report "+tr.path, &rep, tr.tl.Stats.Stats)
		}
	}
	return tr.finish(readErr)
}
