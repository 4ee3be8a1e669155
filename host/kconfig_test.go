package host

import (
	"strings"
	"testing"
)

func TestParseKernelConfig(t *testing.T) {
	config := parseKernelConfig(strings.NewReader(`#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_HZ_250=y
CONFIG_HZ=250
CONFIG_LOCALVERSION=""
CONFIG_DEFAULT_HOSTNAME="(none)"
# CONFIG_KPROBES is not set
`))
	for name, want := range map[string]string{
		"CONFIG_HZ": "250", "CONFIG_HZ_250": "y", "CONFIG_LOCALVERSION": "",
		"CONFIG_DEFAULT_HOSTNAME": "(none)", "CONFIG_KPROBES": "",
	} {
		if got, ok := config[name]; !ok || got != want {
			t.Errorf("%s = %q (present %v), want %q", name, got, ok, want)
		}
	}
	if _, ok := config["CONFIG_FTRACE"]; ok || len(config) != 5 {
		t.Errorf("config %v: want exactly the five options given", config)
	}
}
