// Package kernel is tcptrace's side of the BPF boundary: the programs
// bpf2go compiled from bpf/, their loading and attaching (with the
// fallbacks older kernels need), the ring buffer they report through, the
// iterators that walk the kernel's socket and fd tables, their counters,
// and a Decoder that turns ring records into tcp.Events. It keeps no
// timeline: the tracer package makes a session of it.
package kernel

//go:generate go tool bpf2go -tags linux -target amd64 -type event -type sock_record -type file_record -type owner -type event_kind -type owner_source -type event_flag -type counter tcptrace ../bpf/tcptrace.bpf.c -- -I../headers -Wall -Werror
