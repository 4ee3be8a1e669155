package tracefile

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// Header describes a trace: where and how it was recorded.
type Header struct {
	Tracer   string      `json:"tracer"` // tcptrace's version
	Hostname string      `json:"hostname"`
	Kernel   string      `json:"kernel"`
	Started  time.Time   `json:"started"`
	Host     tcp.HostTCP `json:"host_tcp"`
	// ClockOffsetNs maps the kernel's CLOCK_BOOTTIME to wall-clock time
	// (wall = boottime + offset); event times in the file are already wall-clock.
	ClockOffsetNs int64    `json:"clock_offset_ns"`
	Filters       []string `json:"filters,omitempty"`
	// Part counts files of a rotated recording, from 1.
	Part int `json:"part"`
}

// Process is what the recorder learned of a process that owned a socket.
type Process struct {
	PID     uint32
	Comm    string
	Cmdline string
	Start   time.Time // zero when unknown
}

// Options control a recording.
type Options struct {
	// Force overwrites an existing file.
	Force bool
	// MaxSize, when > 0, rotates to a new file past that many bytes: FILE.1
	// is the previous file, FILE.2 the one before, up to MaxFiles of them.
	MaxSize  int64
	MaxFiles int
	// Frames symbolizes the stack where a socket was created, while its process lives.
	Frames func(tcp.Origin) []tcp.Frame
	// Process describes a process while it lives.
	Process func(pid uint32) Process
}

// Writer records inputs to a trace file. It is not safe for concurrent use.
type Writer struct {
	path   string
	opts   Options
	header Header
	f      *os.File
	bw     *bufio.Writer
	size   int64
	// startSize is the size of the current file's start: its header and,
	// after a rotation, the table walk it begins with.
	startSize int64
	// out counts what the file took; failed is set once a write failed.
	out    *countingWriter
	failed bool
	enc    encoder
	rec    []byte
	// Origins and processes already in the current file.
	origins   map[originKey]bool
	processes map[uint32]bool
	lastTable *timeline.Table
}

type originKey struct {
	pid   uint32
	stack int32
	leaf  uint64
}

// Create starts a trace file, mode 0600 (it holds addresses and command lines).
// An existing file is an error unless opts.Force.
func Create(path string, h Header, opts Options) (*Writer, error) {
	w := &Writer{path: path, opts: opts, header: h}
	if w.header.Part == 0 {
		w.header.Part = 1
	}
	if err := w.open(!opts.Force); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%s exists: choose another file or pass --force to overwrite it", path)
		}
		return nil, err
	}
	return w, nil
}

