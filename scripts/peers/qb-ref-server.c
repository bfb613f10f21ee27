/*
 * The libqb reference server for scripts/bench-qb.ts: the interop test
 * service (ECHO, SIZED, ERROR; other ids answer -EINVAL) on a plain libqb
 * 2.x server, run by libqb's own main loop.
 *
 *   qb-ref-server NAME shm|socket
 *
 * Prints "READY" once it listens. On SIGTERM or SIGINT it leaves its loop,
 * destroys the service (every connection is closed and its /dev/shm files
 * removed by libqb) and exits 0. It also exits when its parent dies.
 *
 * Rate limit: libqb's default (QB_IPCS_RATE_NORMAL: up to 5 requests per
 * wake-up), the same default as qbun's server.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <qb/qbdefs.h>
#include <qb/qbipcs.h>
#include <qb/qbloop.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <unistd.h>

enum { ID_ECHO = 1, ID_SIZED = 3, ID_ERROR = 4 };

static qb_loop_t *loop;
static unsigned char *sized_pattern;
static size_t sized_pattern_len;
static unsigned long send_failures;

static int32_t on_accept(qb_ipcs_connection_t *c, uid_t uid, gid_t gid) {
  (void)c; (void)uid; (void)gid;
  return 0;
}

static void on_created(qb_ipcs_connection_t *c) { (void)c; }

static int32_t on_closed(qb_ipcs_connection_t *c) {
  (void)c;
  return 0;
}

static void on_destroyed(qb_ipcs_connection_t *c) { (void)c; }

/* Send a response; a full ring or socket is retried briefly (it does not happen with the benchmark's loads). */
static void respond(qb_ipcs_connection_t *c, int32_t id, int32_t error, const void *data, size_t len) {
  struct qb_ipc_response_header hdr;
  memset(&hdr, 0, sizeof hdr);
  hdr.id = id;
  hdr.size = (int32_t)(sizeof hdr + len);
  hdr.error = error;
  struct iovec iov[2] = {{&hdr, sizeof hdr}, {(void *)data, len}};
  for (int attempt = 0; attempt < 1000; attempt++) {
    ssize_t rc = qb_ipcs_response_sendv(c, iov, len ? 2 : 1);
    if (rc >= 0) return;
    if (rc != -EAGAIN && rc != -ETIMEDOUT) break;
    usleep(100);
  }
  send_failures++;
}

static int32_t on_msg(qb_ipcs_connection_t *c, void *data, size_t size) {
  const struct qb_ipc_request_header *req = data;
  const unsigned char *payload = (const unsigned char *)data + sizeof *req;
  size_t len = size >= sizeof *req ? size - sizeof *req : 0;
  if (size < sizeof *req) {
    respond(c, req->id, -EINVAL, NULL, 0);
    return 0;
  }
  switch (req->id) {
  case ID_ECHO:
    respond(c, req->id, 0, payload, len);
    break;
  case ID_SIZED: {
    uint32_t n;
    if (len < 4) {
      respond(c, req->id, -EINVAL, NULL, 0);
      break;
    }
    memcpy(&n, payload, 4);
    if (n > sized_pattern_len) {
      unsigned char *p = realloc(sized_pattern, n);
      if (!p) {
        respond(c, req->id, -ENOMEM, NULL, 0);
        break;
      }
      for (size_t i = sized_pattern_len; i < n; i++) p[i] = (unsigned char)(i & 0xff);
      sized_pattern = p;
      sized_pattern_len = n;
    }
    respond(c, req->id, 0, sized_pattern, n);
    break;
  }
  case ID_ERROR: {
    int32_t e;
    if (len < 4) {
      respond(c, req->id, -EINVAL, NULL, 0);
      break;
    }
    memcpy(&e, payload, 4);
    respond(c, req->id, e, NULL, 0);
    break;
  }
  default:
    respond(c, req->id, -EINVAL, NULL, 0);
  }
  return 0;
}

/* libqb's server asks its application to run its fds and jobs: hand them to qb_loop. */
static int32_t job_add(enum qb_loop_priority p, void *data, qb_loop_job_dispatch_fn fn) {
  return qb_loop_job_add(loop, p, data, fn);
}

static int32_t dispatch_add(enum qb_loop_priority p, int32_t fd, int32_t events, void *data, qb_ipcs_dispatch_fn_t fn) {
  return qb_loop_poll_add(loop, p, fd, events, data, fn);
}

static int32_t dispatch_mod(enum qb_loop_priority p, int32_t fd, int32_t events, void *data, qb_ipcs_dispatch_fn_t fn) {
  return qb_loop_poll_mod(loop, p, fd, events, data, fn);
}

static int32_t dispatch_del(int32_t fd) { return qb_loop_poll_del(loop, fd); }

static int32_t on_signal(int32_t sig, void *data) {
  (void)sig; (void)data;
  qb_loop_stop(loop);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3 || (strcmp(argv[2], "shm") != 0 && strcmp(argv[2], "socket") != 0)) {
    fprintf(stderr, "usage: qb-ref-server NAME shm|socket\n");
    return 2;
  }
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 1;
  /* One fd per SHM connection (three per socket connection): allow the hard limit. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  enum qb_ipc_type type = strcmp(argv[2], "shm") == 0 ? QB_IPC_SHM : QB_IPC_SOCKET;
  loop = qb_loop_create();
  if (!loop) {
    perror("qb-ref-server: qb_loop_create");
    return 1;
  }
  struct qb_ipcs_service_handlers service = {
    .connection_accept = on_accept,
    .connection_created = on_created,
    .msg_process = on_msg,
    .connection_closed = on_closed,
    .connection_destroyed = on_destroyed,
  };
  struct qb_ipcs_poll_handlers poll = {
    .job_add = job_add,
    .dispatch_add = dispatch_add,
    .dispatch_mod = dispatch_mod,
    .dispatch_del = dispatch_del,
  };
  qb_ipcs_service_t *s = qb_ipcs_create(argv[1], 0, type, &service);
  if (!s) {
    perror("qb-ref-server: qb_ipcs_create");
    return 1;
  }
  qb_ipcs_poll_handlers_set(s, &poll);
  qb_loop_signal_handle h_term, h_int;
  qb_loop_signal_add(loop, QB_LOOP_HIGH, SIGTERM, NULL, on_signal, &h_term);
  qb_loop_signal_add(loop, QB_LOOP_HIGH, SIGINT, NULL, on_signal, &h_int);
  int32_t rc = qb_ipcs_run(s);
  if (rc != 0) {
    fprintf(stderr, "qb-ref-server: qb_ipcs_run: %s\n", strerror(-rc));
    qb_ipcs_destroy(s);
    return 1;
  }
  printf("READY\n");
  fflush(stdout);
  qb_loop_run(loop);
  qb_ipcs_destroy(s);
  qb_loop_destroy(loop);
  free(sized_pattern);
  if (send_failures) fprintf(stderr, "qb-ref-server: %lu responses could not be sent\n", send_failures);
  return 0;
}
