// Package render is every way tcptrace writes what it saw for people and
// programs: the stream's lines as text or JSON, the summary and "lost:" lines,
// leak reports (the words of their verdicts, reasons and advice, and their
// JSON), and connection timelines. The analyses decide; this package says.
//
// It is a top-level package, not cmd/tcptrace/internal, because it is pure
// Go like the analysis, tcp and timeline packages it writes: it builds on any
// OS, and another front end (a web view, the metrics server) may use it.
package render

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/fatih/color"

	"github.com/tcptrace/tcptrace/tcp"
)

// SetColor says whether to color states: "auto" (fatih/color turns colors
// off for NO_COLOR and non-terminals), "always" or "never".
func SetColor(mode string) error {
	switch mode {
	case "auto":
	case "always":
		color.NoColor = false
	case "never":
		color.NoColor = true
	default:
		return fmt.Errorf("invalid --color %q: want auto, always or never", mode)
	}
	return nil
}

var stateColors = map[tcp.State]*color.Color{
	tcp.StateEstablished: color.New(color.FgGreen),
	tcp.StateSynSent:     color.New(color.FgCyan),
	tcp.StateSynRecv:     color.New(color.FgCyan),
	tcp.StateListen:      color.New(color.FgBlue),
	tcp.StateCloseWait:   color.New(color.FgRed, color.Bold),
	tcp.StateFinWait1:    color.New(color.FgYellow),
	tcp.StateFinWait2:    color.New(color.FgYellow),
	tcp.StateClosing:     color.New(color.FgYellow),
	tcp.StateLastAck:     color.New(color.FgYellow),
	tcp.StateTimeWait:    color.New(color.FgMagenta),
	tcp.StateClose:       color.New(color.Faint),
}

func paintState(s tcp.State) string {
	if c, ok := stateColors[s]; ok && !color.NoColor {
		return c.Sprint(s.String())
	}
	return s.String()
}

// Printer writes events as aligned text or as JSON lines.
type Printer struct {
	w    io.Writer
	json bool
	buf  []byte
}

// NewPrinter writes to w, JSON lines when json is true.
func NewPrinter(w io.Writer, json bool) *Printer {
	return &Printer{w: w, json: json, buf: make([]byte, 0, 512)}
}

const headerFormat = "%-15s %7s %-15s %4s %-23s %-23s %s\n"

// Header writes the text table's column names.
func (p *Printer) Header() {
	fmt.Fprintf(p.w, headerFormat, "TIME", "PID", "COMM", "FD", "LOCAL", "REMOTE", "TRANSITION")
}

// Print writes one event, one line.
func (p *Printer) Print(ev *tcp.Event) {
	if p.json {
		p.buf = AppendJSON(p.buf[:0], ev)
	} else {
		p.buf = AppendText(p.buf[:0], ev)
	}
	p.buf = append(p.buf, '\n')
	p.w.Write(p.buf)
}

func formatAddr(ap netip.AddrPort) string { return string(tcp.AppendEndpoint(nil, ap)) }

// padTo pads what was appended to b since start with spaces to width
// columns, on the right (left-aligned) or, moving it, on the left.
func padTo(b []byte, start, width int, left bool) []byte {
	n := width - (len(b) - start)
	for i := 0; i < n; i++ {
		b = append(b, ' ')
	}
	if !left && n > 0 {
		copy(b[start+n:], b[start:len(b)-n])
		for i := start; i < start+n; i++ {
			b[i] = ' '
		}
	}
	return b
}

// Duration is short and human: 850us, 12ms, 1.2s, 3m05s, 2h01m.
func Duration(d time.Duration) string { return string(appendDuration(nil, d)) }

