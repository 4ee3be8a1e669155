//go:build linux

package kernel

import (
	"bytes"
	"net/netip"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/btf"

	"github.com/tcptrace/tcptrace/host"
	"github.com/tcptrace/tcptrace/tcp"
)

const afInet = 2

// Decoder turns the programs' records into tcp.Events. It reads nothing
// from the host but what it is given when made, and keeps the process and
// container names it has seen, so that steady-state decoding allocates
// nothing. Use it from one goroutine.
type Decoder struct {
	// bootOffset turns the kernel's CLOCK_BOOTTIME stamps into wall-clock time.
	bootOffset int64
	nsPerJiffy int64
	comms      commCache
	// containerOf names the container of a cgroup id, seen with a pid.
	containerOf  func(cgroup uint64, pid uint32) string
	resetReasons map[uint32]string
}

// NewDecoder makes a decoder for records of this host's kernel;
// containerOf names the container of an owner's cgroup.
func NewDecoder(containerOf func(cgroup uint64, pid uint32) string) *Decoder {
	return &Decoder{
		bootOffset:   host.BootClockOffset(),
		nsPerJiffy:   int64(time.Second) / host.HZ(),
		comms:        make(commCache),
		containerOf:  containerOf,
		resetReasons: ResetReasons(),
	}
}

func (d *Decoder) wall(bootNs uint64) time.Time { return time.Unix(0, int64(bootNs)+d.bootOffset) }

// KnowsResetReasons reports whether this kernel names the reasons for the
// RSTs it sends (Linux 6.10+).
func (d *Decoder) KnowsResetReasons() bool { return len(d.resetReasons) > 0 }

// commCache interns process names so that steady-state decoding allocates nothing.
type commCache map[[16]int8]string

const commCacheMax = 4096

func (c commCache) name(raw [16]int8) string {
	if s, ok := c[raw]; ok {
		return s
	}
	if len(c) >= commCacheMax {
		clear(c)
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&raw[0])), len(raw))
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	s := string(b)
	c[raw] = s
	return s
}

func addrPort(family uint16, raw *[16]uint8, port uint16) netip.AddrPort {
	if family == afInet {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(raw[:4])), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(*raw), port)
}

var kindOf = [...]tcp.Kind{
	tcptraceEventKindEVENT_STATE:        tcp.KindTransition,
	tcptraceEventKindEVENT_ACCEPT:       tcp.KindAccept,
	tcptraceEventKindEVENT_CLOSE_FD:     tcp.KindCloseFD,
	tcptraceEventKindEVENT_RESET:        tcp.KindReset,
	tcptraceEventKindEVENT_BIND_FAIL:    tcp.KindBindFail,
	tcptraceEventKindEVENT_TW_EXPIRED:   KindTimeWaitExpired,
	tcptraceEventKindEVENT_EXIT:         tcp.KindExit,
	tcptraceEventKindEVENT_FORK:         tcp.KindFork,
	tcptraceEventKindEVENT_EXEC:         tcp.KindExec,
	tcptraceEventKindEVENT_NEW_FD:       tcp.KindNewFD,
	tcptraceEventKindEVENT_SYNACK_TIMER: tcp.KindHalfOpen,
	tcptraceEventKindEVENT_CONNECT_FAIL: tcp.KindConnectFail,
}

// KindTimeWaitExpired marks a decoded record about a timewait socket whose
// timer fired; it becomes a TimeWaitSighting, never an Event of its own.
const KindTimeWaitExpired tcp.Kind = 255

