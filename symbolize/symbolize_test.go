//go:build linux

package symbolize

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func place() {}

// TestFramesStopAtJunk: a frame-pointer walk that ran off the stack gives
// addresses no return address can be; the stack ends at the first one.
func TestFramesStopAtJunk(t *testing.T) {
	fn := uint64(reflect.ValueOf(place).Pointer())
	unmapped := uint64(0x10) // below every mapping
	for _, tc := range []struct {
		name  string
		addrs []uint64
		want  int
	}{
		{"whole", []uint64{fn, fn + 1}, 2},
		{"zero", []uint64{fn, 0, fn + 1}, 1},
		{"not a user address", []uint64{fn, 0xffff_8000_0000_1000, fn + 1}, 1},
		{"non-canonical", []uint64{fn, 0x0000_9000_0000_0000, fn + 1}, 1},
		{"outside every mapping", []uint64{fn, fn + 1, unmapped, fn}, 2},
	} {
		frames := New().Frames(uint32(os.Getpid()), tc.addrs)
		if len(frames) != tc.want {
			t.Errorf("%s: %d frames %v, want %d", tc.name, len(frames), frames, tc.want)
			continue
		}
		if !strings.HasSuffix(frames[0].Func, "symbolize.place") {
			t.Errorf("%s: first frame %+v, want symbolize.place", tc.name, frames[0])
		}
	}
}
