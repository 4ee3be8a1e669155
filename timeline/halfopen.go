package timeline

import (
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// Half-open handshakes: a listener's request socket between the SYN and
// the final ACK fires no transition. The kernel reports its SYN-ACK timer,
// which fires a second after the SYN-ACK when no ACK came, at each
// retransmission, and when the kernel gives up; a walk tells when it went
// otherwise (a RST). A handshake that completes fires no timer at all, or
// its child socket takes the request's four-tuple over (takeOver).

// SynAckRTOMax is TCP_RTO_MAX: the SYN-ACK timer doubles from a second up
// to it, so a request's timer fires at least this often.
const SynAckRTOMax = 120 * time.Second

// HalfOpen reports whether c is a half-open handshake (a request socket).
func (c *Conn) HalfOpen() bool { return c.halfOpen }

// halfOpenTimer takes a firing of a request socket's SYN-ACK timer: the
// first shows LISTEN -> SYN_RECV at the first SYN-ACK; the one the kernel
// drops the request at shows SYN_RECV -> CLOSE.
func (t *Timeline) halfOpenTimer(ev *tcp.Event, emit func(*tcp.Event)) {
	c := t.conns[ev.Cookie]
	if c == nil {
		c = t.conn(ev)
		c.halfOpen = true
		since := ev.FirstSynAck
		if since.IsZero() || since.After(ev.Time) {
			since = ev.Time
		}
		t.adoptOwner(c, ev)
		c.enter(tcp.StateSynRecv, since, true)
		t.indexTuple(c)
		line := &t.scratch
		*line = tcp.Event{Kind: tcp.KindTransition, Time: since, Cookie: c.Cookie, NetNS: c.NetNS, Old: tcp.StateListen,
			New: tcp.StateSynRecv, InOld: -1, FD: -1, Source: tcp.SourceSynAck, SynAcks: ev.SynAcks, FirstSynAck: ev.FirstSynAck}
		t.fill(c, line)
		emit(line)
	}
	if !c.halfOpen {
		return
	}
	c.lastUpdate = ev.Time.UnixNano()
	if ev.Flags&tcp.FlagDropped == 0 {
		// Looked for past its next firing, which a RST would cancel.
		next := min(time.Second<<min(ev.SynAcks, 7), SynAckRTOMax)
		t.scheduleCheck(c, ev.Time.Add(next+t.TimeWaitGrace))
		return
	}
	t.endHalfOpen(c, ev.Time, ev.SynAcks, tcp.FlagDropped, emit)
}

// requestSighting takes what a walk found of a half-open request.
func (t *Timeline) requestSighting(c *Conn, s TimeWaitSighting, emit func(*tcp.Event)) {
	if s.Seen {
		t.scheduleCheck(c, s.At.Add(orphanRecheck+t.TimeWaitGrace))
		return
	}
	// Gone without its timer giving up: a RST from the peer, say.
	t.endHalfOpen(c, s.At, 0, 0, emit)
}

// endHalfOpen shows the end of a handshake that never completed.
func (t *Timeline) endHalfOpen(c *Conn, at time.Time, synAcks uint8, flags uint8, emit func(*tcp.Event)) {
	line := &t.scratch
	*line = tcp.Event{Kind: tcp.KindTransition, Time: at, Cookie: c.Cookie, NetNS: c.NetNS, Old: tcp.StateSynRecv,
		New: tcp.StateClose, FD: -1, Source: tcp.SourceSynAck, Flags: flags, SynAcks: synAcks}
	t.fill(c, line)
	c.timeInOld(line)
	emit(line)
	t.forget(c.Cookie)
}