// Decode fills ev from one ring-buffer record; it reports false for a
// record it does not understand.
func (d *Decoder) Decode(raw []byte, ev *tcp.Event) bool {
	if len(raw) < int(unsafe.Sizeof(tcptraceEvent{})) {
		return false
	}
	r := (*tcptraceEvent)(unsafe.Pointer(&raw[0]))
	if int(r.Kind) >= len(kindOf) || kindOf[r.Kind] == 0 {
		return false
	}
	*ev = tcp.Event{
		Kind:    kindOf[r.Kind],
		Time:    d.wall(r.TsNs),
		Cookie:  r.Cookie,
		Inode:   r.Inode,
		NetNS:   r.Netns,
		Local:   addrPort(r.Family, &r.Saddr, r.Sport),
		Remote:  addrPort(r.Family, &r.Daddr, r.Dport),
		Old:     tcp.State(r.Oldstate),
		New:     tcp.State(r.Newstate),
		Running: tcp.Task{PID: r.Pid, TID: r.Tid, Comm: d.comms.name(r.Comm)},
		Source:  tcp.SourceKernel,
		Flags:   r.Flags,
		Errno:   r.SkErr,
		FD:      r.Fd,
		Origin:  tcp.Origin{StackID: r.Origin.StackId, Leaf: r.Origin.Leaf, PID: r.Pid},
		Owner:   tcp.Owner{FD: -1},
	}
	if ev.Kind == tcp.KindTransition && ev.New == tcp.StateClose {
		l := &r.Life
		ev.Totals = tcp.Totals{Read: true, BytesAcked: l.BytesAcked, BytesReceived: l.BytesReceived,
			SegsOut: l.SegsOut, SegsIn: l.SegsIn, Retransmits: l.TotalRetrans,
			SRTT: time.Duration(l.SrttUs) * time.Microsecond, RTTVar: time.Duration(l.RttvarUs) * time.Microsecond,
			MinRTT: time.Duration(l.MinRttUs) * time.Microsecond}
	}
	if ev.Kind == KindTimeWaitExpired {
		ev.New = tcp.State(r.TwSubstate) // TIME_WAIT, or an orphan's FIN_WAIT2
		ev.TimeWaitLeft = time.Duration(int64(int32(r.TwLeft)) * d.nsPerJiffy)
	}
	if r.Owner.Source != 0 {
		ev.Owner = tcp.Owner{
			PID:       r.Owner.Pid,
			Comm:      d.comms.name(r.Owner.Comm),
			FD:        r.Owner.Fd,
			Via:       tcp.OwnerSource(r.Owner.Source),
			Closed:    r.Flags&uint8(tcptraceEventFlagFLAG_OWNER_CLOSED) != 0,
			Cgroup:    r.Owner.Cgroup,
			Container: d.containerOf(r.Owner.Cgroup, r.Owner.Pid),
		}
	}
	switch ev.Kind {
	case tcp.KindReset:
		ev.ResetSent = r.Flags&uint8(tcptraceEventFlagFLAG_RESET_SENT) != 0
		if ev.ResetSent {
			ev.ResetReason = d.resetReasons[r.Reason]
		}
	case tcp.KindHalfOpen:
		ev.SynAcks = r.Synacks
		if r.SinceNs != 0 {
			ev.FirstSynAck = d.wall(r.SinceNs)
		}
	case tcp.KindBindFail, tcp.KindConnectFail:
		if ev.Kind == tcp.KindConnectFail {
			ev.PortRange = [2]uint16{uint16(r.Reason), uint16(r.Reason >> 16)}
		}
		ev.ReuseAddr = r.Flags&uint8(tcptraceEventFlagFLAG_REUSEADDR) != 0
		ev.Owner = tcp.Owner{PID: r.Owner.Pid, Comm: d.comms.name(r.Owner.Comm), FD: r.Owner.Fd,
			Cgroup: r.Owner.Cgroup, Container: d.containerOf(r.Owner.Cgroup, r.Owner.Pid)}
	}
	return true
}

// TimeWait tells what the state program found when a connection closed
// from FIN_WAIT2 or CLOSING (ev, decoded from raw): whether a timewait
// socket took its place, in which substate, and when its timer is due.
func (d *Decoder) TimeWait(raw []byte, ev *tcp.Event) (seen bool, substate tcp.State, expiry time.Time) {
	r := (*tcptraceEvent)(unsafe.Pointer(&raw[0]))
	if r.Flags&uint8(tcptraceEventFlagFLAG_TIME_WAIT) == 0 {
		return false, 0, time.Time{}
	}
	return true, tcp.State(r.TwSubstate), ev.Time.Add(time.Duration(int64(int32(r.TwLeft)) * d.nsPerJiffy))
}

// ResetReasons names the kernel's reset reasons from its BTF; a kernel
// without them gives an empty map.
func ResetReasons() map[uint32]string {
	names := map[uint32]string{}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return names
	}
	var e *btf.Enum
	if err := spec.TypeByName("sk_rst_reason", &e); err != nil {
		return names
	}
	for _, v := range e.Values {
		names[uint32(v.Value)] = strings.TrimPrefix(v.Name, "SK_RST_REASON_")
	}
	return names
}
