package tcp

import (
	"net/netip"
	"time"
)

// Socket is one socket of the kernel's socket table.
type Socket struct {
	Cookie uint64
	Inode  uint64
	NetNS  uint32
	Local  netip.AddrPort
	Remote netip.AddrPort
	State  State // for a timewait socket, its substate
	// TimeWaitExpiry is set for timewait sockets.
	TimeWaitExpiry time.Time
	// LastReceived is when the socket last received a segment (jiffy precision);
	// zero when unknown.
	LastReceived time.Time
	// Reuse is set when the socket has SO_REUSEADDR.
	Reuse   bool
	Holders []Owner
}

// HostTCP are the host's TCP settings that TIME_WAIT advice depends on.
type HostTCP struct {
	PortRange    [2]int // net.ipv4.ip_local_port_range
	TwReuse      int    // net.ipv4.tcp_tw_reuse: 0 off, 1 on, 2 loopback only
	MaxTwBuckets int    // net.ipv4.tcp_max_tw_buckets
}

// EphemeralPorts is how many local ports connect() can pick from.
func (h HostTCP) EphemeralPorts() int { return h.PortRange[1] - h.PortRange[0] + 1 }
