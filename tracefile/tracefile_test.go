package tracefile

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// sampleInputs has one input of every kind, with every field set.
func sampleInputs() []timeline.Input {
	local := netip.MustParseAddrPort("127.0.0.1:8080")
	remote := netip.MustParseAddrPort("[::1]:40000")
	holder := tcp.Owner{PID: 42, Comm: "server", FD: 7, Via: tcp.OwnerSeed, Cgroup: 4242, Container: "3f1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a"}
	sock := tcp.Socket{Cookie: 9, Inode: 1234, NetNS: 4026531840, Local: local, Remote: remote, State: tcp.StateCloseWait,
		LastReceived: t0.Add(-time.Minute), Reuse: true, Holders: []tcp.Owner{holder, {PID: 43, Comm: "child", FD: 3, Via: tcp.OwnerSeed}}}
	tw := sock
	tw.Cookie, tw.State, tw.Holders, tw.LastReceived, tw.TimeWaitExpiry = 10, tcp.StateTimeWait, nil, time.Time{}, t0.Add(time.Minute)
	return []timeline.Input{
		{Kind: timeline.InputTable, Table: timeline.Table{At: t0, Sockets: []tcp.Socket{sock, tw}, NetNS: []uint32{4026531840, 4026532999}}},
		{Kind: timeline.InputEvent, Event: tcp.Event{
			Kind: tcp.KindTransition, Time: t0.Add(time.Second), Cookie: 9, Inode: 1234, NetNS: 4026531840, Local: local, Remote: remote,
			Old: tcp.StateEstablished, New: tcp.StateCloseWait, Running: tcp.Task{PID: 5, TID: 6, Comm: "client"},
			Owner: tcp.Owner{PID: 42, Comm: "server", FD: 7, Via: tcp.OwnerAccept, Closed: true, Cgroup: 77}, Source: tcp.SourceKernel,
			Flags: tcp.FlagOrphan, Errno: 104, FD: -1, TimeWaitLeft: 59 * time.Second,
			Origin: tcp.Origin{StackID: 3, Leaf: 0x401000, PID: 42}, ResetReason: "TCP_ABORT_ON_CLOSE", ResetSent: true, ReuseAddr: true,
			PortHolders: []tcp.Socket{tw}, Sharers: []tcp.Owner{{PID: 43, Comm: "child", FD: 7, Via: tcp.OwnerFork}},
			Totals: tcp.Totals{Read: true, BytesAcked: 1 << 40, BytesReceived: 12345, SegsOut: 9, SegsIn: 8, Retransmits: 2,
				SRTT: 150 * time.Microsecond, RTTVar: 40 * time.Microsecond, MinRTT: 20 * time.Microsecond},
		}},
		{Kind: timeline.InputEvent, Event: tcp.Event{Kind: tcp.KindBindFail, Time: t0.Add(2 * time.Second), Local: local,
			Owner: tcp.Owner{PID: 50, Comm: "restart", FD: 3}, FD: 3, PortHolders: []tcp.Socket{}}},
		{Kind: timeline.InputTimeWait, TimeWait: timeline.TimeWaitSighting{Cookie: 10, At: t0.Add(3 * time.Second), Seen: true, Substate: tcp.StateTimeWait, Expiry: t0.Add(time.Minute)}},
		{Kind: timeline.InputTimeWait, TimeWait: timeline.TimeWaitSighting{Cookie: 11, At: t0.Add(3 * time.Second), Substate: tcp.StateTimeWait, Expiry: t0.Add(time.Minute), Killed: true}},
		{Kind: timeline.InputStats, Stats: timeline.StatsAt{At: t0.Add(4 * time.Second), Stats: timeline.Stats{Events: 1, RingbufDrops: 2, StateMisses: 3, SyscallMisses: 4, OwnerMapFull: 5, Repairs: 6, TimeWaitWalks: 7, TableWalks: 8, NetNSUnfollowed: 9, HoldersUnfollowed: 10}}},
		{Kind: timeline.InputTable, Table: timeline.Table{At: t0.Add(5 * time.Second), Repair: true}},
	}
}

func frames(o tcp.Origin) []tcp.Frame {
	return []tcp.Frame{{Addr: o.Leaf, Func: "main.serve", File: "main.go", Line: 88, Module: "/srv/api"}}
}

func process(pid uint32) Process {
	return Process{PID: pid, Comm: "server", Cmdline: "/srv/api --port 8080", Start: t0.Add(-time.Hour)}
}

