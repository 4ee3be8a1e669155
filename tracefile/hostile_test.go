package tracefile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/tcptrace/tcptrace/tcp"
	"github.com/tcptrace/tcptrace/timeline"
)

// Reading a trace allocates at most this many times its size, plus a
// constant for the reader's buffers (1 MiB of read buffer): items decode to Go values a dozen or
// so times larger than their smallest encoding, and no count is trusted
// past what the record can hold.
const (
	allocPerByte  = 32
	allocConstant = 2 << 20
)

// allocatedReading reads a trace to its end as report and replay do, one
// input at a time, and returns the bytes allocated meanwhile.
func allocatedReading(data []byte) (uint64, error) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := readDiscard(data)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

func readDiscard(data []byte) error {
	rd, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return err
	}
	var in timeline.Input
	for {
		if err := rd.Next(&in); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// craftedTrace is a valid trace whose one record past the header is of type
// typ with this payload, framed as the writer frames every record.
func craftedTrace(t *testing.T, typ byte, payload []byte) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "crafted")
	w, err := Create(path, Header{Started: t0}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.enc.b = append(w.enc.b[:0], payload...)
	if err := w.write(typ); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCraftedCounts: records that claim as many items as their payload has
// bytes (a table's sockets, an origin's frames, a socket's holders) are
// refused before anything is allocated for them.
func TestCraftedCounts(t *testing.T) {
	const n = 2 << 20
	zeros := make([]byte, n)
	var table, origin, holders []byte
	// A table: no time, not a repair, n sockets.
	table = binary.AppendUvarint([]byte{0, 0}, n)
	table = append(table, zeros...)
	// An origin: pid, stack id, leaf, then n frames.
	origin = binary.AppendUvarint([]byte{1, 0, 0}, n)
	origin = append(origin, zeros...)
	// A table of one socket that claims n holders.
	var e encoder
	e.time(t0)
	e.bool(false)
	e.uvarint(1)
	e.socket(&tcp.Socket{})
	holders = append(e.b[:len(e.b)-1], binary.AppendUvarint(nil, n)...)
	holders = append(holders, zeros...)
	for _, tc := range []struct {
		name    string
		typ     byte
		payload []byte
	}{{"table", recTable, table}, {"origin", recOrigin, origin}, {"holders", recTable, holders}} {
		t.Run(tc.name, func(t *testing.T) {
			data := craftedTrace(t, tc.typ, tc.payload)
			got, err := allocatedReading(data)
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Errorf("read a crafted count without a format error: %v", err)
			}
			if limit := uint64(allocPerByte*len(data) + allocConstant); got > limit {
				t.Errorf("reading %d bytes allocated %d (more than %d)", len(data), got, limit)
			}
		})
	}
}

// TestMinItemBytes: the smallest encodings the decoder's bounds count on
// are those of the zero values.
func TestMinItemBytes(t *testing.T) {
	var e encoder
	e.socket(&tcp.Socket{})
	if len(e.b) != minSocketBytes {
		t.Errorf("a socket takes at least %d bytes, not %d", len(e.b), minSocketBytes)
	}
	e.b = nil
	e.owner(tcp.Owner{})
	if len(e.b) != minOwnerBytes {
		t.Errorf("an owner takes at least %d bytes, not %d", len(e.b), minOwnerBytes)
	}
	e.b = nil
	e.frames([]tcp.Frame{{}})
	if len(e.b)-1 != minFrameBytes {
		t.Errorf("a frame takes at least %d bytes, not %d", len(e.b)-1, minFrameBytes)
	}
}
