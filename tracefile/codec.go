// Package tracefile writes and reads tcptrace's trace files: the inputs of
// the timeline, in order, so that a trace replays exactly like live tracing.
// FORMAT.md beside this file describes the format.
package tracefile

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/netip"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
)

// Magic opens every trace file; Version follows it as a little-endian uint16.
// Version 2 added the cgroup and container of owners.
const (
	Magic   = "tcptrace"
	Version = 2
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

// castagnoli is the CRC-32C table: the CPU computes it in hardware.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var recordNames = map[byte]string{
	recHeader: "header", recEvent: "event", recTimeWait: "timewait", recTable: "table",
	recStats: "stats", recOrigin: "origin", recProcess: "process", recEnd: "end",
}

// encoder appends values to a record's payload. Times are deltas from the
// previous time written, so that the stream stays small.
type encoder struct {
	b      []byte
	last   int64             // UnixNano of the previous time
	strIDs map[string]uint64 // the file's string table
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

// str writes a string through the file's string table: the first time a
// string appears it is defined (odd reference, then its bytes); later it is
// referred to by number (even reference). The empty string is 0.
func (e *encoder) str(s string) {
	if s == "" {
		e.b = append(e.b, 0)
		return
	}
	if id, ok := e.strIDs[s]; ok {
		e.uvarint(id << 1)
		return
	}
	if e.strIDs == nil {
		e.strIDs = map[string]uint64{}
	}
	id := uint64(len(e.strIDs)) + 1
	e.strIDs[s] = id
	e.uvarint(id<<1 | 1)
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

func (e *encoder) owner(o tcp.Owner) {
	e.uvarint(uint64(o.PID))
	e.str(o.Comm)
	e.varint(int64(o.FD))
	e.byte1(uint8(o.Via))
	e.bool(o.Closed)
	e.uvarint(o.Cgroup)
	e.str(o.Container)
}

func (e *encoder) socket(s *tcp.Socket) {
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

func (e *encoder) event(ev *tcp.Event) {
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
			e.socket(&ev.PortHolders[i])
		}
	}
	e.uvarint(uint64(len(ev.Sharers)))
	for _, o := range ev.Sharers {
		e.owner(o)
	}
	e.byte1(ev.SynAcks)
	e.time(ev.FirstSynAck)
	// Added at the end: older readers skip it.
	if t := &ev.Totals; t.Read {
		e.bool(true)
		e.uvarint(t.BytesAcked)
		e.uvarint(t.BytesReceived)
		e.uvarint(uint64(t.SegsOut))
		e.uvarint(uint64(t.SegsIn))
		e.uvarint(uint64(t.Retransmits))
		e.varint(int64(t.SRTT))
		e.varint(int64(t.RTTVar))
		e.varint(int64(t.MinRTT))
	} else {
		e.bool(false)
	}
	if ev.Kind == tcp.KindConnectFail {
		e.uvarint(uint64(ev.PortRange[0]))
		e.uvarint(uint64(ev.PortRange[1]))
	}
}

func (e *encoder) frames(frames []tcp.Frame) {
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
	// strs is the file's string table: string number k is strs[k-1].
	strs []string
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errShort
	}
	d.b = nil
}

// The readers below take what is left of the record through the
// index-style readers of the event decoder (u8, uv, sv, strAt, timeAt,
// addrPortAt, ownerAt), so that each field is parsed in one place.

// advance moves past the i bytes a reader took; i past the end marks an error.
func (d *decoder) advance(i int) {
	if i > len(d.b) {
		d.fail()
		return
	}
	d.b = d.b[i:]
}

func (d *decoder) uvarint() uint64 {
	v, i := uv(d.b, 0)
	d.advance(i)
	return v
}

func (d *decoder) varint() int64 {
	v, i := sv(d.b, 0)
	d.advance(i)
	return v
}

func (d *decoder) byte1() uint8 {
	v, i := u8(d.b, 0)
	d.advance(i)
	return v
}

func (d *decoder) bool() bool { return d.byte1() != 0 }

func (d *decoder) str() string {
	v, i := d.strAt(d.b, 0)
	d.advance(i)
	return v
}

func (d *decoder) time() time.Time {
	v, i := d.timeAt(d.b, 0)
	d.advance(i)
	return v
}

func (d *decoder) addrPort() netip.AddrPort {
	v, i := addrPortAt(d.b, 0)
	d.advance(i)
	return v
}

func (d *decoder) owner() tcp.Owner {
	v, i := d.ownerAt(d.b, 0)
	d.advance(i)
	return v
}