// writeSample records sampleInputs and returns the file's bytes.
func writeSample(t testing.TB, closeIt bool) []byte {
	path := filepath.Join(t.TempDir(), "trace")
	w, err := Create(path, Header{Tracer: "test", Hostname: "host", Kernel: "6.18", Started: t0}, Options{Frames: frames, Process: process})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range sampleInputs() {
		if err := w.Record(&in); err != nil {
			t.Fatal(err)
		}
	}
	if closeIt {
		err = w.Close()
	} else {
		err = w.Flush()
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("trace file mode %v, want 0600", st.Mode().Perm())
	}
	return b
}

func readAll(data []byte) (*Reader, []timeline.Input, error) {
	rd, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, nil, err
	}
	var ins []timeline.Input
	for {
		var in timeline.Input
		err := rd.Next(&in)
		if err == io.EOF {
			return rd, ins, nil
		}
		if err != nil {
			return rd, ins, err
		}
		ins = append(ins, in)
	}
}

// normalize makes times comparable (monotonic readings and locations differ).
func normalize(ins []timeline.Input) {
	fix := func(t *time.Time) {
		if !t.IsZero() {
			*t = time.Unix(0, t.UnixNano()).UTC()
		}
	}
	fixSock := func(s *tcp.Socket) { fix(&s.TimeWaitExpiry); fix(&s.LastReceived) }
	for i := range ins {
		in := &ins[i]
		fix(&in.Event.Time)
		fix(&in.TimeWait.At)
		fix(&in.TimeWait.Expiry)
		fix(&in.Table.At)
		fix(&in.Stats.At)
		for j := range in.Table.Sockets {
			fixSock(&in.Table.Sockets[j])
		}
		for j := range in.Event.PortHolders {
			fixSock(&in.Event.PortHolders[j])
		}
		if in.Table.Sockets != nil && len(in.Table.Sockets) == 0 {
			in.Table.Sockets = nil
		}
	}
}

func TestRoundTrip(t *testing.T) {
	rd, got, err := readAll(writeSample(t, true))
	if err != nil {
		t.Fatal(err)
	}
	want := sampleInputs()
	normalize(got)
	normalize(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back:\n%+v\nwant:\n%+v", got, want)
	}
	if !rd.Ended || rd.Header.Hostname != "host" || rd.Header.Part != 1 {
		t.Errorf("ended %v header %+v", rd.Ended, rd.Header)
	}
	if p := rd.Processes[42]; p.Cmdline != "/srv/api --port 8080" || !p.Start.Equal(t0.Add(-time.Hour)) {
		t.Errorf("process %+v", p)
	}
	if f := rd.Origin(tcp.Origin{StackID: 3, Leaf: 0x401000, PID: 42}); len(f) != 1 || f[0].Func != "main.serve" {
		t.Errorf("origin frames %+v", f)
	}
}

// TestTruncated cuts a trace at every byte: the reader never panics, and
// says where it stopped and how much it read.
func TestTruncated(t *testing.T) {
	data := writeSample(t, false)
	for cut := 0; cut < len(data); cut++ {
		rd, ins, err := readAll(data[:cut])
		var fe *FormatError
		if cut == len(data) {
			continue
		}
		if err == nil {
			// A cut at a record boundary reads cleanly, without the end record.
			if rd.Ended {
				t.Fatalf("cut at %d: the end record was never written", cut)
			}
			continue
		}
		if !errors.As(err, &fe) || fe.Offset > int64(cut) || fe.Records < len(ins) {
			t.Fatalf("cut at %d: %v (read %d inputs)", cut, err, len(ins))
		}
	}
}

