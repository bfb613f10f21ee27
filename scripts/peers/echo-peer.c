/*
 * Reference echo peer for the socket benchmarks: a plain blocking C server
 * on an AF_UNIX address (argv[1]: "stream" or "dgram", argv[2]: path or
 * @abstract, the short abstract form). Stream: echoes every byte back on
 * each connection (one thread per connection). Datagram: sends every
 * datagram back to its sender. Prints "READY" once bound (and listening).
 * Exits when its parent dies (PR_SET_PDEATHSIG), so a crashed benchmark
 * leaves no peer behind; a path socket file is unlinked on SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

static void on_term(int sig) {
  if (socket_path[0]) unlink(socket_path);
  signal(sig, SIG_DFL);
  raise(sig);
}

static void *serve_stream(void *arg) {
  int fd = (int)(long)arg;
  char *buf = malloc(1 << 20);
  if (!buf) { close(fd); return NULL; }
  for (;;) {
    ssize_t n = recv(fd, buf, 1 << 20, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) goto out;
      off += w;
    }
  }
out:
  free(buf);
  close(fd);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: echo-peer stream|dgram ADDRESS\n"); return 2; }
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 1; /* parent already gone */
  int dgram = strcmp(argv[1], "dgram") == 0;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  socklen_t len;
  if (argv[2][0] == '@') {
    size_t n = strlen(argv[2] + 1);
    if (n > sizeof sa.sun_path - 1) { fprintf(stderr, "echo-peer: name too long\n"); return 2; }
    memcpy(sa.sun_path + 1, argv[2] + 1, n);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
  } else {
    size_t n = strlen(argv[2]);
    if (n > sizeof sa.sun_path - 1) { fprintf(stderr, "echo-peer: path too long\n"); return 2; }
    unlink(argv[2]);
    memcpy(sa.sun_path, argv[2], n);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  }
  int fd = socket(AF_UNIX, dgram ? SOCK_DGRAM : SOCK_STREAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) < 0) { perror("bind"); return 1; }
  if (argv[2][0] != '@') memcpy(socket_path, sa.sun_path, sizeof socket_path);
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  if (!dgram && listen(fd, 128) < 0) { perror("listen"); return 1; }
  printf("READY\n");
  fflush(stdout);
  if (dgram) {
    static char buf[1 << 17];
    for (;;) {
      struct sockaddr_un from;
      socklen_t flen = sizeof from;
      ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
      if (n < 0) continue;
      /* an unbound sender has no address to answer to */
      if (flen > offsetof(struct sockaddr_un, sun_path)) sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen);
    }
  }
  for (;;) {
    int c = accept(fd, NULL, NULL);
    if (c < 0) continue;
    pthread_t t;
    if (pthread_create(&t, NULL, serve_stream, (void *)(long)c) != 0) { close(c); continue; }
    pthread_detach(t);
  }
}
