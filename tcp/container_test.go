package tcp

import (
	"testing"
)

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
