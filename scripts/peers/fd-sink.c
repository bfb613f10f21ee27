/*
 * C receiver for the fd-passing benchmark of scripts/bench-unix.ts.
 *
 *   fd-sink stream|seqpacket ADDRESS
 *
 * Listens on ADDRESS (a path, or @name for a short-form abstract name),
 * prints "READY", then serves connections one after another: every message
 * is read with recvmsg, every fd that arrives (SCM_RIGHTS) is closed at
 * once. At end of stream it prints one line
 *   DONE <messages> <fds received> <close failures> <ctrunc> <open fds now>
 * where "open fds now" counts /proc/self/fd (a leak would make it grow).
 * Before closing a connection it sends the client one byte ("A"): a client
 * that half-closes (shutdown SHUT_WR) and waits for it knows that every
 * message has been received and every fd closed, and can time that itself.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FDS 64

static char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

static void on_term(int sig) {
  if (socket_path[0]) unlink(socket_path);
  signal(sig, SIG_DFL);
  raise(sig);
}

static int count_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory's own fd */
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: fd-sink stream|seqpacket ADDRESS\n"); return 2; }
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 1;
  int type = strcmp(argv[1], "seqpacket") == 0 ? SOCK_SEQPACKET : SOCK_STREAM;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  socklen_t len;
  size_t n = strlen(argv[2]);
  if (n > sizeof sa.sun_path - 1) { fprintf(stderr, "fd-sink: address too long\n"); return 2; }
  if (argv[2][0] == '@') {
    memcpy(sa.sun_path + 1, argv[2] + 1, n - 1);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  } else {
    unlink(argv[2]);
    memcpy(sa.sun_path, argv[2], n);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  }
  int lfd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, len) < 0 || listen(lfd, 16) < 0) { perror("fd-sink: listen"); return 1; }
  if (argv[2][0] != '@') memcpy(socket_path, sa.sun_path, sizeof socket_path);
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  printf("READY\n");
  fflush(stdout);

  union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)]; } ctrl;
  char data[4096];
  for (;;) {
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) { if (errno == EINTR) continue; perror("fd-sink: accept"); return 1; }
    long msgs = 0, fds = 0, close_failures = 0, ctrunc = 0;
    for (;;) {
      struct iovec iov = { data, sizeof data };
      struct msghdr msg;
      memset(&msg, 0, sizeof msg);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = ctrl.buf;
      msg.msg_controllen = sizeof ctrl.buf;
      ssize_t r = recvmsg(c, &msg, MSG_CMSG_CLOEXEC);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) { perror("fd-sink: recvmsg"); break; }
      int got = 0;
      for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h)) {
        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k; i++) {
          int fd;
          memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
          if (close(fd) < 0) close_failures++;
          got++;
        }
      }
      if (msg.msg_flags & MSG_CTRUNC) ctrunc++;
      if (r == 0 && got == 0) break; /* end of stream */
      msgs++;
      fds += got;
    }
    while (send(c, "A", 1, MSG_NOSIGNAL) < 0 && errno == EINTR) {}
    close(c);
    printf("DONE %ld %ld %ld %ld %d\n", msgs, fds, close_failures, ctrunc, count_open_fds());
    fflush(stdout);
  }
}
