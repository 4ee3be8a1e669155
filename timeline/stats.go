package timeline

// Stats counts what the tracer read, and every event it lost or missed.
type Stats struct {
	Events uint64 // ring-buffer records read
	// RingbufDrops are events lost because the ring buffer was full.
	RingbufDrops uint64
	// RecursionMisses are program runs the kernel skipped because another BPF
	// program was running on the same CPU; for the state program each is a
	// lost transition.
	StateMisses   uint64
	SyscallMisses uint64
	// OwnerMapFull counts sockets whose owner could not be stored in the kernel.
	OwnerMapFull uint64
	// HoldersUnfollowed counts fds of sockets whose holder tcptrace could
	// not follow: passed over a unix socket past the first 16 of a message.
	HoldersUnfollowed uint64
	// Repairs are transitions shown from the socket table after events were missed.
	Repairs uint64
	// TimeWaitWalks and TableWalks count walks of the kernel's socket table.
	TimeWaitWalks uint64
	TableWalks    uint64
	// NetNSUnfollowed counts the network namespaces not followed, past the
	// handles kept or not enterable: their orphans that get the peer's FIN
	// show CLOSE, not TIME_WAIT.
	NetNSUnfollowed uint64
}

// Missed is the number of events the kernel lost or skipped.
func (s Stats) Missed() uint64 { return s.RingbufDrops + s.StateMisses + s.SyscallMisses }
