package tracer

import "testing"

func TestContainerID(t *testing.T) {
	const id = "8f3e2d1c0b9a8f7e6d5c4b3a2918f7e6d5c4b3a2918f7e6d5c4b3a2918f7e6d5"
	for path, want := range map[string]string{
		"/docker/" + id:                         id,
		"/system.slice/docker-" + id + ".scope": id,
		"/kubepods/burstable/pod0d3c1f0e-1111-2222-3333-444455556666/" + id:                                        id,
		"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-" + id + ".scope": id,
		"/machine.slice/libpod-" + id + ".scope/container":                                                         id,
		"/crio-" + id + ".scope":                      id,
		"/user.slice/user-1000.slice/session-2.scope": "",
		"/":                        "",
		"/docker/" + id[:63]:       "",
		"/docker/" + id[:63] + "g": "",
	} {
		if got := ContainerID(path); got != want {
			t.Errorf("ContainerID(%q) = %q, want %q", path, got, want)
		}
	}
	if got := ShortContainerID(id); got != id[:12] {
		t.Errorf("ShortContainerID = %q", got)
	}
}

func TestFilterPlace(t *testing.T) {
	ev := &Event{NetNS: 4026531840, Owner: Owner{PID: 1, Cgroup: 77, Container: "abcdef0123"}}
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
		s := &SocketSnapshot{NetNS: ev.NetNS, Holders: []Owner{ev.Owner}}
		if got := tc.f.MatchSocket(s); got != tc.want {
			t.Errorf("%+v.MatchSocket = %v, want %v", tc.f, got, tc.want)
		}
	}
}
