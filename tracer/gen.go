// Package tracer is the live session on a Linux kernel: it loads and attaches
// tcptrace's BPF programs, reads their ring buffer, walks the kernel's socket
// and fd tables, and feeds what it learns to a timeline. It also holds the
// doctor's checks of a host.
package tracer

//go:generate go tool bpf2go -tags linux -target amd64 -type event -type sock_record -type file_record -type owner -type event_kind -type owner_source -type event_flag -type counter tcptrace ../bpf/tcptrace.bpf.c -- -I../headers -Wall -Werror
