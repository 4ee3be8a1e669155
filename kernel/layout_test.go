//go:build linux

package kernel

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
	"github.com/tcptrace/tcptrace/tcp"
)

// goFieldName is bpf2go's name for a C member: snake_case to CamelCase.
func goFieldName(c string) string {
	var b strings.Builder
	for _, part := range strings.Split(c, "_") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// TestWireLayout checks that the Go structs the decoder reads match the C
// structs in the compiled BPF object, member by member.
func TestWireLayout(t *testing.T) {
	spec, err := loadTcptrace()
	if err != nil {
		t.Fatal(err)
	}
	for name, goType := range map[string]reflect.Type{
		"event":        reflect.TypeOf(tcptraceEvent{}),
		"owner":        reflect.TypeOf(tcptraceOwner{}),
		"sock_record":  reflect.TypeOf(tcptraceSockRecord{}),
		"file_record":  reflect.TypeOf(tcptraceFileRecord{}),
		"listener_key": reflect.TypeOf(tcptraceListenerKey{}),
		"listen_owner": reflect.TypeOf(tcptraceListenOwner{}),
	} {
		var st *btf.Struct
		if err := spec.Types.TypeByName(name, &st); err != nil {
			t.Fatalf("struct %s: %v", name, err)
		}
		if uintptr(st.Size) != goType.Size() {
			t.Errorf("struct %s: C size %d, Go size %d", name, st.Size, goType.Size())
		}
		for _, m := range st.Members {
			f, ok := goType.FieldByName(goFieldName(m.Name))
			if !ok {
				t.Errorf("struct %s: Go has no field for %s", name, m.Name)
				continue
			}
			if uintptr(m.Offset.Bytes()) != f.Offset {
				t.Errorf("struct %s.%s: C offset %d, Go offset %d", name, m.Name, m.Offset.Bytes(), f.Offset)
			}
		}
	}
}

// TestOwnerSources: the C enum of how an owner was learned and tcp's agree.
func TestOwnerSources(t *testing.T) {
	for c, gov := range map[tcptraceOwnerSource]tcp.OwnerSource{
		tcptraceOwnerSourceOWNER_UNKNOWN: tcp.OwnerUnknown, tcptraceOwnerSourceOWNER_CONNECT: tcp.OwnerConnect,
		tcptraceOwnerSourceOWNER_ACCEPT: tcp.OwnerAccept, tcptraceOwnerSourceOWNER_LISTEN: tcp.OwnerListen,
		tcptraceOwnerSourceOWNER_LISTENER: tcp.OwnerListener, tcptraceOwnerSourceOWNER_SEED: tcp.OwnerSeed,
		tcptraceOwnerSourceOWNER_CLOSE: tcp.OwnerClose,
	} {
		if uint8(c) != uint8(gov) {
			t.Errorf("%v is %d in C, %d in Go", gov, c, gov)
		}
	}
}
