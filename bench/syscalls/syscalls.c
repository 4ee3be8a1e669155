/*
 * The cost tcptrace's syscall tracepoints add to the syscalls they watch
 * beyond TCP: ns per call, best of 3 runs of a bounded loop. Run it with
 * and without tcptrace attached (BENCHMARKS.md, "Syscalls outside TCP").
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CALLS = 200000, RUNS = 3 };

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

static int unix_pair[2], udp;
static struct sockaddr_in udp_addr;

static void fcntl_getfl(void)
{
	fcntl(unix_pair[0], F_GETFL);
}

static void recv_one(int fd, int room)
{
	char byte, control[64];
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

	if (room) {
		m.msg_control = control;
		m.msg_controllen = sizeof(control);
	}
	recvmsg(fd, &m, 0);
}

static void unix_recvmsg(void)
{
	char byte = 0;

	if (write(unix_pair[1], &byte, 1) == 1)
		recv_one(unix_pair[0], 1);
}

static void udp_recvmsg(void)
{
	char byte = 0;

	sendto(udp, &byte, 1, 0, (struct sockaddr *)&udp_addr, sizeof(udp_addr));
	recv_one(udp, 1);
}

static void dup_close(void)
{
	close(dup(unix_pair[0]));
}

static void measure(const char *name, void (*fn)(void))
{
	double best = 0;

	for (int r = 0; r < RUNS; r++) {
		double start = now_ns();
		for (int i = 0; i < CALLS; i++)
			fn();
		double ns = (now_ns() - start) / CALLS;
		if (r == 0 || ns < best)
			best = ns;
	}
	printf("%-32s %6.0f ns\n", name, best);
}

int main(void)
{
	socklen_t len = sizeof(udp_addr);

	udp_addr.sin_family = AF_INET;
	udp_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	udp = socket(AF_INET, SOCK_DGRAM, 0);
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, unix_pair) || udp < 0 ||
	    bind(udp, (struct sockaddr *)&udp_addr, sizeof(udp_addr)) ||
	    getsockname(udp, (struct sockaddr *)&udp_addr, &len)) {
		perror("setup");
		return 1;
	}
	measure("fcntl(F_GETFL)", fcntl_getfl);
	measure("write + recvmsg (unix, cmsg room)", unix_recvmsg);
	measure("sendto + recvmsg (udp loopback)", udp_recvmsg);
	measure("dup + close", dup_close);
	return 0;
}
