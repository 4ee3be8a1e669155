package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcptrace/tcptrace/analysis"
	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

const reportHelp = `tcptrace report: what a recorded trace says, as 'tcptrace leaks' would have
said it live: CLOSE_WAIT owners and fds, stuck closes, TIME_WAIT pressure, RST
closes, failed binds. As of the end of the trace, or of --at. With --conn or
--timelines, the history of each connection instead. Needs no root.

Usage:
  tcptrace report FILE [flags]

Examples:
  tcptrace report web1.trace
  tcptrace report web1.trace --at 03:12:00 --json
  tcptrace report web1.trace --timelines --rport 5432
  tcptrace report web1.trace --conn 864562

--at takes a time (RFC 3339, or 15:04:05 on the day the trace began) or an
offset from the start of the trace (+90s, +1h).

Flags:
`

type reportFlags struct {
	filterFlags
	at        string
	conns     []string
	timelines bool
	threshold time.Duration
	json      bool
	color     string
}

func (f *reportFlags) register(fs *pflag.FlagSet) {
	f.filterFlags.register(fs)
	fs.StringVar(&f.at, "at", "", "report as of this time instead of the end of the trace")
	fs.StringSliceVar(&f.conns, "conn", nil, "show the timeline of this connection (its conn id; repeatable)")
	fs.BoolVar(&f.timelines, "timelines", false, "show the timeline of every connection the filters select")
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

func runReport(args []string) error {
	var f reportFlags
	fs := newFlagSet("tcptrace report", reportHelp)
	f.register(fs)
	path, err := parseFileArgs(fs, args)
	if err != nil {
		return err
	}
	filter, err := f.offlineFilter()
	if err != nil {
		return err
	}
	conns := map[uint64]bool{}
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
	if err := setColor(f.color); err != nil {
		return err
	}
	tf, err := openTrace(path)
	if err != nil {
		return err
	}
	defer tf.close()
	var at time.Time
	var stop func(*timeline.Input) bool
	if f.at != "" {
		if at, err = parseAt(f.at, tf.rd.Header.Started); err != nil {
			return usageError{err}
		}
		stop = func(in *timeline.Input) bool { return inputTime(in).After(at) }
	}

	tl := timeline.NewTimeline(tf.rd.Header.Started)
	histories := map[uint64][]tcp.Event{}
	var order []uint64
	timelines := f.timelines || len(conns) > 0
	emit := func(ev *tcp.Event) {
		if !timelines || (len(conns) > 0 && !conns[ev.Cookie]) || !filter.Match(ev) {
			return
		}
		if histories[ev.Cookie] == nil {
			order = append(order, ev.Cookie)
		}
		histories[ev.Cookie] = append(histories[ev.Cookie], *ev)
	}
	readErr := tf.feed(tl, stop, emit)
	asOf := at
	if asOf.IsZero() {
		asOf = tf.rd.Last
	}

	if timelines {
		printTimelines(os.Stdout, order, histories, tl, asOf, f.json)
	} else {
		origin := func(c *timeline.Conn) []tcp.Frame { return tf.rd.Origin(c.Origin) }
		rep := analysis.FilteredLeakReport(tl.TableAt(asOf), tl, tf.rd.Header.Host, asOf, f.threshold, &filter, origin)
		if f.json {
			b, _ := json.Marshal(rep)
			fmt.Println(string(b))
		} else {
			printLeakReport(os.Stdout, "tcptrace report "+path, &rep, tl.Stats.Stats)
		}
	}
	return tf.finish(readErr)
}

// printTimelines shows each connection's history: every state with its time
// and how long it lasted.
func printTimelines(w io.Writer, order []uint64, histories map[uint64][]tcp.Event, tl *timeline.Timeline, asOf time.Time, asJSON bool) {
	slices.SortStableFunc(order, func(a, b uint64) int { return histories[a][0].Time.Compare(histories[b][0].Time) })
	for _, cookie := range order {
		evs := histories[cookie]
		first := evs[0]
		if asJSON {
			b := fmt.Appendf(nil, `{"conn":%d,"local":%q,"remote":%q,"events":[`, cookie, formatAddr(first.Local), formatAddr(first.Remote))
			for i := range evs {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSON(b, &evs[i])
			}
			fmt.Fprintf(w, "%s]}\n", b)
			continue
		}
		owner := "owner unknown"
		for _, ev := range evs {
			if ev.Owner.Known() {
				owner = fmt.Sprintf("owner %d/%s fd %d", ev.Owner.PID, ev.Owner.Comm, ev.Owner.FD)
			}
		}
		fmt.Fprintf(w, "conn %d  %s -> %s  %s\n", cookie, formatAddr(first.Local), formatAddr(first.Remote), owner)
		for i := range evs {
			fmt.Fprintf(w, "  %s  %s\n", evs[i].Time.Format("15:04:05.000000"), appendWhat(nil, &evs[i]))
		}
		if c := tl.Conn(cookie); c != nil {
			since := formatDuration(asOf.Sub(c.Since))
			if c.SinceBeforeTrace {
				since = ">" + since
			}
			fmt.Fprintf(w, "  still %s at %s, for %s\n", c.State, asOf.Format("15:04:05.000000"), since)
		}
		fmt.Fprintln(w)
	}
}
