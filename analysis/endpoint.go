package analysis

import (
	"net/netip"

	"github.com/tcptrace/tcptrace/tcp"
)

// Endpoint is a socket address in a report: a netip.AddrPort that writes
// itself as tcptrace always has, "-" when there is none, in text and in JSON
// alike (netip writes "" in JSON and "invalid AddrPort" in text).
type Endpoint struct{ netip.AddrPort }

func (e Endpoint) String() string { return tcp.Endpoint(e.AddrPort) }

// MarshalText writes the address as String does.
func (e Endpoint) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (e *Endpoint) UnmarshalText(b []byte) error {
	if string(b) == "-" {
		*e = Endpoint{}
		return nil
	}
	return e.AddrPort.UnmarshalText(b)
}
