package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
)

// sendSYN sends one TCP SYN from from to to (IPv4), its IP header written
// here so that its source may be an address no socket has.
func sendSYN(to, from string) error {
	dst, err := netip.ParseAddrPort(to)
	if err != nil {
		return err
	}
	src, err := netip.ParseAddrPort(from)
	if err != nil {
		return err
	}
	if !dst.Addr().Is4() || !src.Addr().Is4() {
		return fmt.Errorf("syn: IPv4 addresses only")
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(fd)
	packet := synPacket(src, dst)
	if err := syscall.Sendto(fd, packet, 0, &syscall.SockaddrInet4{Addr: dst.Addr().As4()}); err != nil {
		return fmt.Errorf("send SYN: %w", err)
	}
	fmt.Println("sent")
	return nil
}

// synPacket is an IPv4 header and a 20-byte TCP header with SYN set.
func synPacket(src, dst netip.AddrPort) []byte {
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
	binary.BigEndian.PutUint32(tcp[4:], 1000) // sequence number
	tcp[12] = 5 << 4                          // 5 words of header
	tcp[13] = 0x02                            // SYN
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
