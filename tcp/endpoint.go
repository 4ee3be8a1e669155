package tcp

import (
	"net/netip"
)

// Endpoint is a socket address as tcptrace writes it: a netip.AddrPort
// that writes "-" when there is none, in text and in JSON alike (netip
// writes "" in JSON and "invalid AddrPort" in text).
type Endpoint struct{ netip.AddrPort }

func (e Endpoint) String() string {
	if !e.IsValid() {
		return "-"
	}
	return e.AddrPort.String()
}

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
