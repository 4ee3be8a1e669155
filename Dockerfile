# syntax=docker/dockerfile:1
#
# The tcptrace image: `docker build -t tcptrace:dev .` at the top of the repository
# (add --platform linux/amd64 on an arm64 machine). The compiled BPF objects are committed
# (kernel/tcptrace_x86_bpfel.o), so the build needs Go only: no clang, no kernel headers.
# They are x86_64 objects, so the image is linux/amd64 only.
#
# It must run in the host's PID and network namespaces (tcptrace walks the sockets of the
# network namespace it runs in and names processes by their host PID), with the host's
# tracefs and the capabilities that README.md's "Deploying" section explains:
#   docker run --rm --pid=host --network=host --cap-drop=ALL \
#     --cap-add=BPF --cap-add=PERFMON --cap-add=SYS_PTRACE --cap-add=DAC_READ_SEARCH \
#     -v /sys/kernel/tracing:/sys/kernel/tracing:ro tcptrace:dev
# which serves metrics at http://127.0.0.1:9669/metrics on the host.

# The compiler runs natively and cross-compiles: CGO_ENABLED=0 needs no target toolchain.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETARCH
RUN test "$TARGETARCH" = amd64 || { echo "tcptrace's committed BPF objects are x86_64 only; build with --platform linux/amd64" >&2; exit 1; }
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/tcptrace ./cmd/tcptrace

# distroless/static: no shell, no package manager; CA certificates, tzdata and /etc/passwd.
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/tcptrace /usr/local/bin/tcptrace
# uid 0, holding only the capabilities the runtime grants. A non-root user would hold none
# of them: container runtimes set no ambient capabilities, and execve(2) of a file without
# file capabilities leaves a non-root process with empty permitted and effective sets.
USER 0:0
EXPOSE 9669
ENTRYPOINT ["/usr/local/bin/tcptrace"]
# The daemon mode: Prometheus metrics, on 127.0.0.1:9669 unless --metrics-addr says otherwise.
CMD ["serve"]