func (d *decoder) socket(s *tcp.Socket) {
	s.Cookie = d.uvarint()
	s.Inode = d.uvarint()
	s.NetNS = uint32(d.uvarint())
	s.Local = d.addrPort()
	s.Remote = d.addrPort()
	s.State = tcp.State(d.byte1())
	s.TimeWaitExpiry = d.time()
	s.LastReceived = d.time()
	s.Reuse = d.bool()
	n := d.count(minOwnerBytes)
	s.Holders = nil
	for i := 0; i < n && d.err == nil; i++ {
		s.Holders = append(s.Holders, d.owner())
	}
}

// The fewest bytes an item takes in a record (its zero value's): a count
// of items is trusted only as far as the rest of the record can hold them,
// so that a crafted count cannot make a reader allocate more than a small
// multiple of the file's size.
const (
	minSocketBytes = 14
	minOwnerBytes  = 7
	minFrameBytes  = 5
	minNetNSBytes  = 1
)

// count reads a number of items of at least min bytes each, bounded by
// what the rest of the record can hold.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(n)
}

// The event decoder is the hot path of reading a trace: it walks the payload
// with an index kept in a register rather than through the decoder's slice.
// An index past the end marks an error, and stays past the end.

func u8(p []byte, i int) (uint8, int) {
	if uint(i) < uint(len(p)) {
		return p[i], i + 1
	}
	return 0, len(p) + 1
}

func uv(p []byte, i int) (uint64, int) {
	if uint(i) < uint(len(p)) && p[i] < 0x80 {
		return uint64(p[i]), i + 1
	}
	return uvSlow(p, i)
}

// uvSlow reads a uvarint of more than one byte; those of two to four bytes
// (ports, pids, cookies, time deltas) are unrolled.
func uvSlow(p []byte, i int) (uint64, int) {
	if uint(i) >= uint(len(p)) {
		return 0, len(p) + 1
	}
	if q := p[i:]; len(q) >= 4 {
		switch {
		case q[1] < 0x80:
			return uint64(q[0]&0x7f) | uint64(q[1])<<7, i + 2
		case q[2] < 0x80:
			return uint64(q[0]&0x7f) | uint64(q[1]&0x7f)<<7 | uint64(q[2])<<14, i + 3
		case q[3] < 0x80:
			return uint64(q[0]&0x7f) | uint64(q[1]&0x7f)<<7 | uint64(q[2]&0x7f)<<14 | uint64(q[3])<<21, i + 4
		}
	}
	v, n := binary.Uvarint(p[i:])
	if n <= 0 {
		return 0, len(p) + 1
	}
	return v, i + n
}

// uvs reads len(out) consecutive uvarints in one call.
func uvs(p []byte, i int, out []uint64) int {
	for k := range out {
		if uint(i) < uint(len(p)) && p[i] < 0x80 {
			out[k] = uint64(p[i])
			i++
			continue
		}
		out[k], i = uvSlow(p, i)
	}
	return i
}

