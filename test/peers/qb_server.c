/*
 * A real libqb 2.0.6 server (qb_ipcs_* on libqb's own loop) speaking the
 * interop test service, for testing qbun's client against the real thing.
 *
 * usage: qb_server NAME shm|socket [--deny-uid N]
 *   Prints "READY" once listening. SIGUSR1 sets the rate limit to OFF (flow
 *   control on for every connection), SIGWINCH to OFF_2 (flow control 2:
 *   only clients that raised fc_enable_max back off), SIGUSR2 back to
 *   NORMAL, SIGHUP sends
 *   one event (id 9, 16 bytes) to every connection. SIGTERM/SIGINT: destroy
 *   the service (libqb removes every connection's files) and exit 0.
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
#include <sys/uio.h>
#include <unistd.h>

static qb_loop_t *loop;
static qb_ipcs_service_t *service;
static long deny_uid = -1;

static int32_t on_accept(qb_ipcs_connection_t *c, uid_t uid, gid_t gid) {
  (void)c; (void)gid;
  return (long)uid == deny_uid ? -EACCES : 0;
}

static void on_created(qb_ipcs_connection_t *c) { (void)c; }
static int32_t on_closed(qb_ipcs_connection_t *c) { (void)c; return 0; }
static void on_destroyed(qb_ipcs_connection_t *c) { (void)c; }

static void respond(qb_ipcs_connection_t *c, int32_t id, int32_t error, const void *data, size_t len) {
  struct qb_ipc_response_header hdr;
  memset(&hdr, 0, sizeof hdr);
  hdr.id = id;
  hdr.size = (int32_t)(sizeof hdr + len);
  hdr.error = error;
  struct iovec iov[2] = {{&hdr, sizeof hdr}, {(void *)data, len}};
  /* A full response ring: retry (this test server never gives up on a response). */
  while (qb_ipcs_response_sendv(c, iov, len ? 2 : 1) == -EAGAIN) usleep(1000);
}

static int32_t on_message(qb_ipcs_connection_t *c, void *data, size_t size) {
  struct qb_ipc_request_header *req = data;
  unsigned char *payload = (unsigned char *)data + sizeof *req;
  size_t len = size - sizeof *req;
  uint32_t a = 0, b = 0;
  if (len >= 4) memcpy(&a, payload, 4);
  if (len >= 8) memcpy(&b, payload + 4, 4);
  switch (req->id) {
    case 1: respond(c, 1, 0, payload, len); break;
    case 2: {
      if (len < 8) { respond(c, 2, -EINVAL, NULL, 0); break; }
      unsigned char *ev = malloc(b ? b : 1);
      for (uint32_t k = 0; k < a; k++) {
        struct qb_ipc_response_header hdr = {.id = 2, .size = (int32_t)(sizeof hdr + b), .error = 0};
        for (uint32_t i = 0; i < b; i++) ev[i] = (unsigned char)((i + k) & 0xff);
        struct iovec iov[2] = {{&hdr, sizeof hdr}, {ev, b}};
        while (qb_ipcs_event_sendv(c, iov, b ? 2 : 1) == -EAGAIN) usleep(1000);
      }
      free(ev);
      respond(c, 2, 0, NULL, 0);
      break;
    }
    case 3: {
      if (len < 4) { respond(c, 3, -EINVAL, NULL, 0); break; }
      unsigned char *out = malloc(a ? a : 1);
      for (uint32_t i = 0; i < a; i++) out[i] = (unsigned char)(i & 0xff);
      respond(c, 3, 0, out, a);
      free(out);
      break;
    }
    case 4: respond(c, 4, len >= 4 ? (int32_t)a : -EINVAL, NULL, 0); break;
    case 5: {
      /* Answered in the handler, after the wait: libqb's loop is blocked
       * meanwhile, so responses stay in request order (libqb itself does
       * not order responses; the interop service does). */
      if (len < 4) { respond(c, 5, -EINVAL, NULL, 0); break; }
      usleep((useconds_t)a * 1000);
      respond(c, 5, 0, NULL, 0);
      break;
    }
    case 6: {
      struct qb_ipcs_connection_stats st;
      qb_ipcs_connection_stats_get(c, &st, 0);
      char json[128];
      int n = snprintf(json, sizeof json, "{\"pid\":%d,\"readOnly\":false}", st.client_pid);
      respond(c, 6, 0, json, (size_t)n);
      break;
    }
    default: respond(c, req->id, -EINVAL, NULL, 0);
  }
  return 0;
}

