package render

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/tcptrace/tcptrace/analysis"
)

// LivesHeader names the columns of Life lines.
func LivesHeader(w io.Writer) {
	fmt.Fprintf(w, "%-15s %7s %-16s %-23s %-23s %-6s %9s %10s %10s %7s %9s  %s\n",
		"CLOSED", "PID", "COMM", "LOCAL", "REMOTE", "ROLE", "LIVED", "SENT", "RECEIVED", "RETRANS", "SRTT", "END")
}

// Life writes one connection's life as a line: when it closed, its owner,
// its ends and role, how long it lived, what it moved, and how it ended.
func Life(w io.Writer, lf *analysis.Life) {
	lived := Duration(lf.Duration)
	if lf.AtLeast {
		lived = ">" + lived
	}
	sent, received, retrans, srtt := "-", "-", "-", "-"
	if c := lf.Counters; c != nil {
		sent, received = Bytes(c.Sent), Bytes(c.Received)
		retrans, srtt = strconv.FormatUint(uint64(c.Retransmits), 10), Duration(c.SRTT)
	}
	role, comm := lf.Role, lf.Owner.Comm
	if role == "" {
		role = "-"
	}
	if lf.Owner.PID == 0 {
		comm = "-" // owned by no process tcptrace knows of
	}
	fmt.Fprintf(w, "%-15s %7d %-16s %-23s %-23s %-6s %9s %10s %10s %7s %9s  %s\n",
		lf.Time.Format("15:04:05.000000"), lf.Owner.PID, comm, lf.Local, lf.Remote, role,
		lived, sent, received, retrans, srtt, LifeEnd(lf))
}

// LifeEnd says in words how a connection ended, and who closed first.
func LifeEnd(lf *analysis.Life) string {
	var s string
	switch lf.End {
	case analysis.EndFIN:
		s = "FIN both ways"
	case analysis.EndResetSent:
		s = "RST sent"
		if why := resetWhy[lf.Reason]; why != "" {
			s += ": " + why
		}
	case analysis.EndAborted:
		s = "aborted by the application (SO_LINGER {1, 0}, or closed during the handshake)"
	case analysis.EndResetReceived:
		s = "RST received"
	case analysis.EndRefused:
		s = "refused (RST to the SYN)"
	case analysis.EndTimedOut:
		s = "timed out"
	case analysis.EndUnreachable:
		s = "unreachable"
	case analysis.EndNoPort:
		s = "no local port free (EADDRNOTAVAIL)"
	default:
		s = "close not seen (events lost)"
	}
	switch lf.ClosedFirst {
	case "local":
		s += "; this end closed first"
	case "peer":
		s += "; the peer closed first"
	}
	return s
}

// LifeJSON is a life as one JSON object, its end in words beside its code.
func LifeJSON(lf *analysis.Life) []byte {
	b, err := json.Marshal(struct {
		Type string `json:"type"`
		*analysis.Life
		Why string `json:"why"`
	}{"life", lf, LifeEnd(lf)})
	if err != nil {
		panic(err) // only plain data
	}
	return b
}

// Bytes is a byte count in B, KiB, MiB or GiB.
func Bytes(n uint64) string {
	switch {
	case n < 1<<10:
		return strconv.FormatUint(n, 10) + " B"
	case n < 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	case n < 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	}
	return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
}

// Failures writes the failed connections by destination and process.
func Failures(w io.Writer, list []analysis.Failed) {
	if len(list) == 0 {
		return
	}
	fmt.Fprintln(w, "failed connections:")
	for _, f := range list {
		fmt.Fprintf(w, "  %6d  %-40s %s, pid %d (%s)\n", f.Count, failedHow[f.End], f.Remote, f.PID, f.Comm)
	}
}

// failedHow names the ways a connection fails before it is established.
var failedHow = map[string]string{
	analysis.EndRefused: "refused", analysis.EndTimedOut: "timed out", analysis.EndUnreachable: "unreachable",
	analysis.EndResetReceived: "reset by the peer before established", analysis.EndResetSent: "reset by this end before established",
	analysis.EndNoPort: "no local port free",
}
