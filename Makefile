# tcptrace build. `make` builds bin/tcptrace from the committed BPF objects (no clang
# needed); `make generate` rebuilds those objects and needs clang, llvm and libbpf-dev.

GO ?= go
BIN := bin/tcptrace

.PHONY: all build generate vmlinux test check-generated lint clean deps bench vmtest soak fuzz

all: build

build:
	$(GO) build -o $(BIN) ./cmd/tcptrace

# Debian packages that `make generate` and the tests need.
deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		clang llvm libbpf-dev bpftool iproute2 clang-format gcc nftables nginx-light \
		qemu-system-x86 busybox-static cpio

generate:
	cd kernel && $(GO) generate ./...

# headers/vmlinux.h comes from the running kernel's BTF.
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > headers/vmlinux.h

# Fails when the committed bpf2go output is not what the sources produce.
check-generated: generate
	git diff --exit-code -- kernel/

# The packages that read traces must build anywhere and never load BPF.
PURE := ./tcp ./timeline ./analysis ./render ./symbolize ./tracefile ./metrics

lint:
	test -z "$$(gofmt -l .)" || (gofmt -l . && exit 1)
	$(GO) vet ./...
	GOOS=darwin $(GO) build $(PURE)
	GOOS=windows $(GO) build $(PURE)
	! $(GO) list -deps $(PURE) | grep -E 'cilium/ebpf|tcptrace/(tracer|kernel|host|doctor)$$'
	cd deploy && $(GO) vet ./...
	clang-format --dry-run --Werror bpf/*.c bpf/*.h tracer/testdata/*.c bench/syscalls/*.c

# BPF tests load the real programs: run as root. TCPTRACE_REQUIRE_BPF=1 turns their
# skip (when not root) into a failure. -parallel 4: the lifecycle tests mostly wait
# out a minute of TIME_WAIT, and the default (GOMAXPROCS, 2 here) ran them in turn.
test:
	TCPTRACE_REQUIRE_BPF=1 $(GO) test -count=1 -parallel 4 -timeout 10m ./...
	cd deploy && $(GO) test -count=1 ./...

# The soak: serve, leaks and record side by side under connection churn for
# SOAK, their memory sampled every second (CI runs the short one).
SOAK ?= 2m
soak:
	TCPTRACE_SOAK=$(SOAK) TCPTRACE_REQUIRE_BPF=1 $(GO) test -count=1 -timeout 0 -run '^TestBPFSoak$$' -v ./cmd/tcptrace

# The fuzz targets, FUZZTIME each: the trace reader (with its memory bound)
# and the JSON encoder.
FUZZTIME ?= 1m
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./tracefile
	$(GO) test -run '^$$' -fuzz '^FuzzJSONLine$$' -fuzztime $(FUZZTIME) ./render

# The kernel matrix: boots Debian's kernels under QEMU and runs the BPF tests and
# the CLI inside (vmtest/run.sh). KERNEL=5.10, 6.1, 6.12 or backports picks one.
KERNEL ?= 5.10 6.1 6.12 backports
vmtest:
	bash vmtest/run.sh $(KERNEL)

# The overhead table of BENCHMARKS.md: the churn load with no tracer, then under
# each tracer (as root; libbpf-tools and bpftrace from Debian are the peers).
bench: build
	$(GO) build -o bin/churn ./bench/churn
	$(GO) build -o bin/harness ./bench/harness
	command -v bpftrace >/dev/null && test -x /usr/sbin/tcpstates || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bpftrace libbpf-tools
	bin/harness -tcptrace bin/tcptrace -churn bin/churn $(BENCHFLAGS)

clean:
	rm -rf bin
