//go:build linux

package tracer

import "github.com/tcptrace/tcptrace/tcp"

// SocketTable walks the kernel's socket and fd tables now, as WalkTable does,
// but feeds neither the timeline nor the recorder, nor teaches the kernel
// owners: for views that read the table often, such as metrics, and must not
// change what a trace holds. Call it from Run's goroutine.
func (t *Tracer) SocketTable() ([]tcp.Socket, error) {
	table, _, err := t.walkTables()
	return table, err
}