static int32_t job_add(enum qb_loop_priority p, void *data, qb_loop_job_dispatch_fn fn) { return qb_loop_job_add(loop, p, data, fn); }
static int32_t dispatch_add(enum qb_loop_priority p, int32_t fd, int32_t events, void *data, qb_ipcs_dispatch_fn_t fn) {
  return qb_loop_poll_add(loop, p, fd, events, data, fn);
}
static int32_t dispatch_mod(enum qb_loop_priority p, int32_t fd, int32_t events, void *data, qb_ipcs_dispatch_fn_t fn) {
  return qb_loop_poll_mod(loop, p, fd, events, data, fn);
}
static int32_t dispatch_del(int32_t fd) { return qb_loop_poll_del(loop, fd); }

static int32_t on_signal(int32_t sig, void *data) {
  (void)data;
  if (sig == SIGUSR1) qb_ipcs_request_rate_limit(service, QB_IPCS_RATE_OFF);
  else if (sig == SIGUSR2) qb_ipcs_request_rate_limit(service, QB_IPCS_RATE_NORMAL);
  else if (sig == SIGWINCH) qb_ipcs_request_rate_limit(service, QB_IPCS_RATE_OFF_2);
  else if (sig == SIGHUP) {
    qb_ipcs_connection_t *c = qb_ipcs_connection_first_get(service);
    while (c) {
      struct qb_ipc_response_header hdr = {.id = 9, .size = sizeof hdr + 16, .error = 0};
      unsigned char body[16];
      memset(body, 0x5a, sizeof body);
      struct iovec iov[2] = {{&hdr, sizeof hdr}, {body, sizeof body}};
      qb_ipcs_event_sendv(c, iov, 2);
      qb_ipcs_connection_t *next = qb_ipcs_connection_next_get(service, c);
      qb_ipcs_connection_unref(c);
      c = next;
    }
  } else qb_loop_stop(loop);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: qb_server NAME shm|socket [--deny-uid N]\n"); return 2; }
  if (argc >= 5 && strcmp(argv[3], "--deny-uid") == 0) deny_uid = strtol(argv[4], NULL, 10);
  enum qb_ipc_type type = strcmp(argv[2], "socket") == 0 ? QB_IPC_SOCKET : QB_IPC_SHM;
  loop = qb_loop_create();
  struct qb_ipcs_service_handlers handlers = {
    .connection_accept = on_accept,
    .connection_created = on_created,
    .msg_process = on_message,
    .connection_closed = on_closed,
    .connection_destroyed = on_destroyed,
  };
  struct qb_ipcs_poll_handlers poll = {
    .job_add = job_add, .dispatch_add = dispatch_add, .dispatch_mod = dispatch_mod, .dispatch_del = dispatch_del,
  };
  service = qb_ipcs_create(argv[1], 0, type, &handlers);
  if (!service) { perror("qb_ipcs_create"); return 1; }
  qb_ipcs_poll_handlers_set(service, &poll);
  int rc = qb_ipcs_run(service);
  if (rc != 0) { fprintf(stderr, "qb_ipcs_run: %d\n", rc); return 1; }
  qb_loop_signal_handle h;
  int sigs[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP, SIGWINCH};
  for (unsigned i = 0; i < sizeof sigs / sizeof *sigs; i++) qb_loop_signal_add(loop, QB_LOOP_HIGH, sigs[i], NULL, on_signal, &h);
  printf("READY\n");
  fflush(stdout);
  qb_loop_run(loop);
  qb_ipcs_destroy(service);
  qb_loop_destroy(loop);
  return 0;
}
