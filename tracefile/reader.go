package tracefile

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// maxRecord bounds one record's payload: a corrupt length fails cleanly.
const maxRecord = 64 << 20

// Reader reads a trace file's inputs in order.
type Reader struct {
	r      *bufio.Reader
	Header Header
	// Processes and Origins are what the file said of the processes and
	// origin stacks its events refer to, as far as it has been read.
	Processes map[uint32]Process
	Origins   map[originKey][]tcp.Frame
	// Offset is the byte offset of the next record; Records counts the
	// records read; Last is the time of the latest input read.
	Offset  int64
	Records int
	Last    time.Time
	// Ended is set when the end record was read: the recorder stopped cleanly.
	Ended bool
	dec   decoder
}

// FormatError is a trace that cannot be read further; what came before the
// offset was read and is usable.
type FormatError struct {
	Offset  int64
	Records int
	Last    time.Time
	Msg     string
	// Truncated is set when the file ends in the middle of a record, as it
	// does when the recorder was killed or the machine lost power.
	Truncated bool
}

func (e *FormatError) Error() string {
	read := fmt.Sprintf("%d records read", e.Records)
	if !e.Last.IsZero() {
		read += ", up to " + e.Last.Format("2006-01-02 15:04:05.000000")
	}
	return fmt.Sprintf("byte %d: %s (%s)", e.Offset, e.Msg, read)
}

// NewReader reads the file's start and header.
func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{
		r: bufio.NewReaderSize(r, 1<<20), Processes: map[uint32]Process{}, Origins: map[originKey][]tcp.Frame{},
	}
	start := make([]byte, len(Magic)+2)
	n, err := io.ReadFull(rd.r, start)
	magic := start[:min(n, len(Magic))]
	switch {
	case n == 0:
		return nil, rd.fail("the file is empty: not a tcptrace trace", false)
	case string(magic) != Magic[:len(magic)]:
		return nil, rd.fail("not a tcptrace trace (it does not start with \"tcptrace\")", false)
	case err != nil:
		return nil, rd.fail("the file is too short to be a tcptrace trace", true)
	}
	if v := binary.LittleEndian.Uint16(start[len(Magic):]); v != Version {
		return nil, rd.fail(fmt.Sprintf("trace format version %d; this tcptrace reads version %d", v, Version), false)
	}
	rd.Offset = int64(len(start))
	typ, payload, err := rd.record()
	if err == io.EOF {
		return nil, rd.fail("the trace ends before its header", true)
	}
	if err != nil {
		return nil, err
	}
	if typ != recHeader {
		return nil, rd.fail(fmt.Sprintf("the first record is %s, not the header", recordName(typ)), false)
	}
	if err := json.Unmarshal(payload, &rd.Header); err != nil {
		return nil, rd.fail("the header does not parse: "+err.Error(), false)
	}
	rd.Records = 1
	return rd, nil
}

func recordName(typ byte) string {
	if name, ok := recordNames[typ]; ok {
		return "a " + name + " record"
	}
	return fmt.Sprintf("an unknown record type %#x", typ)
}

func (rd *Reader) fail(msg string, truncated bool) error {
	return &FormatError{Offset: rd.Offset, Records: rd.Records, Last: rd.Last, Msg: msg, Truncated: truncated}
}

const truncatedMsg = "the trace ends in the middle of a record: the recorder stopped without closing it (killed, or the machine lost power)"

