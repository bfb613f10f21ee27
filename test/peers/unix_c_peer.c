/*
 * A C peer for qbun's AF_UNIX interop tests, independent of qbun (built
 * with gcc by the test). Modes:
 *
 *   padded-server NAME    listen on libqb's full-length abstract address
 *                         (sun_path = "\0NAME" NUL-padded to 108 bytes,
 *                         address length sizeof(struct sockaddr_un) = 110),
 *                         print READY, then for each connection read one
 *                         message and answer "c-echo:" + message.
 *   connect FORM NAME     FORM is "short" or "padded": connect to the
 *                         abstract NAME in that form, send "ping", print
 *                         "REPLY <answer>", or "ERR <errno name>".
 *   many PATH N           N threads each connect to the stream socket at
 *                         PATH; once all are connected (a barrier) each
 *                         sends "client-<i>\n" and expects "echo:client-<i>\n";
 *                         prints "OK <n>" or "FAIL <reason>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static socklen_t abstract_addr(struct sockaddr_un *sa, const char *name, int padded) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  size_t n = strlen(name);
  if (n > sizeof sa->sun_path - 1) {
    fprintf(stderr, "name too long\n");
    exit(2);
  }
  memcpy(sa->sun_path + 1, name, n);
  return padded ? (socklen_t)sizeof *sa : (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static int padded_server(const char *name) {
  struct sockaddr_un sa;
  socklen_t len = abstract_addr(&sa, name, 1);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 16) < 0) {
    printf("ERR %s\n", strerrorname_np(errno));
    return 1;
  }
  printf("READY\n");
  fflush(stdout);
  for (;;) {
    int c = accept(fd, NULL, NULL);
    if (c < 0) continue;
    char buf[512];
    ssize_t n = read(c, buf, sizeof buf - 1);
    if (n > 0) {
      char out[600];
      int m = snprintf(out, sizeof out, "c-echo:%.*s", (int)n, buf);
      if (write(c, out, (size_t)m) < 0) perror("write");
    }
    close(c);
  }
}

static int connect_abstract(const char *form, const char *name) {
  struct sockaddr_un sa;
  socklen_t len = abstract_addr(&sa, name, strcmp(form, "padded") == 0);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (connect(fd, (struct sockaddr *)&sa, len) < 0) {
    printf("ERR %s\n", strerrorname_np(errno));
    return 0;
  }
  if (write(fd, "ping", 4) != 4) {
    printf("ERR write %s\n", strerrorname_np(errno));
    return 1;
  }
  char buf[512];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  if (n < 0) n = 0;
  buf[n] = 0;
  printf("REPLY %s\n", buf);
  close(fd);
  return 0;
}

static const char *many_path;
static pthread_barrier_t barrier;

static void *client(void *arg) {
  long i = (long)arg;
  char *result = NULL;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  strncpy(sa.sun_path, many_path, sizeof sa.sun_path - 1);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  int err = errno;
  pthread_barrier_wait(&barrier); /* every client is connected (or failed) before any sends */
  if (rc < 0) {
    if (asprintf(&result, "client %ld connect: %s", i, strerrorname_np(err)) < 0) result = "oom";
    return result;
  }
  char msg[64], want[80], got[80];
  int mlen = snprintf(msg, sizeof msg, "client-%ld\n", i);
  int wlen = snprintf(want, sizeof want, "echo:client-%ld\n", i);
  if (write(fd, msg, (size_t)mlen) != mlen) {
    if (asprintf(&result, "client %ld write: %s", i, strerrorname_np(errno)) < 0) result = "oom";
    return result;
  }
  int have = 0;
  while (have < wlen) {
    ssize_t n = read(fd, got + have, (size_t)(wlen - have));
    if (n <= 0) break;
    have += (int)n;
  }
  if (have != wlen || memcmp(got, want, (size_t)wlen) != 0) {
    if (asprintf(&result, "client %ld got %d bytes: %.*s", i, have, have, got) < 0) result = "oom";
  }
  close(fd);
  return result;
}

static int many(const char *path, int n) {
  many_path = path;
  pthread_t *threads = calloc((size_t)n, sizeof *threads);
  pthread_barrier_init(&barrier, NULL, (unsigned)n);
  printf("READY\n");
  fflush(stdout);
  long i;
  for (i = 0; i < n; i++) pthread_create(&threads[i], NULL, client, (void *)i);
  int failed = 0;
  for (i = 0; i < n; i++) {
    void *res;
    pthread_join(threads[i], &res);
    if (res) {
      if (!failed) printf("FAIL %s\n", (char *)res);
      failed++;
    }
  }
  if (!failed) printf("OK %d\n", n);
  fflush(stdout);
  return failed ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "padded-server") == 0) return padded_server(argv[2]);
  if (argc == 4 && strcmp(argv[1], "connect") == 0) return connect_abstract(argv[2], argv[3]);
  if (argc == 4 && strcmp(argv[1], "many") == 0) return many(argv[2], atoi(argv[3]));
  fprintf(stderr, "usage: see the comment at the top of unix_c_peer.c\n");
  return 2;
}
