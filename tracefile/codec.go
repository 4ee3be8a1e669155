// Package tracefile writes and reads tcptrace's trace files: the inputs of
// the timeline, in order, so that a trace replays exactly like live tracing.
// FORMAT.md beside this file describes the format.
package tracefile

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/tcptrace/tcptrace/tracer"
)

// Magic opens every trace file; Version follows it as a little-endian uint16.
const (
	Magic   = "tcptrace"
	Version = 1
)

// Record types.
const (
	recHeader   = 'H'
	recEvent    = 'E'
	recTimeWait = 'W'
	recTable    = 'T'
	recStats    = 'S'
	recOrigin   = 'O'
	recProcess  = 'P'
	recEnd      = 'Z'
)

var recordNames = map[byte]string{
	recHeader: "header", recEvent: "event", recTimeWait: "timewait", recTable: "table",
	recStats: "stats", recOrigin: "origin", recProcess: "process", recEnd: "end",
}

// encoder appends values to a record's payload. Times are deltas from the
// previous time written, so that the stream stays small.
type encoder struct {
	b    []byte
	last int64 // UnixNano of the previous time
}

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) byte1(v uint8)    { e.b = append(e.b, v) }

func (e *encoder) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}

// time writes t as a delta from the previous time; the zero time is its own code.
func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.b = append(e.b, 0)
		return
	}
	ns := t.UnixNano()
	e.b = append(e.b, 1)
	e.varint(ns - e.last)
	e.last = ns
}

// duration writes a duration that may be negative (-1 means unknown).
func (e *encoder) duration(d time.Duration) { e.varint(int64(d)) }

func (e *encoder) addrPort(ap netip.AddrPort) {
	a := ap.Addr()
	switch {
	case !a.IsValid():
		e.b = append(e.b, 0)
	case a.Is4():
		e.b = append(e.b, 4)
		b := a.As4()
		e.b = append(e.b, b[:]...)
	default:
		e.b = append(e.b, 6)
		b := a.As16()
		e.b = append(e.b, b[:]...)
	}
	e.b = binary.LittleEndian.AppendUint16(e.b, ap.Port())
}

func (e *encoder) owner(o tracer.Owner) {
	e.uvarint(uint64(o.PID))
	e.str(o.Comm)
	e.varint(int64(o.FD))
	e.byte1(uint8(o.Via))
	e.bool(o.Closed)
}

func (e *encoder) snapshot(s *tracer.SocketSnapshot) {
	e.uvarint(s.Cookie)
	e.uvarint(s.Inode)
	e.uvarint(uint64(s.NetNS))
	e.addrPort(s.Local)
	e.addrPort(s.Remote)
	e.byte1(uint8(s.State))
	e.time(s.TimeWaitExpiry)
	e.time(s.LastReceived)
	e.bool(s.Reuse)
	e.uvarint(uint64(len(s.Holders)))
	for _, h := range s.Holders {
		e.owner(h)
	}
}

func (e *encoder) event(ev *tracer.Event) {
	e.byte1(uint8(ev.Kind))
	e.time(ev.Time)
	e.uvarint(ev.Cookie)
	e.uvarint(ev.Inode)
	e.uvarint(uint64(ev.NetNS))
	e.addrPort(ev.Local)
	e.addrPort(ev.Remote)
	e.byte1(uint8(ev.Old))
	e.byte1(uint8(ev.New))
	e.uvarint(uint64(ev.Running.PID))
	e.uvarint(uint64(ev.Running.TID))
	e.str(ev.Running.Comm)
	e.owner(ev.Owner)
	e.byte1(uint8(ev.Source))
	e.byte1(ev.Flags)
	e.varint(int64(ev.Errno))
	e.varint(int64(ev.FD))
	e.duration(ev.TimeWaitLeft)
	e.varint(int64(ev.Origin.StackID))
	e.uvarint(ev.Origin.Leaf)
	e.uvarint(uint64(ev.Origin.PID))
	e.str(ev.ResetReason)
	e.bool(ev.ResetSent)
	e.bool(ev.ReuseAddr)
	// nil (the port was not examined) and empty differ.
	if ev.PortHolders == nil {
		e.uvarint(0)
	} else {
		e.uvarint(uint64(len(ev.PortHolders)) + 1)
		for i := range ev.PortHolders {
			e.snapshot(&ev.PortHolders[i])
		}
	}
}

func (e *encoder) frames(frames []tracer.Frame) {
	e.uvarint(uint64(len(frames)))
	for _, f := range frames {
		e.uvarint(f.Addr)
		e.str(f.Func)
		e.str(f.File)
		e.uvarint(uint64(f.Line))
		e.str(f.Module)
	}
}

var errShort = errors.New("record too short")