// record reads one framed record and checks its CRC; Offset moves past it.
// The payload it returns is valid until the next call.
func (rd *Reader) record() (byte, []byte, error) {
	// Whatever is buffered, so that most records need no second look.
	hdr, err := rd.r.Peek(max(1+binary.MaxVarintLen64, rd.r.Buffered()))
	if len(hdr) == 0 {
		if err == io.EOF {
			return 0, nil, io.EOF
		}
		return 0, nil, rd.fail(err.Error(), false)
	}
	typ := hdr[0]
	n, k := binary.Uvarint(hdr[1:])
	switch {
	case k == 0:
		return 0, nil, rd.fail(truncatedMsg, true)
	case k < 0:
		return 0, nil, rd.fail("bad record length", false)
	case n > maxRecord:
		return 0, nil, rd.fail(fmt.Sprintf("%s claims %d bytes: the file is corrupt", recordName(typ), n), false)
	}
	total := 1 + k + int(n) + 4
	var buf []byte
	switch {
	case total <= len(hdr):
		buf = hdr[:total]
		rd.r.Discard(total)
	case total <= rd.r.Size():
		// In place, without a copy.
		if buf, err = rd.r.Peek(total); err != nil {
			return 0, nil, rd.fail(truncatedMsg, true)
		}
		rd.r.Discard(total)
	default:
		// A large claimed length may be corruption: grow only as data comes.
		var big bytes.Buffer
		if got, _ := io.CopyN(&big, rd.r, int64(total)); got < int64(total) {
			return 0, nil, rd.fail(truncatedMsg, true)
		}
		buf = big.Bytes()
	}
	body := buf[:total-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(buf[total-4:]) {
		return 0, nil, rd.fail(fmt.Sprintf("%s fails its checksum: the file is corrupt", recordName(typ)), false)
	}
	rd.Offset += int64(total)
	return typ, body[1+k:], nil
}

// Next reads the next input. It returns io.EOF at the end of the file;
// other errors are *FormatError.
func (rd *Reader) Next(in *timeline.Input) error {
	for {
		start := rd.Offset
		typ, payload, err := rd.record()
		if err != nil {
			return err
		}
		rd.dec.b, rd.dec.err = payload, nil
		switch typ {
		case recEvent:
			in.Kind = timeline.InputEvent
			rd.dec.event(&in.Event)
			rd.Last = in.Event.Time
		case recTimeWait:
			in.Kind = timeline.InputTimeWait
			in.TimeWait = timeline.TimeWaitSighting{Cookie: rd.dec.uvarint(), At: rd.dec.time(), Seen: rd.dec.bool(),
				Substate: tcp.State(rd.dec.byte1()), Expiry: rd.dec.time()}
			if len(rd.dec.b) > 0 { // absent before tcptrace reported early kills
				in.TimeWait.Killed = rd.dec.bool()
			}
			rd.Last = in.TimeWait.At
		case recTable:
			in.Kind = timeline.InputTable
			in.Table = timeline.Table{At: rd.dec.time(), Repair: rd.dec.bool()}
			n := rd.dec.count(minSocketBytes)
			in.Table.Sockets = make([]tcp.Socket, n)
			for i := range in.Table.Sockets {
				rd.dec.socket(&in.Table.Sockets[i])
			}
			if len(rd.dec.b) > 0 { // absent from traces of older tcptraces
				for n := rd.dec.count(minNetNSBytes); n > 0; n-- {
					in.Table.NetNS = append(in.Table.NetNS, uint32(rd.dec.uvarint()))
				}
			}
			rd.Last = in.Table.At
		case recStats:
			in.Kind = timeline.InputStats
			in.Stats = timeline.StatsAt{At: rd.dec.time()}
			for i, v := range statsFields(&in.Stats.Stats) {
				if i >= statsFieldsOld && len(rd.dec.b) == 0 {
					break
				}
				*v = rd.dec.uvarint()
			}
			rd.Last = in.Stats.At
		case recProcess:
			p := Process{PID: uint32(rd.dec.uvarint()), Comm: rd.dec.str(), Cmdline: rd.dec.str(), Start: rd.dec.time()}
			rd.Processes[p.PID] = p
		case recOrigin:
			key := originKey{pid: uint32(rd.dec.uvarint()), stack: int32(rd.dec.varint()), leaf: rd.dec.uvarint()}
			rd.Origins[key] = rd.dec.frames()
		case recEnd:
			rd.Ended = true
		default:
			rd.Offset = start
			return rd.fail(fmt.Sprintf("%s: this tcptrace does not know it", recordName(typ)), false)
		}
		if rd.dec.err != nil {
			rd.Offset = start
			return rd.fail(fmt.Sprintf("%s does not decode: the file is corrupt", recordName(typ)), false)
		}
		rd.Records++
		if typ == recEvent || typ == recTimeWait || typ == recTable || typ == recStats {
			return nil
		}
	}
}

// Origin returns the symbolized stack the file holds for an origin, or nil.
func (rd *Reader) Origin(o tcp.Origin) []tcp.Frame {
	return rd.Origins[originKey{o.PID, o.StackID, o.Leaf}]
}
