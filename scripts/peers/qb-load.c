/*
 * libqb client load generator for scripts/bench-qb.ts and
 * scripts/bench-qb-client.ts. Talks to any server
 * of the interop service (ECHO = id 1) with Debian's libqb 2.x client
 * (qb_ipcc_*), times itself with CLOCK_MONOTONIC and prints one
 * machine-readable line (space-separated key=value pairs; times in ns).
 *
 *   qb-load latency    NAME SIZE WARMUP ITERS
 *       one connection, ITERS sequential ECHOs of SIZE payload bytes
 *       (qb_ipcc_sendv_recv), after WARMUP untimed ones. Prints
 *       "LAT n= p50= p90= p99= min= max= mean=" over the per-request round trips.
 *   qb-load throughput NAME SIZE WARMUP ITERS
 *       the same with a connection whose max message size fits SIZE; prints
 *       "TPUT n= seconds= bytes_per_s= p50=" (payload bytes echoed per second).
 *       Every response's header is checked; the payload is compared on the
 *       warm-up requests and the last timed one.
 *   qb-load pipeline   NAME SIZE CLIENTS DEPTH MS [MAXMSG]
 *       CLIENTS processes, one connection each, each keeping DEPTH ECHOs in
 *       flight (qb_ipcc_send / qb_ipcc_recv) for MS milliseconds after a
 *       common start, then draining. Prints "PIPE messages= seconds= rate="
 *       (all responses / (last end - first start)) and per-client counts.
 *       MAXMSG (default 0: libqb's default) is the max message size the
 *       connections ask for: DEPTH large messages in flight need rings that
 *       hold them all.
 *   qb-load connect    NAME SIZE MS
 *       for MS milliseconds: qb_ipcc_connect, one ECHO, qb_ipcc_disconnect.
 *       Prints "CONN n= seconds= rate= p50= p99=" (per-cycle times).
 *   qb-load hold       NAME COUNT
 *       raise RLIMIT_NOFILE to the hard limit, open COUNT connections (one
 *       64-byte ECHO on each, so each is fully established), print
 *       "HELD n= fds=", wait for a line (or EOF) on stdin, disconnect them all,
 *       print "RELEASED" and exit.
 *
 * QB_LOAD_CPU=N in the environment pins the load generator (and the clients
 * it forks) to CPU N.
 *
 * Every timed mode also prints client_cpu= (user + system CPU of the client
 * process(es) during the timed part, ns) and client_vcsw= (their voluntary
 * context switches: how often a client blocked waiting).
 *
 * Errors: "ERROR what= rc=" on stdout, exit 1. Every mode exits when its
 * parent dies.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <qb/qbipcc.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 10000
#define ID_ECHO 1
#define REQ_HDR ((size_t)sizeof(struct qb_ipc_request_header))
#define RES_HDR ((size_t)sizeof(struct qb_ipc_response_header))

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CPU time (user + system, ns) and voluntary context switches (times it blocked) of this process. */
struct usage {
  int64_t cpu;
  long vcsw;
};

