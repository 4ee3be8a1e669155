package host

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"strings"
)

// KernelConfig reads the running kernel's build configuration, from
// /boot/config-RELEASE or else /proc/config.gz, and says which it read; nil
// when neither is there.
//
// Not a __kconfig extern in BPF: cilium/ebpf fails the whole load when it
// finds no config file (it has no __weak externs), and in containers /boot
// is seldom mounted, where tcptrace must still run (CONFIG_HZ then defaults
// to 250). Its parser is internal to cilium/ebpf; procfs has none.
func KernelConfig(release string) (map[string]string, string) {
	for _, path := range []string{"/boot/config-" + release, "/proc/config.gz"} {
		if config := readConfigFile(path); len(config) > 0 {
			return config, path
		}
	}
	return nil, ""
}

func readConfigFile(path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil
		}
		r = gz
	}
	return parseKernelConfig(r)
}

// parseKernelConfig reads a kernel configuration (the .config format):
// "CONFIG_X=value", with quotes around strings, and "# CONFIG_X is not set",
// which maps to "".
func parseKernelConfig(r io.Reader) map[string]string {
	config := make(map[string]string)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, "# "); ok {
			if name, ok := strings.CutSuffix(name, " is not set"); ok {
				config[name] = ""
			}
			continue
		}
		if name, value, ok := strings.Cut(line, "="); ok {
			config[name] = strings.Trim(value, `"`)
		}
	}
	return config
}
