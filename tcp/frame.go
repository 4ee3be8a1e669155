package tcp

import (
	"fmt"
)

// Frame is one address of a user stack, symbolized.
type Frame struct {
	Addr   uint64 `json:"addr"`
	Func   string `json:"func,omitempty"` // empty when the binary gives no symbols
	File   string `json:"file,omitempty"`
	Line   int    `json:"line,omitempty"`
	Module string `json:"module,omitempty"` // the binary or library mapped there
}

func (f Frame) String() string {
	switch {
	case f.Func == "" && f.Module == "":
		return fmt.Sprintf("%#x", f.Addr)
	case f.Func == "":
		return fmt.Sprintf("%#x in %s (no symbols)", f.Addr, f.Module)
	case f.File == "":
		return f.Func
	}
	return fmt.Sprintf("%s (%s:%d)", f.Func, f.File, f.Line)
}
