package render

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// Summary counts what was shown, for the report at exit. The zero value is ready.
type Summary struct {
	// transitions counts by old and new state (the kernel's numbers are small).
	transitions [16][16]uint64
	events      uint64
}

// Add counts one event shown.
func (s *Summary) Add(ev *tcp.Event) {
	s.events++
	if ev.Kind == tcp.KindTransition {
		s.transitions[ev.Old&15][ev.New&15]++
	}
}

// Print writes the transitions shown by old and new state, and the lost line.
func (s *Summary) Print(w io.Writer, st timeline.Stats, elapsed time.Duration) {
	type row struct {
		from, to tcp.State
		n        uint64
	}
	var rows []row
	var total uint64
	for from := range s.transitions {
		for to, n := range s.transitions[from] {
			if n > 0 {
				rows = append(rows, row{tcp.State(from), tcp.State(to), n})
				total += n
			}
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].n != rows[j].n {
			return rows[i].n > rows[j].n
		}
		return rows[i].from < rows[j].from || (rows[i].from == rows[j].from && rows[i].to < rows[j].to)
	})
	fmt.Fprintf(w, "\n%d transitions shown in %s:\n", total, Duration(elapsed))
	for _, r := range rows {
		fmt.Fprintf(w, "  %8d  %s -> %s\n", r.n, r.from, r.to)
	}
	Lost(w, st)
}

// Lost says what tracing lost and repaired, in one line.
func Lost(w io.Writer, st timeline.Stats) {
	fmt.Fprintf(w, "lost: %d ring-buffer drops, %d state-program recursion misses, %d syscall-program recursion misses",
		st.RingbufDrops, st.StateMisses, st.SyscallMisses)
	if st.OwnerMapFull > 0 {
		fmt.Fprintf(w, ", %d owners not stored (owner map full)", st.OwnerMapFull)
	}
	if st.NetNSUnfollowed > 0 {
		fmt.Fprintf(w, ", %d network namespaces not walked (orphans there not followed into TIME_WAIT)", st.NetNSUnfollowed)
	}
	fmt.Fprintf(w, "; %d transitions repaired from the socket table\n", st.Repairs)
}

// Limits says what tracing runs without here, so that a report read later
// still tells what it could not see.
func Limits(w io.Writer, limits []string) {
	if len(limits) == 0 {
		return
	}
	fmt.Fprintln(w, "\nrunning without:")
	for _, l := range limits {
		fmt.Fprintln(w, "  "+l)
	}
}