func appendDuration(b []byte, d time.Duration) []byte {
	switch {
	case d < time.Millisecond:
		return append(strconv.AppendInt(b, d.Microseconds(), 10), "us"...)
	case d < time.Second:
		return append(strconv.AppendInt(b, d.Milliseconds(), 10), "ms"...)
	case d < time.Minute:
		return append(strconv.AppendFloat(b, d.Seconds(), 'f', 1, 64), 's')
	case d < time.Hour:
		return fmt.Appendf(b, "%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Appendf(b, "%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// appendDigits appends v zero-padded to n digits.
func appendDigits(b []byte, v, n int) []byte {
	for d := n - 1; d >= 0; d-- {
		p := 1
		for i := 0; i < d; i++ {
			p *= 10
		}
		b = append(b, byte('0'+v/p%10))
	}
	return b
}

// AppendText writes an event as a line of the stream's table. It is the
// stream's hot path, so it formats without time.Format or allocations.
func AppendText(b []byte, ev *tcp.Event) []byte {
	h, m, s := ev.Time.Clock()
	b = appendDigits(b, h, 2)
	b = append(b, ':')
	b = appendDigits(b, m, 2)
	b = append(b, ':')
	b = appendDigits(b, s, 2)
	b = append(b, '.')
	b = appendDigits(b, ev.Time.Nanosecond()/1000, 6)
	b = append(b, ' ')
	start := len(b)
	if ev.Owner.Known() {
		b = strconv.AppendUint(b, uint64(ev.Owner.PID), 10)
		if n := len(ev.Sharers); n > 0 {
			// Held by more processes (or fds): the first and how many more.
			b = append(b, '+')
			b = strconv.AppendInt(b, int64(n), 10)
		}
	} else {
		b = append(b, '-')
	}
	b = padTo(b, start, 7, false)
	b = append(b, ' ')
	start = len(b)
	if ev.Owner.Known() {
		b = append(b, ev.Owner.Comm...)
	} else {
		b = append(b, '?')
	}
	b = padTo(b, start, 15, true)
	b = append(b, ' ')
	start = len(b)
	if ev.Owner.Known() && ev.Owner.FD >= 0 {
		b = strconv.AppendInt(b, int64(ev.Owner.FD), 10)
	} else {
		b = append(b, '-')
	}
	b = padTo(b, start, 4, false)
	b = append(b, ' ')
	start = len(b)
	b = padTo(tcp.AppendEndpoint(b, ev.Local), start, 23, true)
	b = append(b, ' ')
	start = len(b)
	b = padTo(tcp.AppendEndpoint(b, ev.Remote), start, 23, true)
	b = append(b, ' ')
	b = appendWhat(b, ev)
	if ev.Owner.Container != "" {
		b = append(b, "  container="...)
		b = append(b, tcp.ShortContainerID(ev.Owner.Container)...)
	}
	return b
}

// appendWhat writes what happened: the transition, accept, close, RST or
// failed bind, and how long the connection had been in its old state.
func appendWhat(b []byte, ev *tcp.Event) []byte {
	switch ev.Kind {
	case tcp.KindAccept:
		b = append(b, "accept() -> fd "...)
		b = strconv.AppendInt(b, int64(ev.FD), 10)
		b = append(b, " in "...)
		b = append(b, paintState(ev.New)...)
	case tcp.KindNewFD:
		if ev.Owner.Via == tcp.OwnerReceive {
			b = append(b, "received fd "...)
		} else {
			b = append(b, "dup() -> fd "...)
		}
		b = strconv.AppendInt(b, int64(ev.FD), 10)
		b = append(b, " in "...)
		b = append(b, paintState(ev.New)...)
	case tcp.KindCloseFD:
		b = append(b, "close(fd "...)
		b = strconv.AppendInt(b, int64(ev.FD), 10)
		b = append(b, ") by "...)
		b = strconv.AppendUint(b, uint64(ev.Running.PID), 10)
		b = append(b, " in "...)
		b = append(b, paintState(ev.New)...)
		if len(ev.Sharers) > 0 {
			b = append(b, "  (still held by "...)
			b = strconv.AppendUint(b, uint64(ev.Sharers[0].PID), 10)
			b = append(b, '/')
			b = append(b, ev.Sharers[0].Comm...)
			if n := len(ev.Sharers) - 1; n > 0 {
				b = append(b, " +"...)
				b = strconv.AppendInt(b, int64(n), 10)
			}
			b = append(b, ')')
		}
	case tcp.KindExisting:
		b = append(b, "existing "...)
		b = append(b, paintState(ev.New)...)
	case tcp.KindReset:
		if ev.ResetSent {
			b = append(b, "RST sent"...)
			if ev.ResetReason != "" {
				b = append(b, " ("...)
				b = append(b, ev.ResetReason...)
				b = append(b, ')')
			}
		} else {
			b = append(b, "RST received"...)
		}
		b = append(b, " in "...)
		b = append(b, paintState(ev.New)...)
	case tcp.KindConnectFail:
		b = append(b, "connect() failed: EADDRNOTAVAIL, no local port free; "...)
		b = strconv.AppendInt(b, int64(len(ev.PortHolders)), 10)
		b = append(b, " sockets to the destination"...)
	case tcp.KindBindFail:
		b = append(b, "bind() failed: EADDRINUSE"...)
		if ev.ReuseAddr {
			b = append(b, " with SO_REUSEADDR"...)
		}
		b = append(b, "; "...)
		b = strconv.AppendInt(b, int64(len(ev.PortHolders)), 10)
		b = append(b, " sockets held the port"...)
	default:
		b = append(b, paintState(ev.Old)...)
		b = append(b, " -> "...)
		b = append(b, paintState(ev.New)...)
	}
	if ev.InOld >= 0 && ev.Kind == tcp.KindTransition {
		b = append(b, "  "...)
		if ev.OldBeforeTrace {
			b = append(b, '>')
		}
		b = appendDuration(b, ev.InOld)
	}
	if ev.TimeWaitLeft > 0 {
		b = append(b, "  (expires in "...)
		b = appendDuration(b, ev.TimeWaitLeft)
		b = append(b, ')')
	}
	if ev.Kind == tcp.KindTransition && ev.New == tcp.StateClose && ev.Flags&tcp.FlagError != 0 {
		b = append(b, "  (error "...)
		b = strconv.AppendInt(b, int64(ev.Errno), 10)
		b = append(b, ')')
	}
	if ev.Flags&tcp.FlagKilled != 0 {
		b = append(b, "  (killed early: a RST, a new connection on its four-tuple, or ss -K)"...)
	}
	switch ev.Source {
	case tcp.SourceRepair:
		b = append(b, "  (repaired: events were missed)"...)
	case tcp.SourceExit:
		b = append(b, "  (closed by the process's exit)"...)
	case tcp.SourceExec:
		b = append(b, "  (closed by exec: close-on-exec)"...)
	case tcp.SourceSynAck:
		b = appendHalfOpen(b, ev)
	}
	return b
}

// appendHalfOpen says what a half-open handshake's line means.
func appendHalfOpen(b []byte, ev *tcp.Event) []byte {
	switch {
	case ev.New == tcp.StateSynRecv:
		return append(b, "  (half-open: the SYN-ACK got no ACK)"...)
	case ev.Flags&tcp.FlagDropped != 0:
		b = append(b, "  (half-open: no ACK after "...)
		b = strconv.AppendUint(b, uint64(ev.SynAcks), 10)
		return append(b, " SYN-ACKs; the kernel dropped it)"...)
	default:
		return append(b, "  (half-open: the request went before its timer gave up)"...)
	}
}

// appendJSONString writes s as a JSON string that any parser accepts:
// quotes, backslashes and control characters are escaped as JSON escapes
// (they decode to the same bytes); a byte that is not UTF-8, which a
// process name may hold, is written as the text \xNN, as ps and ss show it.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
		}
		b = append(b, s[start:i]...)
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '\t':
			b = append(b, `\t`...)
		case c == '\r':
			b = append(b, `\r`...)
		case c < 0x20:
			b = append(b, `\u00`...)
			b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
		default: // a byte that is not UTF-8
			b = append(b, `\\x`...)
			b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

func appendOwnerJSON(b []byte, o *tcp.Owner) []byte {
	b = append(b, `{"pid":`...)
	b = strconv.AppendUint(b, uint64(o.PID), 10)
	b = append(b, `,"comm":`...)
	b = appendJSONString(b, o.Comm)
	b = append(b, `,"fd":`...)
	b = strconv.AppendInt(b, int64(o.FD), 10)
	b = append(b, `,"via":"`...)
	b = append(b, o.Via.String()...)
	b = append(b, `","fd_closed":`...)
	b = strconv.AppendBool(b, o.Closed)
	b = append(b, `,"cgroup":`...)
	b = strconv.AppendUint(b, o.Cgroup, 10)
	b = append(b, `,"container":`...)
	b = appendJSONString(b, o.Container) // from a trace file, anything
	return append(b, '}')
}

// AppendJSON writes the stable JSON form of an event; README.md documents the fields.
func AppendJSON(b []byte, ev *tcp.Event) []byte {
	b = append(b, `{"time":"`...)
	b = ev.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","type":"`...)
	b = append(b, ev.Kind.String()...)
	b = append(b, `","conn":`...)
	b = strconv.AppendUint(b, ev.Cookie, 10)
	b = append(b, `,"inode":`...)
	b = strconv.AppendUint(b, ev.Inode, 10)
	b = append(b, `,"netns":`...)
	b = strconv.AppendUint(b, uint64(ev.NetNS), 10)
	b = append(b, `,"family":`...)
	b = strconv.AppendInt(b, int64(ev.Family()), 10)
	b = append(b, `,"local":"`...)
	b = tcp.AppendEndpoint(b, ev.Local)
	b = append(b, `","remote":"`...)
	b = tcp.AppendEndpoint(b, ev.Remote)
	b = append(b, `","old":"`...)
	b = append(b, ev.Old.String()...)
	b = append(b, `","new":"`...)
	b = append(b, ev.New.String()...)
	b = append(b, '"')
	if ev.InOld >= 0 {
		b = append(b, `,"in_old_ns":`...)
		b = strconv.AppendInt(b, int64(ev.InOld), 10)
		b = append(b, `,"in_old_at_least":`...)
		b = strconv.AppendBool(b, ev.OldBeforeTrace)
	}
	b = append(b, `,"owner":`...)
	b = appendOwnerJSON(b, &ev.Owner)
	b = append(b, `,"sharers":[`...)
	for i := range ev.Sharers {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendOwnerJSON(b, &ev.Sharers[i])
	}
	b = append(b, `],"running":{"pid":`...)
	b = strconv.AppendUint(b, uint64(ev.Running.PID), 10)
	b = append(b, `,"tid":`...)
	b = strconv.AppendUint(b, uint64(ev.Running.TID), 10)
	b = append(b, `,"comm":`...)
	b = appendJSONString(b, ev.Running.Comm)
	b = append(b, `},"fd":`...)
	b = strconv.AppendInt(b, int64(ev.FD), 10)
	b = append(b, `,"source":"`...)
	b = append(b, ev.Source.String()...)
	b = append(b, `","orphan":`...)
	b = strconv.AppendBool(b, ev.Flags&tcp.FlagOrphan != 0)
	b = append(b, `,"error":`...)
	b = strconv.AppendInt(b, int64(ev.Errno), 10)
	if ev.Flags&tcp.FlagKilled != 0 {
		b = append(b, `,"killed":true`...)
	}
	if ev.TimeWaitLeft > 0 {
		b = append(b, `,"timewait_left_ns":`...)
		b = strconv.AppendInt(b, int64(ev.TimeWaitLeft), 10)
	}
	if ev.Source == tcp.SourceSynAck {
		b = append(b, `,"synacks":`...)
		b = strconv.AppendUint(b, uint64(ev.SynAcks), 10)
		b = append(b, `,"dropped":`...)
		b = strconv.AppendBool(b, ev.Flags&tcp.FlagDropped != 0)
	}
	switch ev.Kind {
	case tcp.KindReset:
		if ev.ResetSent {
			b = append(b, `,"reset":"sent","reset_reason":`...)
			b = appendJSONString(b, ev.ResetReason)
		} else {
			b = append(b, `,"reset":"received"`...)
		}
	case tcp.KindConnectFail:
		b = append(b, `,"port_holders":`...)
		b = strconv.AppendInt(b, int64(len(ev.PortHolders)), 10)
	case tcp.KindBindFail:
		b = append(b, `,"reuseaddr":`...)
		b = strconv.AppendBool(b, ev.ReuseAddr)
		b = append(b, `,"port_holders":`...)
		b = strconv.AppendInt(b, int64(len(ev.PortHolders)), 10)
	}
	return append(b, '}')
}