// decoder reads what encoder wrote; the first error sticks.
type decoder struct {
	b    []byte
	last int64
	err  error
	// strs interns strings so that steady-state decoding allocates little;
	// recent holds the last few returned.
	strs   map[string]string
	recent [4]string
	next   int
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errShort
	}
	d.b = nil
}

// uvarint has a fast path, small enough to inline, for values under 128.
func (d *decoder) uvarint() uint64 {
	if len(d.b) == 0 || d.b[0] >= 0x80 {
		return d.uvarintSlow()
	}
	v := d.b[0]
	d.b = d.b[1:]
	return uint64(v)
}

func (d *decoder) uvarintSlow() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// varint undoes the zigzag encoding of binary.AppendVarint.
func (d *decoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *decoder) byte1() uint8 {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bool() bool { return d.byte1() != 0 }

func (d *decoder) raw(n uint64) []byte {
	if uint64(len(d.b)) < n {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	b := d.raw(d.uvarint())
	if len(b) == 0 {
		return ""
	}
	// The same few names repeat from event to event: check them first.
	for _, s := range d.recent {
		if s == string(b) {
			return s
		}
	}
	if s, ok := d.strs[string(b)]; ok {
		d.remember(s)
		return s
	}
	s := string(b)
	if len(d.strs) < 65536 {
		d.strs[s] = s
	}
	d.remember(s)
	return s
}

func (d *decoder) remember(s string) {
	d.recent[d.next%len(d.recent)] = s
	d.next++
}

func (d *decoder) time() time.Time {
	if d.byte1() == 0 {
		return time.Time{}
	}
	d.last += d.varint()
	return time.Unix(0, d.last)
}

func (d *decoder) duration() time.Duration { return time.Duration(d.varint()) }

func (d *decoder) addrPort() netip.AddrPort {
	var a netip.Addr
	switch d.byte1() {
	case 4:
		if b := d.raw(4); d.err == nil {
			a = netip.AddrFrom4([4]byte(b))
		}
	case 6:
		if b := d.raw(16); d.err == nil {
			a = netip.AddrFrom16([16]byte(b))
		}
	}
	p := d.raw(2)
	if d.err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, binary.LittleEndian.Uint16(p))
}

func (d *decoder) owner() tracer.Owner {
	return tracer.Owner{
		PID: uint32(d.uvarint()), Comm: d.str(), FD: int32(d.varint()),
		Via: tracer.OwnerSource(d.byte1()), Closed: d.bool(),
	}
}

func (d *decoder) snapshot(s *tracer.SocketSnapshot) {
	s.Cookie = d.uvarint()
	s.Inode = d.uvarint()
	s.NetNS = uint32(d.uvarint())
	s.Local = d.addrPort()
	s.Remote = d.addrPort()
	s.State = tracer.State(d.byte1())
	s.TimeWaitExpiry = d.time()
	s.LastReceived = d.time()
	s.Reuse = d.bool()
	n := d.count()
	s.Holders = nil
	for i := 0; i < n && d.err == nil; i++ {
		s.Holders = append(s.Holders, d.owner())
	}
}

// count reads a number of items, bounded by what the record can hold.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) event(ev *tracer.Event) {
	*ev = tracer.Event{
		Kind: tracer.Kind(d.byte1()), Time: d.time(), Cookie: d.uvarint(), Inode: d.uvarint(),
		NetNS: uint32(d.uvarint()), Local: d.addrPort(), Remote: d.addrPort(),
		Old: tracer.State(d.byte1()), New: tracer.State(d.byte1()),
	}
	ev.Running = tracer.Task{PID: uint32(d.uvarint()), TID: uint32(d.uvarint()), Comm: d.str()}
	ev.Owner = d.owner()
	ev.Source = tracer.Source(d.byte1())
	ev.Flags = d.byte1()
	ev.Errno = int32(d.varint())
	ev.FD = int32(d.varint())
	ev.TimeWaitLeft = d.duration()
	ev.Origin = tracer.Origin{StackID: int32(d.varint()), Leaf: d.uvarint(), PID: uint32(d.uvarint())}
	ev.ResetReason = d.str()
	ev.ResetSent = d.bool()
	ev.ReuseAddr = d.bool()
	if n := d.uvarint(); n > 0 {
		if n-1 > uint64(len(d.b)) {
			d.fail()
			return
		}
		ev.PortHolders = make([]tracer.SocketSnapshot, n-1)
		for i := range ev.PortHolders {
			d.snapshot(&ev.PortHolders[i])
		}
	}
}

func (d *decoder) frames() []tracer.Frame {
	n := d.count()
	frames := make([]tracer.Frame, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		frames = append(frames, tracer.Frame{Addr: d.uvarint(), Func: d.str(), File: d.str(), Line: int(d.uvarint()), Module: d.str()})
	}
	return frames
}
