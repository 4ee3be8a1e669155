package tracer

//go:generate go tool bpf2go -tags linux -target amd64 -type event -type sock_record -type file_record -type owner -type event_kind -type owner_source -type event_flag -type counter tcptrace ../bpf/tcptrace.bpf.c -- -I../headers -Wall -Werror
