package timeline

import (
	"net/netip"
	"testing"

	"github.com/tcptrace/tcptrace/tcp"
)

func TestParsePort(t *testing.T) {
	for _, bad := range []string{"0", "70000", "-1", "http", "80x", ""} {
		if _, err := ParsePort(bad); err == nil {
			t.Errorf("ParsePort(%q) accepted", bad)
		}
	}
	if p, err := ParsePort("8080"); err != nil || p != 8080 {
		t.Errorf("ParsePort(8080) = %d, %v", p, err)
	}
}

func TestParseState(t *testing.T) {
	for in, want := range map[string]tcp.State{"CLOSE_WAIT": tcp.StateCloseWait, "close-wait": tcp.StateCloseWait, "time_wait": tcp.StateTimeWait, "ESTABLISHED": tcp.StateEstablished} {
		if got, err := tcp.ParseState(in); err != nil || got != want {
			t.Errorf("ParseState(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"FOO", "", "UNKNOWN"} {
		if _, err := tcp.ParseState(bad); err == nil {
			t.Errorf("ParseState(%q) accepted", bad)
		}
	}
}

func TestFilterMatch(t *testing.T) {
	v4 := tcp.Event{
		Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort("127.0.0.2:40000"),
		Old: tcp.StateEstablished, New: tcp.StateCloseWait, Owner: tcp.Owner{PID: 42, Comm: "server", Via: tcp.OwnerAccept},
	}
	mapped := v4
	mapped.Local = netip.MustParseAddrPort("[::ffff:127.0.0.1]:8080")
	mapped.Remote = netip.MustParseAddrPort("[::ffff:127.0.0.2]:40000")
	addr, _ := ParsePrefix("127.0.0.0/30")
	host, _ := ParsePrefix("127.0.0.2")
	for _, tc := range []struct {
		name string
		f    Filter
		ev   *tcp.Event
		want bool
	}{
		{"empty", Filter{}, &v4, true},
		{"pid", Filter{PIDs: []uint32{7, 42}}, &v4, true},
		{"other pid", Filter{PIDs: []uint32{7}}, &v4, false},
		{"comm", Filter{Comm: "server"}, &v4, true},
		{"other comm", Filter{Comm: "client"}, &v4, false},
		{"port either end", Filter{Port: 40000}, &v4, true},
		{"lport", Filter{LPort: 8080}, &v4, true},
		{"lport is not rport", Filter{LPort: 40000}, &v4, false},
		{"rport", Filter{RPort: 40000}, &v4, true},
		{"prefix", Filter{Addr: addr}, &v4, true},
		{"host remote", Filter{Addr: host}, &v4, true},
		{"host on mapped v6", Filter{Addr: host}, &mapped, true},
		{"family 4", Filter{Family: 4}, &v4, true},
		{"family 6", Filter{Family: 6}, &v4, false},
		{"mapped is a v6 socket", Filter{Family: 6}, &mapped, true},
		{"new state", Filter{States: []tcp.State{tcp.StateCloseWait}}, &v4, true},
		{"old state", Filter{States: []tcp.State{tcp.StateEstablished}}, &v4, true},
		{"other state", Filter{States: []tcp.State{tcp.StateTimeWait}}, &v4, false},
	} {
		if got := tc.f.Match(tc.ev); got != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestFilterPlace(t *testing.T) {
	ev := &tcp.Event{NetNS: 4026531840, Owner: tcp.Owner{PID: 1, Cgroup: 77, Container: "abcdef0123"}}
	for _, tc := range []struct {
		f    Filter
		want bool
	}{
		{Filter{NetNS: 4026531840}, true},
		{Filter{NetNS: 4026532000}, false},
		{Filter{Cgroups: map[uint64]bool{77: true}}, true},
		{Filter{Cgroups: map[uint64]bool{78: true}}, false},
		{Filter{Container: "abcdef"}, true},
		{Filter{Container: "abcdee"}, false},
	} {
		if got := tc.f.Match(ev); got != tc.want {
			t.Errorf("%+v.Match = %v, want %v", tc.f, got, tc.want)
		}
		s := &tcp.Socket{NetNS: ev.NetNS, Holders: []tcp.Owner{ev.Owner}}
		if got := tc.f.MatchSocket(s); got != tc.want {
			t.Errorf("%+v.MatchSocket = %v, want %v", tc.f, got, tc.want)
		}
	}
}
