//go:build linux

package kernel

import (
	"testing"
	"unsafe"

	"github.com/tcptrace/tcptrace/tcp"
)

// BenchmarkDecode is the cost of turning one ring-buffer record into an Event.
func BenchmarkDecode(b *testing.B) {
	d := NewDecoder(func(uint64, uint32) string { return "" })
	raw := tcptraceEvent{Kind: uint8(tcptraceEventKindEVENT_STATE), TsNs: 1, Cookie: 7, Family: afInet, Sport: 40000, Dport: 80,
		Oldstate: 1, Newstate: 8, Pid: 42, Tid: 42, Owner: tcptraceOwner{Pid: 42, Fd: 5, Source: uint8(tcp.OwnerAccept)}}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&raw.Comm[0])), 16), "server")
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&raw.Owner.Comm[0])), 16), "server")
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&raw)), unsafe.Sizeof(raw))
	var ev tcp.Event
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !d.Decode(buf, &ev) {
			b.Fatal("not decoded")
		}
	}
}
