//go:build linux

package tracer

import (
	"slices"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// seed emits every connection that exists as tracing starts.
func (t *Tracer) seed(emit func(*tcp.Event)) error {
	table, walked, err := t.k.WalkTable()
	if err != nil {
		return err
	}
	in := timeline.Input{Kind: timeline.InputTable, Table: timeline.Table{At: t.timeline.Started(), Sockets: table, NetNS: walked}}
	if err := t.feed(&in, emit); err != nil {
		return err
	}
	for i := range table {
		s := &table[i]
		in := timeline.Input{Kind: timeline.InputEvent}
		ev := &in.Event
		*ev = tcp.Event{
			Kind: tcp.KindExisting, Time: t.timeline.Started(), Cookie: s.Cookie, Inode: s.Inode,
			NetNS: s.NetNS, Local: s.Local, Remote: s.Remote, New: s.State, Source: tcp.SourceSeed,
			Owner: tcp.Owner{FD: -1}, FD: -1,
		}
		if len(s.Holders) > 0 {
			ev.Owner, ev.Sharers = s.Holders[0], s.Holders[1:]
		}
		if !t.wantsOwner(s.Holders) {
			continue
		}
		if !s.TimeWaitExpiry.IsZero() {
			ev.TimeWaitLeft = s.TimeWaitExpiry.Sub(t.timeline.Started())
		}
		if err := t.feed(&in, emit); err != nil {
			return err
		}
	}
	return nil
}

// wantsOwner applies the pid filter to sockets found in the socket table.
func (t *Tracer) wantsOwner(holders []tcp.Owner) bool {
	if len(t.cfg.PIDs) == 0 {
		return true
	}
	for _, h := range holders {
		if slices.Contains(t.cfg.PIDs, h.PID) {
			return true
		}
	}
	return false
}

// walkCostFactor spaces timewait walks so that walking takes at most 1/20 of a CPU.
const walkCostFactor = 20

// walkTimeWait asks the kernel about the connections that may have entered
// TIME_WAIT and those whose timewait timer is due.
func (t *Tracer) walkTimeWait(now time.Time, emit func(*tcp.Event)) error {
	t.wanted = t.wanted[:0]
	t.timeline.TimeWaitChecks(now, func(cookie uint64) { t.wanted = append(t.wanted, cookie) })
	if len(t.wanted) == 0 {
		return nil
	}
	t.stats.TimeWaitWalks++
	// Besides its own, each other namespace a wanted socket lives in.
	inside := map[uint32]bool{}
	for _, cookie := range t.wanted {
		if c := t.timeline.Conn(cookie); c != nil && c.NetNS != t.k.WalkedNetNS() {
			inside[c.NetNS] = true
		}
	}
	w, err := t.k.FindTimeWait(t.wanted, inside)
	t.nextWalk = time.Now().Add(max(tickEvery, walkCostFactor*time.Since(w.At)))
	if err != nil {
		return err
	}
	for _, cookie := range t.wanted {
		s, seen := w.Found[cookie]
		if c := t.timeline.Conn(cookie); !seen && t.k.Timer() && c != nil && !w.Walked[c.NetNS] {
			// In a namespace not walked: not known gone. An orphan's
			// timer, or a request's, will say when it ends.
			if c.HalfOpen() {
				t.timeline.DeferCheck(cookie, w.At.Add(timeline.SynAckRTOMax+timerGrace))
				continue
			}
			if c.State == tcp.StateFinWait2 && w.At.Before(c.TimeWaitExpiry) {
				t.timeline.DeferCheck(cookie, c.TimeWaitExpiry.Add(timerGrace))
				continue
			}
		}
		in := timeline.Input{Kind: timeline.InputTimeWait, TimeWait: timeline.TimeWaitSighting{
			Cookie: cookie, At: w.At, Seen: seen, Substate: s.State, Expiry: s.TimeWaitExpiry,
		}}
		if err := t.feed(&in, emit); err != nil {
			return err
		}
	}
	return nil
}
