package tcp

import (
	"net/netip"
)

// Endpoint is a socket address as tcptrace writes it: "-" for none, in
// text and in JSON alike (netip writes "" in JSON and "invalid AddrPort"
// in text).
type Endpoint struct{ netip.AddrPort }

// AppendEndpoint writes ap for people: "-" when it names no end, as when it
// is invalid, or the unspecified address with no port (a listener's remote
// side, a connecting socket's local side before it has a port); the address
// alone when it has no port (a peer of many ports, a socket not yet bound
// to one).
func AppendEndpoint(b []byte, ap netip.AddrPort) []byte {
	switch {
	case !ap.IsValid() || ap.Port() == 0 && ap.Addr().IsUnspecified():
		return append(b, '-')
	case ap.Port() == 0:
		return ap.Addr().AppendTo(b)
	}
	return ap.AppendTo(b)
}

func (e Endpoint) String() string { return string(AppendEndpoint(nil, e.AddrPort)) }

// MarshalText writes the address as String does.
func (e Endpoint) MarshalText() ([]byte, error) { return AppendEndpoint(nil, e.AddrPort), nil }

// UnmarshalText reads what MarshalText writes.
func (e *Endpoint) UnmarshalText(b []byte) error {
	if string(b) == "-" {
		*e = Endpoint{}
		return nil
	}
	if a, err := netip.ParseAddr(string(b)); err == nil {
		*e = Endpoint{netip.AddrPortFrom(a, 0)}
		return nil
	}
	return e.AddrPort.UnmarshalText(b)
}
