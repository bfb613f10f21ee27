/*
 * A real libqb client (Debian's libqb 2.0.6, qb_ipcc_*) for the interop
 * tests: it drives the interop service of any server and prints one JSON
 * line per result. Exit code 0 when every check passed.
 *
 * usage: qb_client NAME [--max BYTES] COMMAND [ARGS]
 *   info                      connect; print buffer size and server credentials
 *   echo SIZE COUNT           COUNT echoes of SIZE bytes (pattern depends on the round), verified
 *   echo-sizes S1,S2,...      one verified echo per size
 *   pipeline SIZE COUNT DEPTH qb_ipcc_send DEPTH requests before reading responses, COUNT in all
 *   sized N                   SIZED n: verify the n-byte pattern
 *   error E                   ERROR e: print the response's error
 *   events COUNT SIZE         EVENTS: verify COUNT events and the response
 *   whoami                    print the WHOAMI JSON
 *   slow MS                   SLOW ms: print the time taken
 *   raw ID HEXPAYLOAD         any request: print error and size of the response
 *   many N                    open N more connections (an echo on each), print READY, hold until stdin closes
 *   listen COUNT              print READY, then receive COUNT events (sent outside requests)
 *   hold                      connect, print READY; one 8-byte echo per "echo" line on stdin
 *                             (prints {"ok","rc"}); any other line or EOF disconnects
 */
#include <errno.h>
#include <qb/qbipcc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

static qb_ipcc_connection_t *conn;
static char *rbuf;
static size_t rbuf_size;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void fail(const char *what, int rc) {
  printf("{\"ok\":false,\"what\":\"%s\",\"rc\":%d}\n", what, rc);
  fflush(stdout);
  if (conn) qb_ipcc_disconnect(conn);
  exit(1);
}

/* One request with `len` payload bytes; returns the response size (header included). */
static int request(int32_t id, const void *payload, size_t len, struct qb_ipc_response_header **out) {
  struct qb_ipc_request_header hdr;
  memset(&hdr, 0, sizeof hdr);
  hdr.id = id;
  hdr.size = (int32_t)(sizeof hdr + len);
  struct iovec iov[2] = {{&hdr, sizeof hdr}, {(void *)payload, len}};
  ssize_t rc = qb_ipcc_sendv_recv(conn, iov, len ? 2 : 1, rbuf, rbuf_size, TIMEOUT_MS);
  if (rc < 0) return (int)rc;
  *out = (struct qb_ipc_response_header *)rbuf;
  return (int)rc;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)((i * 7 + seed) & 0xff);
}