// open starts a new file at the writer's path. It is written first under a
// temporary name in the same directory, mode 0600, and moved into place
// once its start is on disk: a symlink at the path is replaced, never
// written through, an old file's mode does not carry over, and a recorder
// killed at any moment leaves a readable trace or none. keep refuses to
// replace anything at the path.
func (w *Writer) open(keep bool) error {
	dir, base := filepath.Split(w.path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*")
	if err != nil {
		return err
	}
	if err := w.start(f); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if keep {
		// A link fails on anything at the path, a dangling symlink too.
		if err = os.Link(f.Name(), w.path); err == nil {
			err = os.Remove(f.Name())
		}
	} else {
		err = os.Rename(f.Name(), w.path)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	return nil
}

// start writes a file's start, its magic number and header, to f, which
// becomes the writer's file.
func (w *Writer) start(f *os.File) error {
	w.f, w.out, w.failed = f, &countingWriter{w: f, path: w.path}, false
	w.bw, w.size = bufio.NewWriterSize(w.out, 256<<10), 0
	w.enc = encoder{}
	w.origins, w.processes = map[originKey]bool{}, map[uint32]bool{}
	start := binary.LittleEndian.AppendUint16([]byte(Magic), Version)
	if _, err := w.bw.Write(start); err != nil {
		return err
	}
	w.size += int64(len(start))
	meta, err := json.Marshal(w.header)
	if err != nil {
		return err
	}
	w.enc.b = append(w.enc.b[:0], meta...)
	if err := w.write(recHeader); err != nil {
		return err
	}
	w.startSize = w.size
	return w.Flush()
}

// countingWriter counts the bytes the file took, which a full disk makes
// fewer than those given to the buffer, and names the trace in errors (the
// file may still have its temporary name).
type countingWriter struct {
	w    io.Writer
	n    int64
	path string
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, namedAs(err, c.path)
}

// namedAs gives a file error the trace's path, not the temporary name the
// file may still have.
func namedAs(err error, path string) error {
	if pe, ok := err.(*fs.PathError); ok {
		return &fs.PathError{Op: pe.Op, Path: path, Err: pe.Err}
	}
	return err
}

// write frames the encoder's payload as a record: type, length, payload, CRC-32C.
func (w *Writer) write(typ byte) error {
	w.rec = append(w.rec[:0], typ)
	w.rec = binary.AppendUvarint(w.rec, uint64(len(w.enc.b)))
	w.rec = append(w.rec, w.enc.b...)
	w.rec = binary.LittleEndian.AppendUint32(w.rec, crc32.Checksum(w.rec, castagnoli))
	n, err := w.bw.Write(w.rec)
	w.size += int64(n)
	w.enc.b = w.enc.b[:0]
	w.failed = w.failed || err != nil
	return err
}

// Record appends one input, with the process and origin details it refers
// to the first time they appear in the file.
func (w *Writer) Record(in *timeline.Input) error {
	if w.full() {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	switch in.Kind {
	case timeline.InputEvent:
		ev := &in.Event
		if err := w.describe(ev); err != nil {
			return err
		}
		w.enc.event(ev)
		return w.write(recEvent)
	case timeline.InputTimeWait:
		s := &in.TimeWait
		w.enc.uvarint(s.Cookie)
		w.enc.time(s.At)
		w.enc.bool(s.Seen)
		w.enc.byte1(uint8(s.Substate))
		w.enc.time(s.Expiry)
		w.enc.bool(s.Killed)
		return w.write(recTimeWait)
	case timeline.InputTable:
		w.lastTable = &in.Table
		w.enc.time(in.Table.At)
		w.enc.bool(in.Table.Repair)
		w.enc.uvarint(uint64(len(in.Table.Sockets)))
		for i := range in.Table.Sockets {
			w.enc.socket(&in.Table.Sockets[i])
		}
		// Added at the end: older readers skip it.
		w.enc.uvarint(uint64(len(in.Table.NetNS)))
		for _, ns := range in.Table.NetNS {
			w.enc.uvarint(uint64(ns))
		}
		return w.write(recTable)
	case timeline.InputStats:
		st := &in.Stats
		w.enc.time(st.At)
		for _, v := range statsFields(&st.Stats) {
			w.enc.uvarint(*v)
		}
		return w.write(recStats)
	}
	return fmt.Errorf("unknown input kind %d", in.Kind)
}

// statsFields lists the counts in the order the stats record holds them;
// those past the first statsFieldsOld are absent from older traces.
func statsFields(s *timeline.Stats) []*uint64 {
	return []*uint64{&s.Events, &s.RingbufDrops, &s.StateMisses, &s.SyscallMisses, &s.OwnerMapFull,
		&s.Repairs, &s.TimeWaitWalks, &s.TableWalks, &s.NetNSUnfollowed, &s.HoldersUnfollowed}
}

const statsFieldsOld = 9

// describe records the owner's process and the event's origin stack the
// first time the file meets them.
func (w *Writer) describe(ev *tcp.Event) error {
	if pid := ev.Owner.PID; ev.Owner.Known() && !w.processes[pid] && w.opts.Process != nil {
		w.processes[pid] = true
		p := w.opts.Process(pid)
		w.enc.uvarint(uint64(pid))
		w.enc.str(p.Comm)
		w.enc.str(p.Cmdline)
		w.enc.time(p.Start)
		if err := w.write(recProcess); err != nil {
			return err
		}
	}
	if o := ev.Origin; o.Known() && w.opts.Frames != nil {
		key := originKey{o.PID, o.StackID, o.Leaf}
		if !w.origins[key] {
			w.origins[key] = true
			w.enc.uvarint(uint64(o.PID))
			w.enc.varint(int64(o.StackID))
			w.enc.uvarint(o.Leaf)
			w.enc.frames(w.opts.Frames(o))
			if err := w.write(recOrigin); err != nil {
				return err
			}
		}
	}
	return nil
}

// Flush writes what is buffered and asks the kernel to put it on disk: a
// crash loses at most what came after the last Flush.
func (w *Writer) Flush() error {
	err := w.bw.Flush()
	if err == nil {
		err = namedAs(w.f.Sync(), w.path)
	}
	w.failed = w.failed || err != nil
	return err
}

// Size is the current file's size in bytes, counting what is buffered;
// after a failed write (a full disk), only what the file took.
func (w *Writer) Size() int64 {
	if w.failed {
		return w.out.n
	}
	return w.size
}

// full tells when to rotate: past MaxSize, once the file holds at least
// half of MaxSize past its start. A start as large as the limit (a table of
// many sockets) would otherwise fill every new file at once: each event a
// file, rotations without end.
func (w *Writer) full() bool {
	return w.opts.MaxSize > 0 && w.size >= w.opts.MaxSize && w.size-w.startSize >= w.opts.MaxSize/2
}

// rotate closes the current file, shifts FILE.N names up, and starts a new
// file that begins with the latest table walk, so that it stands alone.
func (w *Writer) rotate() error {
	if err := w.closeFile(); err != nil {
		return err
	}
	keep := max(w.opts.MaxFiles, 1)
	for i := keep; i >= 1; i-- {
		from := w.path
		if i > 1 {
			from = fmt.Sprintf("%s.%d", w.path, i-1)
		}
		if err := os.Rename(from, fmt.Sprintf("%s.%d", w.path, i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate: %w", err)
		}
	}
	w.header.Part++
	if err := w.open(false); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if w.lastTable != nil {
		if err := w.Record(&timeline.Input{Kind: timeline.InputTable, Table: *w.lastTable}); err != nil {
			return err
		}
	}
	w.startSize = w.size
	return nil
}

func (w *Writer) closeFile() error {
	if err := w.write(recEnd); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return w.f.Close()
}

// Close ends the trace with its end record, which tells a reader that the
// recording stopped cleanly.
func (w *Writer) Close() error { return w.closeFile() }