static struct usage usage_now(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  struct usage u = {
    (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 + (int64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000,
    ru.ru_nvcsw,
  };
  return u;
}

static void die(const char *what, long rc) {
  printf("ERROR what=%s rc=%ld\n", what, rc);
  fflush(stdout);
  exit(1);
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples. */
static int64_t pct(const int64_t *s, size_t n, double q) {
  if (n == 0) return 0;
  size_t k = (size_t)(q * (double)n + 0.999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return s[k - 1];
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)((i * 7 + seed) & 0xff);
}

/* One ECHO request: header + payload. */
struct echo {
  struct qb_ipc_request_header hdr;
  unsigned char *payload;
  size_t size;
  char *rbuf;
  size_t rbuf_size;
};

static void echo_init(struct echo *e, size_t size, size_t rbuf_size) {
  memset(&e->hdr, 0, sizeof e->hdr);
  e->hdr.id = ID_ECHO;
  e->hdr.size = (int32_t)(REQ_HDR + size);
  e->size = size;
  e->payload = malloc(size ? size : 1);
  fill(e->payload, size, 1);
  e->rbuf_size = rbuf_size;
  e->rbuf = malloc(rbuf_size);
  if (!e->payload || !e->rbuf) die("malloc", -ENOMEM);
}

/*
 * Request sends that found no room in the request ring (-EAGAIN, nothing
 * sent) and were retried. A libqb server reclaims a request's ring chunk only
 * after its handler returns, i.e. after the response is visible: a client
 * sending max-size requests back to back can find the ring still full.
 */
static long send_retries;

/* Send one ECHO and wait for its response; checks the header (and the payload if asked). */
static void echo_once(qb_ipcc_connection_t *c, struct echo *e, int verify) {
  struct iovec iov[2] = {{&e->hdr, REQ_HDR}, {e->payload, e->size}};
  ssize_t rc;
  for (;;) {
    rc = qb_ipcc_sendv_recv(c, iov, e->size ? 2 : 1, e->rbuf, e->rbuf_size, TIMEOUT_MS);
    if (rc != -EAGAIN || !qb_ipcc_is_connected(c) || send_retries > 100000000) break;
    send_retries++;
    sched_yield();
  }
  if (rc < 0) die("sendv_recv", rc);
  const struct qb_ipc_response_header *res = (const void *)e->rbuf;
  if ((size_t)rc != RES_HDR + e->size || res->size != (int32_t)rc || res->error != 0 || res->id != ID_ECHO) die("echo-header", rc);
  if (verify && memcmp(e->rbuf + RES_HDR, e->payload, e->size) != 0) die("echo-payload", rc);
}

static qb_ipcc_connection_t *connect_or_die(const char *name, size_t max) {
  qb_ipcc_connection_t *c = qb_ipcc_connect(name, max);
  if (!c) die("connect", -errno);
  return c;
}

/* ------------------------------------------------------------------ modes */

static int mode_latency(const char *name, size_t size, long warmup, long iters, int throughput) {
  size_t max = throughput ? REQ_HDR + RES_HDR + size + 64 : 0;
  qb_ipcc_connection_t *c = connect_or_die(name, max);
  size_t bufsize = (size_t)qb_ipcc_get_buffer_size(c);
  if (bufsize < RES_HDR + size) die("buffer-size", (long)bufsize);
  struct echo e;
  echo_init(&e, size, bufsize);
  for (long i = 0; i < warmup; i++) echo_once(c, &e, 1);
  int64_t *t = malloc(sizeof *t * (size_t)(iters > 0 ? iters : 1));
  struct usage u0 = usage_now();
  int64_t start = now_ns();
  for (long i = 0; i < iters; i++) {
    int64_t t0 = now_ns();
    echo_once(c, &e, i == iters - 1);
    t[i] = now_ns() - t0;
  }
  int64_t total = now_ns() - start;
  struct usage u1 = usage_now();
  qb_ipcc_disconnect(c);
  int64_t sum = 0;
  for (long i = 0; i < iters; i++) sum += t[i];
  qsort(t, (size_t)iters, sizeof *t, cmp_i64);
  size_t n = (size_t)iters;
  if (throughput) {
    double seconds = (double)total / 1e9;
    printf("TPUT n=%ld seconds=%.6f bytes_per_s=%.0f p50=%lld retries=%ld client_cpu=%lld client_vcsw=%ld\n", iters, seconds,
           (double)size * (double)iters / seconds, (long long)pct(t, n, 0.5), send_retries, (long long)(u1.cpu - u0.cpu), u1.vcsw - u0.vcsw);
  } else {
    printf("LAT n=%ld p50=%lld p90=%lld p99=%lld min=%lld max=%lld mean=%.0f retries=%ld client_cpu=%lld client_vcsw=%ld\n", iters,
           (long long)pct(t, n, 0.5), (long long)pct(t, n, 0.9), (long long)pct(t, n, 0.99), (long long)t[0], (long long)t[n - 1],
           (double)sum / (double)n, send_retries, (long long)(u1.cpu - u0.cpu), u1.vcsw - u0.vcsw);
  }
  return 0;
}

/* One pipelining client (a child process): DEPTH in flight until the deadline, then drain. */
static void pipeline_client(const char *name, size_t size, long depth, long ms, size_t maxmsg, int ready_fd, int go_fd, int result_fd) {
  qb_ipcc_connection_t *c = connect_or_die(name, maxmsg);
  size_t bufsize = (size_t)qb_ipcc_get_buffer_size(c);
  unsigned char *msg = calloc(1, REQ_HDR + size);
  char *rbuf = malloc(bufsize);
  if (!msg || !rbuf) die("malloc", -ENOMEM);
  struct qb_ipc_request_header *h = (void *)msg;
  h->id = ID_ECHO;
  h->size = (int32_t)(REQ_HDR + size);
  fill(msg + REQ_HDR, size, 3);
  if (bufsize < RES_HDR + size) die("buffer-size", (long)bufsize);
  /* Barrier: say ready, wait for the parent to close the go pipe. */
  char b = 'r';
  if (write(ready_fd, &b, 1) != 1) die("ready", -errno);
  while (read(go_fd, &b, 1) > 0) {}
  struct usage u0 = usage_now();
  int64_t start = now_ns(), deadline = start + ms * 1000000LL;
  long sent = 0, got = 0, eagain = 0;
  int sending = 1;
  while (sending || got < sent) {
    while (sending && sent - got < depth) {
      ssize_t rc = qb_ipcc_send(c, msg, REQ_HDR + size);
      if (rc == -EAGAIN) {
        eagain++;
        break; /* flow control or full ring: read first */
      }
      if (rc < 0) die("send", rc);
      sent++;
    }
    ssize_t rc = qb_ipcc_recv(c, rbuf, bufsize, TIMEOUT_MS);
    if (rc < 0) die("recv", rc);
    const struct qb_ipc_response_header *res = (const void *)rbuf;
    if ((size_t)rc != RES_HDR + size || res->error != 0 || res->id != ID_ECHO) die("pipeline-header", rc);
    got++;
    if (sending && (got & 15) == 0 && now_ns() >= deadline) sending = 0;
  }
  int64_t end = now_ns();
  struct usage u1 = usage_now();
  qb_ipcc_disconnect(c);
  char line[160];
  int len = snprintf(line, sizeof line, "%ld %lld %lld %ld %lld %ld\n", got, (long long)start, (long long)end, eagain,
                     (long long)(u1.cpu - u0.cpu), u1.vcsw - u0.vcsw);
  if (write(result_fd, line, (size_t)len) != len) die("result", -errno);
  exit(0);
}

static int mode_pipeline(const char *name, size_t size, int clients, long depth, long ms, size_t maxmsg) {
  int ready[2], go[2], result[2];
  if (pipe(ready) < 0 || pipe(go) < 0 || pipe(result) < 0) die("pipe", -errno);
  pid_t *pids = calloc((size_t)clients, sizeof *pids);
  for (int i = 0; i < clients; i++) {
    pid_t pid = fork();
    if (pid < 0) die("fork", -errno);
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      close(ready[0]);
      close(go[1]);
      close(result[0]);
      pipeline_client(name, size, depth, ms, maxmsg, ready[1], go[0], result[1]);
    }
    pids[i] = pid;
  }
  close(ready[1]);
  close(go[0]);
  close(result[1]);
  for (int i = 0; i < clients; i++) {
    char b;
    if (read(ready[0], &b, 1) != 1) die("client-not-ready", i);
  }
  close(go[1]); /* go */
  long total = 0, eagain = 0, vcsw = 0;
  long long cpu = 0;
  int64_t first = INT64_MAX, last = 0;
  char counts[512] = "";
  FILE *f = fdopen(result[0], "r");
  for (int i = 0; i < clients; i++) {
    long got, ea, vc;
    long long s, e, cp;
    if (fscanf(f, "%ld %lld %lld %ld %lld %ld", &got, &s, &e, &ea, &cp, &vc) != 6) die("client-result", i);
    total += got;
    eagain += ea;
    cpu += cp;
    vcsw += vc;
    if (s < first) first = s;
    if (e > last) last = e;
    size_t used = strlen(counts);
    snprintf(counts + used, sizeof counts - used, "%s%ld", i ? "," : "", got);
  }
  int failed = 0;
  for (int i = 0; i < clients; i++) {
    int status;
    if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
  }
  if (failed) die("client-failed", failed);
  double seconds = (double)(last - first) / 1e9;
  printf("PIPE messages=%ld seconds=%.6f rate=%.0f per_client=%s eagain=%ld client_cpu=%lld client_vcsw=%ld\n", total, seconds,
         (double)total / seconds, counts, eagain, cpu, vcsw);
  return 0;
}

static int mode_connect(const char *name, size_t size, long ms) {
  size_t cap = 1 << 20, n = 0;
  int64_t *t = malloc(sizeof *t * cap);
  struct echo e;
  echo_init(&e, size, 65536);
  struct usage u0 = usage_now();
  int64_t start = now_ns(), deadline = start + ms * 1000000LL, end;
  do {
    int64_t t0 = now_ns();
    qb_ipcc_connection_t *c = connect_or_die(name, 0);
    echo_once(c, &e, 1);
    qb_ipcc_disconnect(c);
    end = now_ns();
    if (n < cap) t[n++] = end - t0;
  } while (end < deadline);
  struct usage u1 = usage_now();
  qsort(t, n, sizeof *t, cmp_i64);
  double seconds = (double)(end - start) / 1e9;
  printf("CONN n=%zu seconds=%.6f rate=%.1f p50=%lld p99=%lld client_cpu=%lld client_vcsw=%ld\n", n, seconds, (double)n / seconds,
         (long long)pct(t, n, 0.5), (long long)pct(t, n, 0.99), (long long)(u1.cpu - u0.cpu), u1.vcsw - u0.vcsw);
  return 0;
}

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  if (!d) return -1;
  while (readdir(d)) n++;
  closedir(d);
  return n - 3; /* ".", ".." and the directory's own fd */
}

static int mode_hold(const char *name, long count) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) die("setrlimit", -errno);
  }
  qb_ipcc_connection_t **conns = calloc((size_t)count, sizeof *conns);
  struct echo e;
  echo_init(&e, 64, 65536);
  for (long i = 0; i < count; i++) {
    conns[i] = connect_or_die(name, 0);
    echo_once(conns[i], &e, 1);
  }
  printf("HELD n=%ld fds=%d\n", count, count_fds());
  fflush(stdout);
  char line[64];
  if (!fgets(line, sizeof line, stdin)) {
    /* EOF: release as well */
  }
  for (long i = 0; i < count; i++) qb_ipcc_disconnect(conns[i]);
  printf("RELEASED\n");
  return 0;
}