static void echo_once(size_t size, unsigned seed) {
  unsigned char *payload = malloc(size ? size : 1);
  fill(payload, size, seed);
  struct qb_ipc_response_header *res;
  int rc = request(1, payload, size, &res);
  if (rc < 0) fail("echo", rc);
  if (res->error != 0 || res->size != (int32_t)(sizeof *res + size) || rc != res->size) fail("echo-header", res->error ? res->error : rc);
  if (memcmp((char *)res + sizeof *res, payload, size) != 0) fail("echo-payload", (int)size);
  free(payload);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: qb_client NAME [--max BYTES] COMMAND [ARGS]\n");
    return 2;
  }
  const char *name = argv[1];
  int a = 2;
  size_t max = 0;
  if (strcmp(argv[a], "--max") == 0) {
    max = strtoul(argv[a + 1], NULL, 10);
    a += 2;
  }
  const char *cmd = argv[a++];
  conn = qb_ipcc_connect(name, max);
  if (!conn) fail("connect", -errno);
  rbuf_size = (size_t)qb_ipcc_get_buffer_size(conn);
  rbuf = malloc(rbuf_size);

  if (strcmp(cmd, "info") == 0) {
    pid_t pid; uid_t uid; gid_t gid;
    int rc = qb_ipcc_auth_get(conn, &pid, &uid, &gid);
    printf("{\"ok\":true,\"bufferSize\":%zu,\"authRc\":%d,\"serverPid\":%d,\"serverUid\":%u,\"serverGid\":%u,\"fd\":%d}\n",
           rbuf_size, rc, (int)pid, (unsigned)uid, (unsigned)gid, 0);
  } else if (strcmp(cmd, "echo") == 0) {
    size_t size = strtoul(argv[a], NULL, 10);
    long count = strtol(argv[a + 1], NULL, 10);
    double t0 = now_ms();
    for (long i = 0; i < count; i++) echo_once(size, (unsigned)i);
    printf("{\"ok\":true,\"count\":%ld,\"ms\":%.3f}\n", count, now_ms() - t0);
  } else if (strcmp(cmd, "echo-sizes") == 0) {
    char *list = strdup(argv[a]);
    int n = 0;
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ","), n++) echo_once(strtoul(tok, NULL, 10), (unsigned)n);
    printf("{\"ok\":true,\"count\":%d}\n", n);
  } else if (strcmp(cmd, "pipeline") == 0) {
    size_t size = strtoul(argv[a], NULL, 10);
    long count = strtol(argv[a + 1], NULL, 10), depth = strtol(argv[a + 2], NULL, 10);
    unsigned char *msg = malloc(sizeof(struct qb_ipc_request_header) + size);
    long sent = 0, got = 0;
    while (got < count) {
      while (sent < count && sent - got < depth) {
        struct qb_ipc_request_header *h = (void *)msg;
        memset(h, 0, sizeof *h);
        h->id = 1;
        h->size = (int32_t)(sizeof *h + size);
        fill(msg + sizeof *h, size, (unsigned)sent);
        ssize_t rc = qb_ipcc_send(conn, msg, sizeof *h + size);
        if (rc == -EAGAIN) break; /* flow control or a full ring: read first */
        if (rc < 0) fail("send", (int)rc);
        sent++;
      }
      ssize_t rc = qb_ipcc_recv(conn, rbuf, rbuf_size, TIMEOUT_MS);
      if (rc < 0) fail("recv", (int)rc);
      struct qb_ipc_response_header *res = (void *)rbuf;
      fill(msg + sizeof(struct qb_ipc_request_header), size, (unsigned)got);
      if (res->error != 0 || res->size != (int32_t)(sizeof *res + size) ||
          memcmp(rbuf + sizeof *res, msg + sizeof(struct qb_ipc_request_header), size) != 0)
        fail("pipeline-order", (int)got);
      got++;
    }
    printf("{\"ok\":true,\"count\":%ld}\n", got);
  } else if (strcmp(cmd, "sized") == 0) {
    uint32_t n = (uint32_t)strtoul(argv[a], NULL, 10);
    struct qb_ipc_response_header *res;
    int rc = request(3, &n, 4, &res);
    if (rc < 0) fail("sized", rc);
    if (res->error != 0 || res->size != (int32_t)(sizeof *res + n)) fail("sized-header", res->error);
    unsigned char *p = (unsigned char *)res + sizeof *res;
    for (uint32_t i = 0; i < n; i++) if (p[i] != (i & 0xff)) fail("sized-payload", (int)i);
    printf("{\"ok\":true,\"size\":%u}\n", n);
  } else if (strcmp(cmd, "error") == 0) {
    int32_t e = (int32_t)strtol(argv[a], NULL, 10);
    struct qb_ipc_response_header *res;
    int rc = request(4, &e, 4, &res);
    if (rc < 0) fail("error", rc);
    printf("{\"ok\":true,\"error\":%d,\"size\":%d}\n", res->error, res->size);
  } else if (strcmp(cmd, "events") == 0) {
    uint32_t args[2] = {(uint32_t)strtoul(argv[a], NULL, 10), (uint32_t)strtoul(argv[a + 1], NULL, 10)};
    struct qb_ipc_request_header hdr = {.id = 2, .size = sizeof hdr + 8};
    struct iovec iov[2] = {{&hdr, sizeof hdr}, {args, 8}};
    if (qb_ipcc_sendv(conn, iov, 2) < 0) fail("events-send", -errno);
    char *ebuf = malloc(rbuf_size);
    uint32_t k = 0;
    int response_seen = 0;
    double deadline = now_ms() + TIMEOUT_MS;
    while ((k < args[0] || !response_seen) && now_ms() < deadline) {
      if (k < args[0]) {
        ssize_t rc = qb_ipcc_event_recv(conn, ebuf, rbuf_size, 100);
        if (rc >= 0) {
          struct qb_ipc_response_header *ev = (void *)ebuf;
          if (ev->id != 2 || ev->size != (int32_t)(sizeof *ev + args[1]) || rc != ev->size) fail("event-header", (int)k);
          unsigned char *p = (unsigned char *)ebuf + sizeof *ev;
          for (uint32_t i = 0; i < args[1]; i++) if (p[i] != ((i + k) & 0xff)) fail("event-payload", (int)k);
          k++;
        } else if (rc != -EAGAIN && rc != -ETIMEDOUT) fail("event-recv", (int)rc);
      }
      if (!response_seen) {
        ssize_t rc = qb_ipcc_recv(conn, rbuf, rbuf_size, k < args[0] ? 0 : 100);
        if (rc >= 0) {
          if (((struct qb_ipc_response_header *)rbuf)->error != 0) fail("events-response", ((struct qb_ipc_response_header *)rbuf)->error);
          response_seen = 1;
        } else if (rc != -EAGAIN && rc != -ETIMEDOUT) fail("events-recv", (int)rc);
      }
    }
    if (k != args[0] || !response_seen) fail("events-missing", (int)k);
    /* Byte accounting: no stray notification byte may be left behind. */
    ssize_t extra = qb_ipcc_event_recv(conn, ebuf, rbuf_size, 50);
    printf("{\"ok\":%s,\"events\":%u,\"extra\":%zd}\n", extra == -EAGAIN ? "true" : "false", k, extra);
    if (extra != -EAGAIN) return 1;
  } else if (strcmp(cmd, "whoami") == 0) {
    struct qb_ipc_response_header *res;
    int rc = request(6, NULL, 0, &res);
    if (rc < 0) fail("whoami", rc);
    printf("{\"ok\":true,\"whoami\":%.*s}\n", (int)(res->size - sizeof *res), (char *)res + sizeof *res);
  } else if (strcmp(cmd, "slow") == 0) {
    uint32_t ms = (uint32_t)strtoul(argv[a], NULL, 10);
    double t0 = now_ms();
    struct qb_ipc_response_header *res;
    int rc = request(5, &ms, 4, &res);
    if (rc < 0) fail("slow", rc);
    printf("{\"ok\":true,\"error\":%d,\"ms\":%.1f}\n", res->error, now_ms() - t0);
  } else if (strcmp(cmd, "raw") == 0) {
    int32_t id = (int32_t)strtol(argv[a], NULL, 10);
    const char *hex = a + 1 < argc ? argv[a + 1] : "";
    size_t n = strlen(hex) / 2;
    unsigned char *p = malloc(n + 1);
    for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &p[i]);
    struct qb_ipc_response_header *res;
    int rc = request(id, p, n, &res);
    if (rc < 0) fail("raw", rc);
    printf("{\"ok\":true,\"id\":%d,\"error\":%d,\"size\":%d}\n", res->id, res->error, res->size);
  } else if (strcmp(cmd, "many") == 0) {
    /* Open N more connections, one verified echo on each, print READY and hold them until stdin closes. */
    long n = strtol(argv[a], NULL, 10);
    qb_ipcc_connection_t **all = calloc((size_t)n, sizeof *all);
    qb_ipcc_connection_t *first = conn;
    for (long i = 0; i < n; i++) {
      all[i] = qb_ipcc_connect(name, max);
      if (!all[i]) fail("many-connect", -errno);
      conn = all[i];
      echo_once(64, (unsigned)i);
    }
    conn = first;
    printf("READY %ld\n", n + 1);
    fflush(stdout);
    char line[16];
    while (fgets(line, sizeof line, stdin)) {}
    for (long i = 0; i < n; i++) qb_ipcc_disconnect(all[i]);
    printf("{\"ok\":true,\"connections\":%ld}\n", n + 1);
  } else if (strcmp(cmd, "listen") == 0) {
    /* Print READY, then receive COUNT events sent from outside any request; print their ids and sizes. */
    long count = strtol(argv[a], NULL, 10);
    printf("READY\n");
    fflush(stdout);
    char *ebuf = malloc(rbuf_size);
    long got = 0, bytes = 0;
    while (got < count) {
      ssize_t rc = qb_ipcc_event_recv(conn, ebuf, rbuf_size, TIMEOUT_MS);
      if (rc < 0) fail("listen", (int)rc);
      struct qb_ipc_response_header *ev = (void *)ebuf;
      if (ev->size != rc) fail("listen-size", (int)rc);
      bytes += rc;
      got++;
    }
    printf("{\"ok\":true,\"events\":%ld,\"bytes\":%ld}\n", got, bytes);
  } else if (strcmp(cmd, "hold") == 0) {
    /* Stay connected; each "echo" line on stdin sends one 8-byte echo. */
    printf("READY\n");
    fflush(stdout);
    char line[32];
    while (fgets(line, sizeof line, stdin) && strncmp(line, "echo", 4) == 0) {
      struct qb_ipc_response_header *res;
      int rc = request(1, "12345678", 8, &res);
      printf("{\"ok\":%s,\"rc\":%d}\n", rc >= 0 ? "true" : "false", rc);
      fflush(stdout);
    }
  } else {
    fprintf(stderr, "unknown command %s\n", cmd);
    qb_ipcc_disconnect(conn);
    return 2;
  }
  fflush(stdout);
  qb_ipcc_disconnect(conn);
  return 0;
}
