package timeline

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tcptrace/tcptrace/tcp"
)

// Filter selects events; a zero Filter selects every event.
type Filter struct {
	PIDs   []uint32
	Comm   string
	Port   uint16 // local or remote
	LPort  uint16
	RPort  uint16
	Addr   netip.Prefix // local or remote address
	Family int          // 4, 6, or 0 for both
	States []tcp.State  // the old or the new state is one of these
	// NetNS is a network namespace's inode number; Cgroups, cgroup v2 ids;
	// Container, a container id or its prefix. Zero values select all.
	NetNS     uint32
	Cgroups   map[uint64]bool
	Container string
}

// ParsePort accepts a TCP port number, 1 to 65535.
func ParsePort(s string) (uint16, error) {
	var p int
	if _, err := fmt.Sscan(s, &p); err != nil || p < 1 || p > 65535 || fmt.Sprint(p) != strings.TrimSpace(s) {
		return 0, fmt.Errorf("invalid port %q: want a number from 1 to 65535", s)
	}
	return uint16(p), nil
}

// ParsePrefix accepts an IP address or a CIDR prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid address %q: want an IP address or a prefix like 10.0.0.0/8", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid address %q: want an IP address or a prefix like 10.0.0.0/8", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Match reports whether the filter selects ev.
func (f *Filter) Match(ev *tcp.Event) bool {
	if !f.matchHolder(ev.Owner) && !slices.ContainsFunc(ev.Sharers, f.matchHolder) {
		return false
	}
	if f.NetNS != 0 && ev.NetNS != f.NetNS {
		return false
	}
	if !f.matchEnds(ev.Local, ev.Remote) {
		return false
	}
	if len(f.States) > 0 && !slices.Contains(f.States, ev.Old) && !slices.Contains(f.States, ev.New) {
		return false
	}
	return true
}

// MatchSocket reports whether the filter selects a socket of the socket
// table and at least one of its holders; states are not compared.
func (f *Filter) MatchSocket(s *tcp.Socket) bool {
	if !f.matchEnds(s.Local, s.Remote) || (f.NetNS != 0 && s.NetNS != f.NetNS) {
		return false
	}
	if len(f.PIDs) == 0 && f.Comm == "" && f.Cgroups == nil && f.Container == "" {
		return true
	}
	return slices.ContainsFunc(s.Holders, f.matchHolder)
}

// matchHolder applies the process filters to one process holding a socket.
func (f *Filter) matchHolder(o tcp.Owner) bool {
	return (len(f.PIDs) == 0 || slices.Contains(f.PIDs, o.PID)) && (f.Comm == "" || o.Comm == f.Comm) && f.MatchPlace(o)
}

// MatchPlace applies the cgroup and container filters to an owner.
func (f *Filter) MatchPlace(o tcp.Owner) bool {
	if f.Cgroups != nil && !f.Cgroups[o.Cgroup] {
		return false
	}
	return f.Container == "" || strings.HasPrefix(o.Container, f.Container)
}

// matchEnds applies the port, address and family filters.
func (f *Filter) matchEnds(local, remote netip.AddrPort) bool {
	lport, rport := local.Port(), remote.Port()
	if f.Port != 0 && lport != f.Port && rport != f.Port {
		return false
	}
	if (f.LPort != 0 && lport != f.LPort) || (f.RPort != 0 && rport != f.RPort) {
		return false
	}
	if f.Addr.IsValid() && !f.Addr.Contains(local.Addr().Unmap()) && !f.Addr.Contains(remote.Addr().Unmap()) {
		return false
	}
	return f.Family == 0 || tcp.FamilyOf(local) == f.Family
}
