/*
 * Servers that hand their connections on, as real servers do, and never
 * close them: the tests check that tcptrace names the process that holds
 * each one. It prints "listening ADDR", then for each connection "kept PID
 * FD LOCAL REMOTE": the process and fd that hold it once the handing on is
 * done. Modes:
 *   fork    a child per connection keeps it; the parent closes its copy
 *   pass    a helper process is passed each connection (SCM_RIGHTS); the
 *           acceptor closes its copy
 *   dup     the acceptor moves it to another fd (fcntl F_DUPFD) and closes
 *           the first
 *   exec    a child per connection puts it on fd 0 and execs sleep; the
 *           accepted fd is close-on-exec; the parent closes its copy
 *   daemon  listens, then daemonizes (fork, setsid, fork) into a master
 *           with two workers that accept; prints "daemon PGID" first
 * Children die with the server (PR_SET_PDEATHSIG) but in daemon mode,
 * where the test kills the process group.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* Appends " ADDR:PORT" of one end of socket fd to out. */
static void append_addr(char *out, size_t size, int fd, int peer)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	char ip[INET_ADDRSTRLEN];

	if (peer ? getpeername(fd, (struct sockaddr *)&a, &len)
		 : getsockname(fd, (struct sockaddr *)&a, &len))
		die("address");
	inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
	snprintf(out + strlen(out), size - strlen(out), " %s:%d", ip, ntohs(a.sin_port));
}

/*
 * Says who keeps the connection whose ends are ends: printed only once the
 * server closed its own copy, so that the test sees the handing on done.
 */
static void kept(pid_t pid, int fd, const char *ends)
{
	printf("kept %d %d%s\n", pid, fd, ends);
	fflush(stdout);
}

static pid_t fork_or_die(int die_with_parent)
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (pid == 0 && die_with_parent)
		prctl(PR_SET_PDEATHSIG, SIGKILL);
	return pid;
}

/* One byte of data with room for one passed fd: what pass mode sends. */
struct fd_message {
	char byte;
	struct iovec iov;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct msghdr msg;
};

static void init_fd_message(struct fd_message *m)
{
	memset(m, 0, sizeof(*m));
	m->iov.iov_base = &m->byte;
	m->iov.iov_len = 1;
	m->msg.msg_iov = &m->iov;
	m->msg.msg_iovlen = 1;
	m->msg.msg_control = m->control.buf;
	m->msg.msg_controllen = sizeof(m->control.buf);
}

static void send_fd(int sock, int fd)
{
	struct fd_message m;

	init_fd_message(&m);
	struct cmsghdr *c = CMSG_FIRSTHDR(&m.msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sock, &m.msg, 0) != 1)
		die("sendmsg");
}

static int receive_fd(int sock)
{
	struct fd_message m;
	int fd;

	init_fd_message(&m);
	if (recvmsg(sock, &m.msg, 0) != 1 || !CMSG_FIRSTHDR(&m.msg))
		exit(0);
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m.msg)), sizeof(int));
	return fd;
}

/* The helper of pass mode: keeps every fd it is passed, says which. */
static void keep_passed(int sock)
{
	for (;;) {
		int fd = receive_fd(sock);
		if (write(sock, &fd, sizeof(fd)) != sizeof(fd))
			exit(0);
	}
}

/* Hands conn on as mode says, closes the server's copy, and says who keeps it. */
static void hand_on(const char *mode, int conn, int helper, pid_t helper_pid)
{
	char ends[64] = "";

	append_addr(ends, sizeof(ends), conn, 0);
	append_addr(ends, sizeof(ends), conn, 1);
	if (!strcmp(mode, "fork")) {
		pid_t child = fork_or_die(1);
		if (child == 0)
			for (;;)
				pause();
		close(conn);
		kept(child, conn, ends);
	} else if (!strcmp(mode, "pass")) {
		int fd;
		send_fd(helper, conn);
		if (read(helper, &fd, sizeof(fd)) != sizeof(fd))
			die("read");
		close(conn);
		kept(helper_pid, fd, ends);
	} else if (!strcmp(mode, "dup")) {
		int fd = fcntl(conn, F_DUPFD, 100);
		close(conn);
		kept(getpid(), fd, ends);
	} else if (!strcmp(mode, "exec")) {
		/* The child's exec closes the write end: EOF says it is done. */
		int done[2];
		char byte;
		if (pipe2(done, O_CLOEXEC))
			die("pipe");
		pid_t child = fork_or_die(1);
		if (child == 0) {
			dup2(conn, 0);
			execl("/bin/sleep", "sleep", "3600", (char *)NULL);
			die("exec");
		}
		close(done[1]);
		if (read(done[0], &byte, 1) != 0)
			die("exec");
		close(done[0]);
		close(conn);
		kept(child, 0, ends);
	} else {
		kept(getpid(), conn, ends); /* a daemon's worker */
	}
}

static int listen_loopback(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(fd, 128))
		die("listen");
	char where[32] = "";
	append_addr(where, sizeof(where), fd, 0);
	printf("listening%s\n", where);
	fflush(stdout);
	return fd;
}

static void serve(const char *mode, int listener, int helper, pid_t helper_pid)
{
	for (;;) {
		int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0)
			die("accept");
		hand_on(mode, conn, helper, helper_pid);
	}
}

/* Daemonizes as nginx does, listener already open: two forks, the first
 * and second processes exit; the third forks the workers that accept. */
static void daemonize(int listener)
{
	if (fork_or_die(0) > 0)
		exit(0);
	setsid();
	if (fork_or_die(0) > 0)
		exit(0);
	printf("daemon %d\n", getpgrp());
	fflush(stdout);
	for (int i = 0; i < 2; i++)
		if (fork_or_die(0) == 0)
			serve("daemon", listener, -1, 0);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	int pair[2] = {-1, -1};
	pid_t helper_pid = 0;

	if (argc != 2)
		die("usage: holders fork|pass|dup|exec|daemon");
	signal(SIGCHLD, SIG_IGN);
	if (!strcmp(argv[1], "pass")) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair))
			die("socketpair");
		helper_pid = fork_or_die(1);
		if (helper_pid == 0) {
			close(pair[0]);
			keep_passed(pair[1]);
		}
		close(pair[1]);
	}
	int listener = listen_loopback();
	if (!strcmp(argv[1], "daemon"))
		daemonize(listener);
	serve(argv[1], listener, pair[0], helper_pid);
	return 0;
}
