/*
 * C reference client for scripts/bench-unix.ts: blocking ping-pong against
 * an echo peer, timed with CLOCK_MONOTONIC.
 *
 *   ping-client stream ADDRESS SIZE
 *   ping-client dgram  ADDRESS SIZE BIND_ADDRESS
 *
 * ADDRESS: a path, or @name (short-form abstract). Connects (stream) or binds
 * (dgram), prints "READY", then reads commands from stdin, one per line:
 *   N    run N round trips of SIZE bytes; answer with one line
 *        "T ns1 ns2 ... nsN" (the round-trip time of each iteration);
 *   q    (or end of input) close and exit.
 * Every echo is checked against what was sent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static socklen_t make_addr(const char *s, struct sockaddr_un *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  size_t n = strlen(s);
  if (s[0] == '@') {
    if (n - 1 > sizeof sa->sun_path - 1) { fprintf(stderr, "ping-client: name too long\n"); exit(2); }
    memcpy(sa->sun_path + 1, s + 1, n - 1);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  }
  if (n > sizeof sa->sun_path - 1) { fprintf(stderr, "ping-client: path too long\n"); exit(2); }
  memcpy(sa->sun_path, s, n);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(int argc, char **argv) {
  if (argc < 4 || (strcmp(argv[1], "dgram") == 0 && argc < 5)) {
    fprintf(stderr, "usage: ping-client stream ADDRESS SIZE | ping-client dgram ADDRESS SIZE BIND_ADDRESS\n");
    return 2;
  }
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 1;
  int dgram = strcmp(argv[1], "dgram") == 0;
  size_t size = (size_t)strtoul(argv[3], NULL, 10);
  if (size == 0) { fprintf(stderr, "ping-client: SIZE must be > 0\n"); return 2; }
  struct sockaddr_un peer, self;
  socklen_t peer_len = make_addr(argv[2], &peer);
  int fd = socket(AF_UNIX, dgram ? SOCK_DGRAM : SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (dgram) {
    socklen_t self_len = make_addr(argv[4], &self);
    if (argv[4][0] != '@') unlink(argv[4]);
    if (bind(fd, (struct sockaddr *)&self, self_len) < 0) die("bind");
  } else if (connect(fd, (struct sockaddr *)&peer, peer_len) < 0) {
    die("connect");
  }
  unsigned char *out = malloc(size), *in = malloc(size);
  if (!out || !in) die("malloc");
  for (size_t i = 0; i < size; i++) out[i] = (unsigned char)(i * 7 + 1);
  printf("READY\n");
  fflush(stdout);

  char line[64];
  uint64_t *times = NULL;
  size_t cap = 0;
  int status = 0;
  while (fgets(line, sizeof line, stdin)) {
    if (line[0] == 'q') break;
    size_t n = (size_t)strtoul(line, NULL, 10);
    if (n > cap) {
      free(times);
      times = malloc(n * sizeof *times);
      if (!times) die("malloc");
      cap = n;
    }
    for (size_t it = 0; it < n; it++) {
      out[0] = (unsigned char)it; /* a fresh first byte each time */
      uint64_t t0 = now_ns();
      if (dgram) {
        if (sendto(fd, out, size, 0, (struct sockaddr *)&peer, peer_len) != (ssize_t)size) die("sendto");
        ssize_t r;
        do r = recv(fd, in, size, 0); while (r < 0 && errno == EINTR);
        if (r != (ssize_t)size) die("recv");
      } else {
        for (size_t off = 0; off < size;) {
          ssize_t w = send(fd, out + off, size - off, MSG_NOSIGNAL);
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) die("send");
          off += (size_t)w;
        }
        for (size_t got = 0; got < size;) {
          ssize_t r = recv(fd, in + got, size - got, 0);
          if (r < 0 && errno == EINTR) continue;
          if (r <= 0) die("recv");
          got += (size_t)r;
        }
      }
      times[it] = now_ns() - t0;
      if (memcmp(in, out, size) != 0) { fprintf(stderr, "ping-client: echo mismatch\n"); status = 1; }
    }
    fputc('T', stdout);
    for (size_t it = 0; it < n; it++) fprintf(stdout, " %llu", (unsigned long long)times[it]);
    fputc('\n', stdout);
    fflush(stdout);
  }
  close(fd);
  if (dgram && argv[4][0] != '@') unlink(argv[4]);
  free(times);
  free(out);
  free(in);
  return status;
}