func TestCorrupt(t *testing.T) {
	data := writeSample(t, true)
	bad := append([]byte(nil), data...)
	bad[len(bad)/2] ^= 0xff
	_, _, err := readAll(bad)
	var fe *FormatError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "corrupt") || fe.Offset <= int64(len(Magic)+2) {
		t.Errorf("flipped byte: %v", err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "the file is empty"},
		{"not a trace", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "not a tcptrace trace"},
		{"future version", append([]byte(Magic), 9, 0), "trace format version 9; this tcptrace reads version 2"},
		{"short", []byte("tcp"), "too short"},
	} {
		_, _, err := readAll(tc.data)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestNoOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace")
	os.WriteFile(path, []byte("keep"), 0o600)
	if _, err := Create(path, Header{}, Options{}); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("overwrote an existing file: %v", err)
	}
	w, err := Create(path, Header{}, Options{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
}

func TestRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace")
	w, err := Create(path, Header{Started: t0}, Options{MaxSize: 400, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		for _, in := range sampleInputs() {
			if err := w.Record(&in); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.Close()
	for _, p := range []string{path, path + ".1", path + ".2"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		rd, ins, err := readAll(b)
		if err != nil || !rd.Ended || len(ins) == 0 || rd.Header.Part < 2 {
			t.Errorf("%s: %v, ended %v, %d inputs, part %d", p, err, rd.Ended, len(ins), rd.Header.Part)
		}
		// Each file starts with a table walk, so that it stands alone.
		if ins[0].Kind != timeline.InputTable {
			t.Errorf("%s starts with input kind %d", p, ins[0].Kind)
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("more files kept than MaxFiles")
	}
}

// TestRotationOfALargeStart: a file's start (the table walk it begins with)
// larger than MaxSize still leaves room for events, so that rotations stay
// few; each file reads back whole.
func TestRotationOfALargeStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace")
	const maxSize = 4 << 10
	w, err := Create(path, Header{Started: t0}, Options{MaxSize: maxSize, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	ins := sampleInputs()
	var table timeline.Input
	for _, in := range ins {
		if in.Kind == timeline.InputTable && len(in.Table.Sockets) > 0 {
			table = in
		}
	}
	for i := 0; len(table.Table.Sockets) < 200; i++ {
		s := table.Table.Sockets[0]
		s.Cookie = uint64(1000 + i)
		table.Table.Sockets = append(table.Table.Sockets, s)
	}
	if err := w.Record(&table); err != nil {
		t.Fatal(err)
	}
	if w.Size() < maxSize {
		t.Fatalf("the table takes %d bytes: want more than %d", w.Size(), maxSize)
	}
	var eventBytes int64
	for i := 0; i < 2000; i++ {
		for _, in := range ins {
			if in.Kind == timeline.InputEvent {
				before := w.Size()
				if err := w.Record(&in); err != nil {
					t.Fatal(err)
				}
				if w.Size() > before { // not a rotation
					eventBytes += w.Size() - before
				}
			}
		}
	}
	part := int64(w.header.Part)
	w.Close()
	// Each file holds at least half of MaxSize of events past its start.
	if part > eventBytes/(maxSize/2)+1 {
		t.Errorf("%d files for %d bytes of events: a rotation for every few events", part, eventBytes)
	}
	for _, p := range []string{path, path + ".1"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rd, got, err := readAll(b)
		if err != nil || !rd.Ended || len(got) < 2 || got[0].Kind != timeline.InputTable {
			t.Errorf("%s: %v, ended %v, %d inputs", p, err, rd.Ended, len(got))
		}
	}
}

// FuzzReader: whatever the bytes, reading a trace ends in io.EOF or a
// FormatError, never a panic, and allocates at most a small multiple of
// the input's size.
func FuzzReader(f *testing.F) {
	f.Add(writeSample(f, true))
	f.Add(writeSample(f, false))
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		allocated, err := allocatedReading(data)
		var fe *FormatError
		if err != nil && !errors.As(err, &fe) {
			t.Fatalf("error of type %T: %v", err, err)
		}
		if limit := uint64(allocPerByte*len(data) + allocConstant); allocated > limit {
			t.Fatalf("reading %d bytes allocated %d (more than %d)", len(data), allocated, limit)
		}
	})
}

// TestVarints checks the unrolled decoders against every length of uvarint.
func TestVarints(t *testing.T) {
	var vals []uint64
	for shift := 0; shift < 64; shift++ {
		v := uint64(1) << shift
		vals = append(vals, v-1, v, v+1)
	}
	vals = append(vals, ^uint64(0))
	var e encoder
	for _, v := range vals {
		e.uvarint(v)
	}
	i := 0
	for _, want := range vals {
		var got uint64
		got, i = uv(e.b, i)
		if got != want {
			t.Fatalf("uv: got %d, want %d", got, want)
		}
	}
	out := make([]uint64, len(vals))
	if end := uvs(e.b, 0, out); end != len(e.b) || !reflect.DeepEqual(out, vals) {
		t.Fatalf("uvs: end %d of %d, values differ", end, len(e.b))
	}
	if _, end := uv(e.b[:len(e.b)-1], len(e.b)-10); end <= len(e.b)-1 {
		t.Errorf("a cut varint was not an error")
	}
}
