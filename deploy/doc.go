// Package deploy holds no code of its own: its tests check the files that install
// tcptrace on other machines (the Dockerfile, the Kubernetes manifest, the systemd unit
// and the Vagrantfile). It is a module of its own so that the Kubernetes API types and
// the Dockerfile parser stay out of tcptrace's go.mod.
package deploy
