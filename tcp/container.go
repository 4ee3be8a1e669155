package tcp

import (
	"strings"
)

// ContainerID finds the container id a cgroup v2 path names: the last
// component that is, once a runtime's prefix ("docker-", "cri-containerd-",
// "crio-", "libpod-", ...) and ".scope" are taken off, 64 hex digits. Docker
// (/docker/ID, docker-ID.scope), containerd and CRI-O under Kubernetes
// (.../pod.../ID, cri-containerd-ID.scope, crio-ID.scope) and Podman
// (libpod-ID.scope) all name their containers so. "" when none does.
func ContainerID(path string) string {
	parts := strings.Split(path, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		p := strings.TrimSuffix(parts[i], ".scope")
		if j := strings.LastIndexByte(p, '-'); j >= 0 {
			p = p[j+1:]
		}
		if isContainerID(p) {
			return p
		}
	}
	return ""
}

func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ShortContainerID is the 12-digit form container tools show.
func ShortContainerID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
