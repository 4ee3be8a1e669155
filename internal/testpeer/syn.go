package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// TCP header flags.
const (
	tcpRST = 0x04
	tcpSYN = 0x02
	tcpACK = 0x10
)

// sendSegmentSpec sends the segment "FROM,SEQ,rst|ack" describes to to.
func sendSegmentSpec(to, spec string) error {
	f := strings.Split(spec, ",")
	if len(f) != 3 {
		return fmt.Errorf("segment: want FROM,SEQ,rst|ack, got %q", spec)
	}
	seq, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return fmt.Errorf("segment: sequence number: %w", err)
	}
	flags := map[string]byte{"rst": tcpRST, "ack": tcpACK}[f[2]]
	if flags == 0 {
		return fmt.Errorf("segment: flag %q is not rst or ack", f[2])
	}
	return sendSegment(to, f[0], uint32(seq), flags)
}

// sendSegment sends one bare TCP segment from from to to (IPv4), its IP
// header written here so that its source may be any address: one no socket
// has (a SYN whose handshake stays half open), or a closed socket's (a RST
// or an ACK to its peer's timewait socket).
func sendSegment(to, from string, seq uint32, flags byte) error {
	dst, err := netip.ParseAddrPort(to)
	if err != nil {
		return err
	}
	src, err := netip.ParseAddrPort(from)
	if err != nil {
		return err
	}
	if !dst.Addr().Is4() || !src.Addr().Is4() {
		return fmt.Errorf("IPv4 addresses only")
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(fd)
	packet := segment(src, dst, seq, flags)
	if err := syscall.Sendto(fd, packet, 0, &syscall.SockaddrInet4{Addr: dst.Addr().As4()}); err != nil {
		return fmt.Errorf("send segment: %w", err)
	}
	fmt.Println("sent")
	return nil
}

// segment is an IPv4 header and a 20-byte TCP header with flags set.
func segment(src, dst netip.AddrPort, seq uint32, flags byte) []byte {
	p := make([]byte, 40)
	p[0] = 0x45 // version 4, 5 words of header
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64 // TTL
	p[9] = syscall.IPPROTO_TCP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[10:], checksum(p[:20], 0))
	tcp := p[20:]
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 5 << 4 // 5 words of header
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	// The TCP checksum covers a pseudo-header: addresses, protocol, length.
	pseudo := uint32(binary.BigEndian.Uint16(s[:2])) + uint32(binary.BigEndian.Uint16(s[2:])) +
		uint32(binary.BigEndian.Uint16(d[:2])) + uint32(binary.BigEndian.Uint16(d[2:])) +
		syscall.IPPROTO_TCP + uint32(len(tcp))
	binary.BigEndian.PutUint16(tcp[16:], checksum(tcp, pseudo))
	return p
}

// checksum is the Internet checksum of b, starting from sum.
func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// rcvNext reads the next sequence number a connection expects from its
// peer: in TCP_REPAIR mode, from its receive queue. The kernel allows it in
// ESTABLISHED and in CLOSE, where a socket whose timewait socket took its
// place still holds the number that timewait socket expects.
func rcvNext(fd int) (uint32, error) {
	const (
		tcpRepair                 = 19
		tcpRepairQueue            = 20
		tcpQueueSeq               = 21
		tcpRecvQueue              = 1
		tcpRepairOffNoWindowProbe = -1
	)
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, tcpRepair, 1); err != nil {
		return 0, fmt.Errorf("TCP_REPAIR: %w", err)
	}
	defer syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, tcpRepair, tcpRepairOffNoWindowProbe)
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, tcpRepairQueue, tcpRecvQueue); err != nil {
		return 0, fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
	}
	seq, err := syscall.GetsockoptInt(fd, syscall.IPPROTO_TCP, tcpQueueSeq)
	if err != nil {
		return 0, fmt.Errorf("TCP_QUEUE_SEQ: %w", err)
	}
	return uint32(seq), nil
}
