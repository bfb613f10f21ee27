/*
 * Reference echo peer for the socket benchmarks: a plain blocking C server
 * on an AF_UNIX address (argv[1]: "stream" or "dgram", argv[2]: path or
 * @abstract). Stream: echoes every byte back on each connection (one thread
 * per connection). Datagram: sends every datagram back to its sender.
 * Prints "READY" once bound.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void *serve_stream(void *arg) {
  int fd = (int)(long)arg;
  static __thread char buf[1 << 20];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
      if (w <= 0) goto out;
      off += w;
    }
  }
out:
  close(fd);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: echo-peer stream|dgram ADDRESS\n"); return 2; }
  int dgram = strcmp(argv[1], "dgram") == 0;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  socklen_t len;
  if (argv[2][0] == '@') {
    strncpy(sa.sun_path + 1, argv[2] + 1, sizeof sa.sun_path - 2);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(argv[2] + 1));
  } else {
    unlink(argv[2]);
    strncpy(sa.sun_path, argv[2], sizeof sa.sun_path - 1);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(argv[2]) + 1);
  }
  int fd = socket(AF_UNIX, dgram ? SOCK_DGRAM : SOCK_STREAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) < 0) { perror("bind"); return 1; }
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
      sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen);
    }
  }
  for (;;) {
    int c = accept(fd, NULL, NULL);
    if (c < 0) continue;
    pthread_t t;
    pthread_create(&t, NULL, serve_stream, (void *)(long)c);
    pthread_detach(t);
  }
}
