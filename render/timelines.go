package render

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// Timelines shows each connection's history, oldest connection first: every
// state with its time and how long it lasted, or as JSON lines.
func Timelines(w io.Writer, order []uint64, histories map[uint64][]tcp.Event, tl *timeline.Timeline, asOf time.Time, asJSON bool) {
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
				b = AppendJSON(b, &evs[i])
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
			since := Duration(asOf.Sub(c.Since))
			if c.SinceBeforeTrace {
				since = ">" + since
			}
			fmt.Fprintf(w, "  still %s at %s, for %s\n", c.State, asOf.Format("15:04:05.000000"), since)
		}
		fmt.Fprintln(w)
	}
}
