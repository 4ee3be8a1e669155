// Package symbolize turns user addresses of live processes into functions,
// files and lines, from their binaries' symbol tables: Go's pclntab, ELF
// symbols, DWARF lines. It reads /proc and the binaries; nothing else.
package symbolize

import (
	"bufio"
	"debug/dwarf"
	"debug/elf"
	"debug/gosym"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/tcptrace/tcptrace/tcp"
)

// Symbolizer turns user addresses of live processes into functions and lines,
// from the symbol tables of the binaries: Go's pclntab, ELF symbols, DWARF lines.
type Symbolizer struct {
	binaries map[string]*binary // by path as the process sees it, with its inode
}

func New() *Symbolizer { return &Symbolizer{binaries: make(map[string]*binary)} }

type mapping struct {
	start, end, offset uint64
	inode              uint64
	path               string
}

// readMaps lists the executable mappings of a process: files, and the
// anonymous ones (JIT code, the vdso) that no symbol table covers. By hand,
// not through prometheus/procfs: this package builds on every OS, and
// procfs's maps reader does not build on Windows.
func readMaps(pid uint32) ([]mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode [path]
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || !strings.Contains(fields[1], "x") {
			continue
		}
		bounds := strings.SplitN(fields[0], "-", 2)
		if len(bounds) != 2 {
			continue
		}
		start, _ := strconv.ParseUint(bounds[0], 16, 64)
		end, _ := strconv.ParseUint(bounds[1], 16, 64)
		off, _ := strconv.ParseUint(fields[2], 16, 64)
		inode, _ := strconv.ParseUint(fields[4], 10, 64)
		m := mapping{start: start, end: end, offset: off, inode: inode}
		if len(fields) >= 6 {
			m.path = fields[5]
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// userTop bounds the user half of x86-64's address space: an address at or
// above it is no return address of a user stack.
const userTop = 1 << 47

// Frames symbolizes a stack of process pid: addrs[0] is where it was, the
// rest are return addresses. The stack ends at the first address that
// cannot be one (zero, not a user address, or outside every executable
// mapping of a process still there): a frame-pointer walk that ran past
// the stack's last frame reads junk. A process that is gone gives bare
// addresses.
func (s *Symbolizer) Frames(pid uint32, addrs []uint64) []tcp.Frame {
	maps, _ := readMaps(pid)
	frames := make([]tcp.Frame, 0, len(addrs))
	for i, addr := range addrs {
		m := mappingOf(maps, addr)
		if addr == 0 || addr >= userTop || len(maps) > 0 && m == nil {
			break
		}
		f := tcp.Frame{Addr: addr}
		lookup := addr
		if i > 0 {
			lookup-- // a return address: the call is the instruction before it
		}
		if m != nil && strings.HasPrefix(m.path, "/") {
			f.Module = m.path
			if b := s.binary(pid, *m); b != nil {
				b.symbolize(lookup-m.start+m.offset, &f)
			}
		}
		frames = append(frames, f)
	}
	return frames
}

func mappingOf(maps []mapping, addr uint64) *mapping {
	for i := range maps {
		if addr >= maps[i].start && addr < maps[i].end {
			return &maps[i]
		}
	}
	return nil
}

func (s *Symbolizer) binary(pid uint32, m mapping) *binary {
	key := m.path + "\x00" + strconv.FormatUint(m.inode, 10)
	if b, ok := s.binaries[key]; ok {
		return b
	}
	// Through the process's root, so that binaries in containers are found.
	b, err := openBinary(fmt.Sprintf("/proc/%d/root%s", pid, m.path))
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, fs.ErrNotExist) {
		// This process's binary was out of reach (another user's, or it
		// exited): another process running the same one may do better.
		return nil
	}
	if err != nil {
		b = nil
	}
	s.binaries[key] = b
	return b
}

// binary holds what symbolizing needs from one ELF file.
type binary struct {
	loads []elf.ProgHeader
	gosym *gosym.Table
	syms  []elf.Symbol // functions, by address
	dwarf *dwarf.Data
}

func openBinary(path string) (*binary, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := &binary{}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			b.loads = append(b.loads, p.ProgHeader)
		}
	}
	if sec := f.Section(".gopclntab"); sec != nil {
		if data, err := sec.Data(); err == nil {
			if text := f.Section(".text"); text != nil {
				b.gosym, _ = gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
			}
		}
	}
	if b.gosym == nil {
		syms, _ := f.Symbols()
		if len(syms) == 0 {
			syms, _ = f.DynamicSymbols()
		}
		for _, sym := range syms {
			if elf.ST_TYPE(sym.Info) == elf.STT_FUNC && sym.Value != 0 {
				b.syms = append(b.syms, sym)
			}
		}
		sort.Slice(b.syms, func(i, j int) bool { return b.syms[i].Value < b.syms[j].Value })
		b.dwarf, _ = f.DWARF()
	}
	return b, nil
}

// symbolize fills frame from the address at file offset off.
func (b *binary) symbolize(off uint64, frame *tcp.Frame) {
	var vaddr uint64
	found := false
	for _, p := range b.loads {
		if off >= p.Off && off < p.Off+p.Filesz {
			vaddr, found = off-p.Off+p.Vaddr, true
			break
		}
	}
	if !found {
		return
	}
	if b.gosym != nil {
		file, line, fn := b.gosym.PCToLine(vaddr)
		if fn != nil {
			frame.Func, frame.File, frame.Line = fn.Name, file, line
		}
		return
	}
	i := sort.Search(len(b.syms), func(i int) bool { return b.syms[i].Value > vaddr }) - 1
	if i < 0 || (b.syms[i].Size > 0 && vaddr >= b.syms[i].Value+b.syms[i].Size) {
		return
	}
	frame.Func = b.syms[i].Name
	if b.dwarf != nil {
		frame.File, frame.Line = dwarfLine(b.dwarf, vaddr)
	}
}

func dwarfLine(d *dwarf.Data, pc uint64) (string, int) {
	r := d.Reader()
	for {
		cu, err := r.Next()
		if err != nil || cu == nil {
			return "", 0
		}
		if cu.Tag != dwarf.TagCompileUnit {
			r.SkipChildren()
			continue
		}
		ranges, err := d.Ranges(cu)
		r.SkipChildren()
		if err != nil {
			continue
		}
		for _, rg := range ranges {
			if pc < rg[0] || pc >= rg[1] {
				continue
			}
			lr, err := d.LineReader(cu)
			if err != nil || lr == nil {
				return "", 0
			}
			var e dwarf.LineEntry
			if err := lr.SeekPC(pc, &e); err != nil {
				return "", 0
			}
			return e.File.Name, e.Line
		}
	}
}
