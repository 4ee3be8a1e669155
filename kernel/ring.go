//go:build linux

package kernel

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// Record is one record read from the ring buffer; its RawSample is reused
// by the next read.
type Record = ringbuf.Record

// Next reads the next record of the ring buffer into rec without blocking:
// false when there is none now, or when the buffer was closed.
func (k *Kernel) Next(rec *Record) (bool, error) {
	err := k.rd.ReadInto(rec)
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ringbuf.ErrClosed) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read ring buffer: %w", err)
	}
	return true, nil
}

// Pending reports whether records wait in the ring buffer.
func (k *Kernel) Pending() bool { return k.rd.AvailableBytes() > 0 }

// Counters are what the kernel programs counted, and what the kernel
// counted of them.
type Counters struct {
	RingbufDrops   uint64 // records lost to a full ring buffer
	OwnerMapFull   uint64 // sockets whose owner found no room
	OriginsSkipped uint64 // user stacks not taken past Options.OriginRate
	// PassedFDsUnexamined are fds passed over unix sockets whose new
	// holder was not followed (past the first 16 of a message).
	PassedFDsUnexamined uint64
	// StateMisses and SyscallMisses are runs the kernel skipped (recursion
	// misses) of the state program and of all the others.
	StateMisses   uint64
	SyscallMisses uint64
	// TableWalks counts walks of the socket table; NetNSUnfollowed, the
	// network namespaces that could not be entered.
	TableWalks      uint64
	NetNSUnfollowed uint64
}

// ReadCounters sums the programs' per-CPU counters and reads the kernel's
// run statistics of each program.
func (k *Kernel) ReadCounters() (Counters, error) {
	var c Counters
	var perCPU []uint64
	for idx, dst := range map[uint32]*uint64{
		uint32(tcptraceCounterCOUNTER_RINGBUF_DROPS):         &c.RingbufDrops,
		uint32(tcptraceCounterCOUNTER_OWNER_MAP_FULL):        &c.OwnerMapFull,
		uint32(tcptraceCounterCOUNTER_ORIGINS_SKIPPED):       &c.OriginsSkipped,
		uint32(tcptraceCounterCOUNTER_PASSED_FDS_UNEXAMINED): &c.PassedFDsUnexamined,
	} {
		if err := k.objs.Counters.Lookup(idx, &perCPU); err != nil {
			return Counters{}, fmt.Errorf("read counters: %w", err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	st, err := k.objs.HandleSetState.Stats()
	if err != nil {
		return Counters{}, fmt.Errorf("read program stats: %w", err)
	}
	c.OwnerMapFull += k.ownersNotTaught
	c.TableWalks, c.NetNSUnfollowed = k.tableWalks, k.netnsUnfollowed
	c.StateMisses = st.RecursionMisses
	for _, p := range k.otherPrograms() {
		st, err := p.Stats()
		if err != nil {
			return Counters{}, fmt.Errorf("read program stats: %w", err)
		}
		c.SyscallMisses += st.RecursionMisses
	}
	return c, nil
}

// otherPrograms are every program that runs on events but the state program.
func (k *Kernel) otherPrograms() []*ebpf.Program {
	o := &k.objs
	return []*ebpf.Program{o.HandleConnect, o.HandleConnectExit, o.HandleListen, o.HandleAccept, o.HandleAccept4, o.HandleClose,
		o.HandleBindEnter, o.HandleBindExit, o.HandleSendReset, o.HandleReceiveReset, o.HandleTimerExpire, o.HandleTimerCancel,
		o.HandleExit, o.HandleNewTask, o.HandleExec, o.HandleDup, o.HandleDup2Enter, o.HandleDup2,
		o.HandleDup3Enter, o.HandleDup3, o.HandleFcntlEnter, o.HandleFcntl, o.HandlePidfdGetfd,
		o.HandleRecvmsgEnter, o.HandleRecvmsg}
}

// Stack is the user stack recorded under id (from tcp.Origin.StackID),
// innermost first, ending at the first zero.
func (k *Kernel) Stack(id int32) ([]uint64, error) {
	var stack [127]uint64
	if err := k.objs.Stacks.Lookup(uint32(id), &stack); err != nil {
		return nil, err
	}
	n := 0
	for n < len(stack) && stack[n] != 0 {
		n++
	}
	return stack[:n], nil
}
