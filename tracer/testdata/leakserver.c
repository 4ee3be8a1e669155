/*
 * A C server that leaks: it accepts connections and never closes them.
 * It prints "listening ADDR" and "accepted FD LOCAL REMOTE" like testpeer.
 * Built by the tests with frame pointers and debug information.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static void print_addr(const struct sockaddr_in *a)
{
	char ip[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
	printf("%s:%d", ip, ntohs(a->sin_port));
}

/* The accepting function the tests expect tcptrace to name. */
static void accept_connections(int listener)
{
	for (;;) {
		struct sockaddr_in local, remote;
		socklen_t len = sizeof(remote);
		int fd = accept(listener, (struct sockaddr *)&remote, &len);

		if (fd < 0)
			exit(1);
		len = sizeof(local);
		getsockname(fd, (struct sockaddr *)&local, &len);
		printf("accepted %d ", fd);
		print_addr(&local);
		printf(" ");
		print_addr(&remote);
		printf("\n");
		fflush(stdout);
	}
}

int main(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	int listener = socket(AF_INET, SOCK_STREAM, 0);

	if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof(addr)) ||
	    listen(listener, 128) || getsockname(listener, (struct sockaddr *)&addr, &len))
		return 1;
	printf("listening ");
	print_addr(&addr);
	printf("\n");
	fflush(stdout);
	accept_connections(listener);
	return 0;
}