// unzig undoes the zigzag encoding of a varint read as a uvarint.
func unzig(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// sv reads a varint (zigzag-encoded by binary.AppendVarint).
func sv(p []byte, i int) (int64, int) {
	u, i := uv(p, i)
	return unzig(u), i
}

// strAt reads a string reference (see encoder.str).
func (d *decoder) strAt(p []byte, i int) (string, int) {
	ref, i := uv(p, i)
	switch {
	case i > len(p) || ref == 0:
		return "", i
	case ref&1 == 0:
		if k := ref >> 1; k <= uint64(len(d.strs)) {
			return d.strs[k-1], i
		}
		return "", len(p) + 1
	}
	n, i := uv(p, i)
	if i > len(p) || n > uint64(len(p)-i) || ref>>1 != uint64(len(d.strs))+1 {
		return "", len(p) + 1
	}
	s := string(p[i : i+int(n)])
	d.strs = append(d.strs, s)
	return s, i + int(n)
}

func (d *decoder) timeAt(p []byte, i int) (time.Time, int) {
	flag, i := u8(p, i)
	if flag == 0 {
		return time.Time{}, i
	}
	delta, i := sv(p, i)
	d.last += delta
	return time.Unix(0, d.last), i
}

func addrPortAt(p []byte, i int) (netip.AddrPort, int) {
	var a netip.Addr
	kind, i := u8(p, i)
	switch kind {
	case 4:
		if i+4 <= len(p) {
			a = netip.AddrFrom4([4]byte(p[i : i+4]))
		}
		i += 4
	case 6:
		if i+16 <= len(p) {
			a = netip.AddrFrom16([16]byte(p[i : i+16]))
		}
		i += 16
	}
	if i+2 > len(p) {
		return netip.AddrPort{}, len(p) + 1
	}
	return netip.AddrPortFrom(a, binary.LittleEndian.Uint16(p[i:])), i + 2
}

func (d *decoder) ownerAt(p []byte, i int) (tcp.Owner, int) {
	var o tcp.Owner
	var v uint64
	var fd int64
	var b uint8
	v, i = uv(p, i)
	o.PID = uint32(v)
	o.Comm, i = d.strAt(p, i)
	fd, i = sv(p, i)
	o.FD = int32(fd)
	b, i = u8(p, i)
	o.Via = tcp.OwnerSource(b)
	b, i = u8(p, i)
	o.Closed = b != 0
	o.Cgroup, i = uv(p, i)
	o.Container, i = d.strAt(p, i)
	return o, i
}

func (d *decoder) event(ev *tcp.Event) {
	p := d.b
	var v uint64
	var b uint8
	i := 0
	// Field by field: every field is set, and clearing the whole struct first
	// would cost a tenth of the decoding.
	b, i = u8(p, i)
	ev.Kind = tcp.Kind(b)
	ev.Time, i = d.timeAt(p, i)
	var vs [6]uint64
	i = uvs(p, i, vs[:3])
	ev.Cookie, ev.Inode, ev.NetNS = vs[0], vs[1], uint32(vs[2])
	ev.Local, i = addrPortAt(p, i)
	ev.Remote, i = addrPortAt(p, i)
	b, i = u8(p, i)
	ev.Old = tcp.State(b)
	b, i = u8(p, i)
	ev.New = tcp.State(b)
	ev.InOld, ev.OldBeforeTrace, ev.PortHolders = 0, false, nil
	i = uvs(p, i, vs[:2])
	ev.Running.PID, ev.Running.TID = uint32(vs[0]), uint32(vs[1])
	ev.Running.Comm, i = d.strAt(p, i)
	ev.Owner, i = d.ownerAt(p, i)
	b, i = u8(p, i)
	ev.Source = tcp.Source(b)
	ev.Flags, i = u8(p, i)
	i = uvs(p, i, vs[:6])
	ev.Errno, ev.FD, ev.TimeWaitLeft = int32(unzig(vs[0])), int32(unzig(vs[1])), time.Duration(unzig(vs[2]))
	ev.Origin = tcp.Origin{StackID: int32(unzig(vs[3])), Leaf: vs[4], PID: uint32(vs[5])}
	ev.ResetReason, i = d.strAt(p, i)
	b, i = u8(p, i)
	ev.ResetSent = b != 0
	b, i = u8(p, i)
	ev.ReuseAddr = b != 0
	v, i = uv(p, i)
	if i > len(p) {
		d.fail()
		return
	}
	d.b = p[i:]
	if v > 0 {
		if v-1 > uint64(len(d.b)/minSocketBytes) {
			d.fail()
			return
		}
		ev.PortHolders = make([]tcp.Socket, v-1)
		for j := range ev.PortHolders {
			d.socket(&ev.PortHolders[j])
		}
	}
	ev.Sharers, ev.SynAcks, ev.FirstSynAck, ev.Totals = nil, 0, time.Time{}, tcp.Totals{}
	if len(d.b) > 0 { // absent from traces of older tcptraces
		for n := d.count(minOwnerBytes); n > 0 && d.err == nil; n-- {
			ev.Sharers = append(ev.Sharers, d.owner())
		}
		ev.SynAcks = d.byte1()
		ev.FirstSynAck = d.time()
	}
	if len(d.b) > 0 && d.bool() { // the same
		t := &ev.Totals
		t.Read = true
		t.BytesAcked, t.BytesReceived = d.uvarint(), d.uvarint()
		t.SegsOut, t.SegsIn, t.Retransmits = uint32(d.uvarint()), uint32(d.uvarint()), uint32(d.uvarint())
		t.SRTT, t.RTTVar, t.MinRTT = time.Duration(d.varint()), time.Duration(d.varint()), time.Duration(d.varint())
	}
	ev.PortRange = [2]uint16{}
	if ev.Kind == tcp.KindConnectFail && len(d.b) > 0 {
		ev.PortRange = [2]uint16{uint16(d.uvarint()), uint16(d.uvarint())}
	}
}

func (d *decoder) frames() []tcp.Frame {
	n := d.count(minFrameBytes)
	frames := make([]tcp.Frame, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		frames = append(frames, tcp.Frame{Addr: d.uvarint(), Func: d.str(), File: d.str(), Line: int(d.uvarint()), Module: d.str()})
	}
	return frames
}