static long arg_long(const char *s, const char *what) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < 0) {
    fprintf(stderr, "qb-load: bad %s: %s\n", what, s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 1;
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  const char *pin = getenv("QB_LOAD_CPU");
  if (pin && *pin) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(pin), &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) die("sched_setaffinity", -errno);
  }
  if (argc >= 6 && strcmp(argv[1], "latency") == 0)
    return mode_latency(argv[2], (size_t)arg_long(argv[3], "SIZE"), arg_long(argv[4], "WARMUP"), arg_long(argv[5], "ITERS"), 0);
  if (argc >= 6 && strcmp(argv[1], "throughput") == 0)
    return mode_latency(argv[2], (size_t)arg_long(argv[3], "SIZE"), arg_long(argv[4], "WARMUP"), arg_long(argv[5], "ITERS"), 1);
  if (argc >= 7 && strcmp(argv[1], "pipeline") == 0)
    return mode_pipeline(argv[2], (size_t)arg_long(argv[3], "SIZE"), (int)arg_long(argv[4], "CLIENTS"), arg_long(argv[5], "DEPTH"),
                         arg_long(argv[6], "MS"), argc >= 8 ? (size_t)arg_long(argv[7], "MAXMSG") : 0);
  if (argc >= 5 && strcmp(argv[1], "connect") == 0)
    return mode_connect(argv[2], (size_t)arg_long(argv[3], "SIZE"), arg_long(argv[4], "MS"));
  if (argc >= 4 && strcmp(argv[1], "hold") == 0) return mode_hold(argv[2], arg_long(argv[3], "COUNT"));
  fprintf(stderr,
          "usage: qb-load latency|throughput NAME SIZE WARMUP ITERS\n"
          "       qb-load pipeline NAME SIZE CLIENTS DEPTH MS [MAXMSG]\n"
          "       qb-load connect NAME SIZE MS\n"
          "       qb-load hold NAME COUNT\n");
  return 2;
}
