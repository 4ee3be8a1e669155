//go:build linux

package kernel

import (
	"slices"

	"github.com/cilium/ebpf/btf"
)

// These read the kernel's own BTF rather than probe with
// cilium/ebpf's features package: it cannot probe helpers for tracing
// programs (features.HaveProgramHelper refuses ebpf.Tracing), and a
// struct member such as recursion_misses is not a helper at all.

// HasTaskPtRegs reports whether the kernel has the bpf_task_pt_regs helper (5.15).
func HasTaskPtRegs(spec *btf.Spec) bool {
	return btfHas(spec, "bpf_func_id", "BPF_FUNC_task_pt_regs")
}

// btfHas reports whether the kernel type named typ, a struct or an enum, has a
// member or value named name: features that came with a field or a helper.
func btfHas(spec *btf.Spec, typ, name string) bool {
	types, err := spec.AnyTypesByName(typ)
	if err != nil {
		return false
	}
	for _, t := range types {
		switch t := t.(type) {
		case *btf.Struct:
			if slices.ContainsFunc(t.Members, func(m btf.Member) bool { return m.Name == name }) {
				return true
			}
		case *btf.Enum:
			if slices.ContainsFunc(t.Values, func(v btf.EnumValue) bool { return v.Name == name }) {
				return true
			}
		}
	}
	return false
}

// HasRecursionMisses reports whether bpf_prog_info has recursion_misses
// (Linux 5.12+).
func HasRecursionMisses(spec *btf.Spec) bool {
	return btfHas(spec, "bpf_prog_info", "recursion_misses")
}
