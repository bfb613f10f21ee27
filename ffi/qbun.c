/*
 * qbun's native helper: the few Linux syscalls Bun does not expose, compiled
 * at run time by TinyCC (bun:ffi `cc`). Conventions:
 *   - every function returning int gives >= 0 on success, -errno on failure;
 *   - functions returning a pointer take an `int32_t *err` out-parameter;
 *   - no C11 atomics and no __sync builtins (TinyCC has neither): shared
 *     state between threads is guarded by pthread mutexes.
 * Keep this file free of anything TinyCC rejects: it is also preprocessed at
 * build time (scripts/build-binary.ts) for machines without libc headers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <linux/futex.h>
#include <linux/io_uring.h>
#include <time.h>
#include <unistd.h>

#define NEG_ERRNO (-errno)

/* ------------------------------------------------------------------ errors */

int qbn_strerror(int err, char *buf, int len) {
  const char *s = strerror(err);
  int n = (int)strlen(s);
  if (n >= len) n = len - 1;
  memcpy(buf, s, n);
  buf[n] = 0;
  return n;
}

/* ------------------------------------------------------------------ files */

int qbn_close(int fd) { return close(fd) < 0 ? NEG_ERRNO : 0; }

int qbn_dup(int fd) {
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  return r < 0 ? NEG_ERRNO : r;
}

int qbn_fcntl(int fd, int cmd, int arg) {
  int r = fcntl(fd, cmd, arg);
  return r < 0 ? NEG_ERRNO : r;
}

int qbn_set_nonblocking(int fd, int on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return NEG_ERRNO;
  fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  return fcntl(fd, F_SETFL, fl) < 0 ? NEG_ERRNO : 0;
}

int qbn_open(const char *path, int flags, int mode) {
  int r = open(path, flags | O_CLOEXEC, mode);
  return r < 0 ? NEG_ERRNO : r;
}

int qbn_unlink(const char *path) { return unlink(path) < 0 ? NEG_ERRNO : 0; }

int qbn_rmdir(const char *path) { return rmdir(path) < 0 ? NEG_ERRNO : 0; }

int qbn_ftruncate(int fd, int64_t size) { return ftruncate(fd, (off_t)size) < 0 ? NEG_ERRNO : 0; }

/* out: [size, mode, uid, gid, type bits] ; returns 0 or -errno */
int qbn_fstat(int fd, int64_t *out) {
  struct stat st;
  if (fstat(fd, &st) < 0) return NEG_ERRNO;
  out[0] = st.st_size; out[1] = st.st_mode; out[2] = st.st_uid; out[3] = st.st_gid;
  out[4] = st.st_ino; out[5] = st.st_dev;
  return 0;
}

/* lstat by path; same layout as qbn_fstat */
int qbn_lstat(const char *path, int64_t *out) {
  struct stat st;
  if (lstat(path, &st) < 0) return NEG_ERRNO;
  out[0] = st.st_size; out[1] = st.st_mode; out[2] = st.st_uid; out[3] = st.st_gid;
  out[4] = st.st_ino; out[5] = st.st_dev;
  return 0;
}

int qbn_chmod(const char *path, int mode) { return chmod(path, mode) < 0 ? NEG_ERRNO : 0; }

int qbn_fchmod(int fd, int mode) { return fchmod(fd, (mode_t)mode) < 0 ? NEG_ERRNO : 0; }

int qbn_fchown(int fd, int uid, int gid) { return fchown(fd, (uid_t)uid, (gid_t)gid) < 0 ? NEG_ERRNO : 0; }

/* Reserve the blocks now, so that a full tmpfs fails here with ENOSPC rather
 * than later as SIGBUS on first touch of a mapped page. */
int qbn_fallocate(int fd, int64_t offset, int64_t len) {
  int e = posix_fallocate(fd, (off_t)offset, (off_t)len);
  return e ? -e : 0;
}

/* Re-open an fd through /proc with new access flags: a read-only reopen of a
 * read-write shared-memory fd is a new open file description, so a peer that
 * receives it cannot mmap it writable. */
int qbn_reopen(int fd, int flags) {
  char path[40];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int r = open(path, flags | O_CLOEXEC);
  return r < 0 ? NEG_ERRNO : r;
}

int qbn_memfd_create(const char *name, int flags) {
  int r = memfd_create(name, flags | MFD_CLOEXEC);
  return r < 0 ? NEG_ERRNO : r;
}

int qbn_shm_open(const char *name, int oflag, int mode) {
  int r = shm_open(name, oflag | O_CLOEXEC, mode);
  return r < 0 ? NEG_ERRNO : r;
}

int qbn_shm_unlink(const char *name) { return shm_unlink(name) < 0 ? NEG_ERRNO : 0; }

/* An unnamed temporary file in `dir`: O_TMPFILE where the filesystem has it,
 * otherwise mkstemp + unlink. Nothing is left in the directory either way. */
int qbn_tmpfile(const char *dir, char *scratch, int scratch_len) {
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  int n = (int)strlen(dir);
  if (n + 16 > scratch_len) return -ENAMETOOLONG;
  memcpy(scratch, dir, n);
  memcpy(scratch + n, "/qbun-XXXXXX", 13);
  fd = mkostemp(scratch, O_CLOEXEC);
  if (fd < 0) return NEG_ERRNO;
  unlink(scratch);
  return fd;
}

/* ---------------------------------------------------------------- mapping */

void *qbn_mmap(int64_t len, int prot, int flags, int fd, int64_t off, int32_t *err) {
  void *p = mmap(NULL, (size_t)len, prot, flags, fd, (off_t)off);
  if (p == MAP_FAILED) { *err = NEG_ERRNO; return NULL; }
  *err = 0;
  return p;
}

/* Map `fd` twice back to back so that a record crossing the end of the ring
 * is contiguous in memory: reserve 2*len, then place both halves. */
void *qbn_mmap_circular(int fd, int64_t len, int prot, int32_t *err) {
  char *base = mmap(NULL, (size_t)len * 2, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) { *err = NEG_ERRNO; return NULL; }
  void *a = mmap(base, (size_t)len, prot, MAP_SHARED | MAP_FIXED, fd, 0);
  void *b = a == MAP_FAILED ? MAP_FAILED : mmap(base + len, (size_t)len, prot, MAP_SHARED | MAP_FIXED, fd, 0);
  if (a == MAP_FAILED || b == MAP_FAILED) {
    *err = NEG_ERRNO;
    munmap(base, (size_t)len * 2);
    return NULL;
  }
  *err = 0;
  return base;
}

int qbn_munmap(void *p, int64_t len) { return munmap(p, (size_t)len) < 0 ? NEG_ERRNO : 0; }

/* ArrayBuffer deallocator (bun:ffi toArrayBuffer's 5-argument form): runs when
 * the buffer is detached or collected, so memory is unmapped only once no JS
 * view can reach it. `ctx` carries the mapping length. */
void qbn_unmap_deallocator(void *bytes, void *ctx) { munmap(bytes, (size_t)(intptr_t)ctx); }

/* ------------------------------------------------------- SIGBUS guards */
/*
 * A peer that can truncate a file we have mapped (libqb's ring files are
 * opened by path, and the client may ftruncate them) would make our next
 * access to a page beyond the new end of file raise SIGBUS -- fatal, and a
 * JS process cannot catch it. Guarded regions are repaired instead: the
 * handler maps anonymous zero pages over the region from the faulting page
 * on and marks it tripped; the access is retried and succeeds, and JS checks
 * the flag and drops the peer. Faults elsewhere go to the previous handler.
 * The registry is only changed on the JS thread, which is also the only
 * thread that touches guarded memory, so the handler never sees it mid-edit.
 */
typedef struct { uintptr_t start, end; volatile int tripped, used; } qbn_guard;

static qbn_guard *guards;
/* Repairs so far, any region: JS reads it through a view before asking about one. */
static volatile int32_t guard_trips;
static int guard_cap;
static struct sigaction previous_sigbus;
static int sigbus_installed;
static uintptr_t guard_page_mask;

static void on_sigbus(int sig, siginfo_t *info, void *context) {
  uintptr_t addr = (uintptr_t)info->si_addr;
  int i;
  for (i = 0; i < guard_cap; i++) {
    qbn_guard *g = &guards[i];
    if (g->used && addr >= g->start && addr < g->end) {
      uintptr_t page = addr & guard_page_mask;
      mmap((void *)page, g->end - page, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      g->tripped = 1;
      guard_trips++;
      return;
    }
  }
  if (previous_sigbus.sa_flags & SA_SIGINFO) {
    previous_sigbus.sa_sigaction(sig, info, context);
  } else if (previous_sigbus.sa_handler == SIG_IGN) {
    return;
  } else if (previous_sigbus.sa_handler != SIG_DFL) {
    previous_sigbus.sa_handler(sig);
  } else {
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS);
  }
}

/* Guard [start, start + len); returns a slot id (>= 0) or -errno. */
int qbn_guard_add(void *start, int64_t len) {
  if (!sigbus_installed) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    guard_page_mask = ~((uintptr_t)sysconf(_SC_PAGESIZE) - 1);
    if (sigaction(SIGBUS, &sa, &previous_sigbus) < 0) return NEG_ERRNO;
    sigbus_installed = 1;
  }
  int i;
  for (i = 0; i < guard_cap; i++) if (!guards[i].used) break;
  if (i == guard_cap) {
    /* Grow by copying into a new array; the old one is kept (never freed) so a
     * fault handled during the swap still reads valid memory. */
    int ncap = guard_cap ? guard_cap * 2 : 256;
    qbn_guard *n = calloc((size_t)ncap, sizeof *n);
    if (!n) return -ENOMEM;
    if (guard_cap) memcpy(n, guards, sizeof *n * (size_t)guard_cap);
    guards = n;
    guard_cap = ncap;
  }
  guards[i].start = (uintptr_t)start;
  guards[i].end = (uintptr_t)start + (uintptr_t)len;
  guards[i].tripped = 0;
  guards[i].used = 1;
  return i;
}

/* Address of the repair counter (4 bytes, static). */
void *qbn_guard_trips_address(void) { return (void *)&guard_trips; }

/* 1 if the region was repaired after a SIGBUS (its file shrank). */
int qbn_guard_tripped(int slot) { return slot >= 0 && slot < guard_cap && guards[slot].tripped; }

void qbn_guard_release(int slot) {
  if (slot >= 0 && slot < guard_cap) guards[slot].used = 0;
}

/* ArrayBuffer deallocator for a guarded mapping: `ctx` is the guard slot + 1
 * (Bun refuses a null context). */
void qbn_unmap_guarded_deallocator(void *bytes, void *ctx) {
  int slot = (int)(intptr_t)ctx - 1;
  size_t len = (size_t)(guards[slot].end - guards[slot].start);
  munmap(bytes, len);
  guards[slot].used = 0;
}

/* --------------------------------------------------------------- sockets */

int qbn_socket(int type) {
  int r = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return r < 0 ? NEG_ERRNO : r;
}

int qbn_socketpair(int type, int32_t *out) {
  int sv[2];
  if (socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) return NEG_ERRNO;
  out[0] = sv[0]; out[1] = sv[1];
  return 0;
}

int qbn_bind(int fd, const void *addr, int len) {
  return bind(fd, (const struct sockaddr *)addr, (socklen_t)len) < 0 ? NEG_ERRNO : 0;
}

int qbn_listen(int fd, int backlog) { return listen(fd, backlog) < 0 ? NEG_ERRNO : 0; }

int qbn_connect(int fd, const void *addr, int len) {
  return connect(fd, (const struct sockaddr *)addr, (socklen_t)len) < 0 ? NEG_ERRNO : 0;
}

/* addr: 110-byte buffer; meta[0] in/out = address length */
int qbn_accept(int fd, void *addr, int32_t *meta) {
  socklen_t len = (socklen_t)meta[0];
  int r = accept4(fd, (struct sockaddr *)addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (r < 0) return NEG_ERRNO;
  meta[0] = (int32_t)len;
  return r;
}

int qbn_getsockname(int fd, void *addr, int32_t *meta) {
  socklen_t len = (socklen_t)meta[0];
  if (getsockname(fd, (struct sockaddr *)addr, &len) < 0) return NEG_ERRNO;
  meta[0] = (int32_t)len;
  return 0;
}

int qbn_getpeername(int fd, void *addr, int32_t *meta) {
  socklen_t len = (socklen_t)meta[0];
  if (getpeername(fd, (struct sockaddr *)addr, &len) < 0) return NEG_ERRNO;
  meta[0] = (int32_t)len;
  return 0;
}

int qbn_setsockopt_int(int fd, int level, int opt, int value) {
  return setsockopt(fd, level, opt, &value, sizeof value) < 0 ? NEG_ERRNO : 0;
}

int qbn_getsockopt_int(int fd, int level, int opt) {
  int value = 0;
  socklen_t len = sizeof value;
  if (getsockopt(fd, level, opt, &value, &len) < 0) return NEG_ERRNO;
  return value;
}

/* out: [pid, uid, gid] */
int qbn_peercred(int fd, int32_t *out) {
  struct ucred c;
  socklen_t len = sizeof c;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) < 0) return NEG_ERRNO;
  out[0] = c.pid; out[1] = (int32_t)c.uid; out[2] = (int32_t)c.gid;
  return 0;
}

int qbn_shutdown(int fd, int how) { return shutdown(fd, how) < 0 ? NEG_ERRNO : 0; }

int qbn_send(int fd, const void *data, int64_t len, int flags) {
  ssize_t r = send(fd, data, (size_t)len, flags | MSG_NOSIGNAL);
  return r < 0 ? NEG_ERRNO : (int)r;
}

/* One message from two buffers (a header and its payload) without joining them first. */
int qbn_send2(int fd, const void *a, int64_t alen, const void *b, int64_t blen, int flags) {
  struct iovec iov[2];
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  iov[0].iov_base = (void *)a; iov[0].iov_len = (size_t)alen;
  iov[1].iov_base = (void *)b; iov[1].iov_len = (size_t)blen;
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  ssize_t r = sendmsg(fd, &msg, flags | MSG_NOSIGNAL);
  return r < 0 ? NEG_ERRNO : (int)r;
}

int qbn_recv(int fd, void *data, int64_t len, int flags) {
  ssize_t r = recv(fd, data, (size_t)len, flags);
  return r < 0 ? NEG_ERRNO : (int)r;
}

/*
 * sendmsg with optional destination, SCM_RIGHTS fds and SCM_CREDENTIALS.
 * cred: NULL, or [pid, uid, gid] to send explicitly (the kernel checks them).
 */
int qbn_sendmsg(int fd, const void *data, int64_t len, const void *addr, int addrlen,
                const int32_t *fds, int nfds, const int32_t *cred, int flags) {
  struct iovec iov;
  struct msghdr msg;
  size_t space = 0;
  memset(&msg, 0, sizeof msg);
  iov.iov_base = (void *)data;
  iov.iov_len = (size_t)len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (addr && addrlen > 0) { msg.msg_name = (void *)addr; msg.msg_namelen = (socklen_t)addrlen; }
  if (nfds > 0) space += CMSG_SPACE(sizeof(int) * (size_t)nfds);
  if (cred) space += CMSG_SPACE(sizeof(struct ucred));
  char stackbuf[256];
  char *ctrl = NULL;
  if (space > 0) {
    ctrl = space <= sizeof stackbuf ? stackbuf : malloc(space);
    if (!ctrl) return -ENOMEM;
    memset(ctrl, 0, space);
    msg.msg_control = ctrl;
    msg.msg_controllen = space;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (nfds > 0) {
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
      c = CMSG_NXTHDR(&msg, c);
    }
    if (cred) {
      struct ucred u;
      u.pid = cred[0]; u.uid = (uid_t)cred[1]; u.gid = (gid_t)cred[2];
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_CREDENTIALS;
      c->cmsg_len = CMSG_LEN(sizeof u);
      memcpy(CMSG_DATA(c), &u, sizeof u);
    }
  }
  ssize_t r = sendmsg(fd, &msg, flags | MSG_NOSIGNAL);
  int e = errno;
  if (ctrl && ctrl != stackbuf) free(ctrl);
  return r < 0 ? -e : (int)r;
}

/*
 * recvmsg collecting SCM_RIGHTS fds (received close-on-exec) and
 * SCM_CREDENTIALS. meta layout (int32):
 *   [0] in: address buffer size; out: address length
 *   [1] out: msg_flags (MSG_TRUNC, MSG_CTRUNC, ...)
 *   [2] out: number of fds written to fds_out
 *   [3] out: 1 if credentials arrived, then [4] pid, [5] uid, [6] gid
 *   [7] out: fds that arrived beyond max_fds and were closed here (the
 *            control buffer has slack from CMSG alignment and the room kept
 *            for credentials, so the kernel may deliver more than asked for
 *            without setting MSG_CTRUNC)
 * The first max_fds fds are returned: the caller owns them.
 */
int qbn_recvmsg(int fd, void *data, int64_t len, void *addr, int32_t *meta,
                int32_t *fds_out, int max_fds, int flags) {
  struct iovec iov;
  struct msghdr msg;
  size_t space = CMSG_SPACE(sizeof(int) * (size_t)(max_fds > 0 ? max_fds : 0)) + CMSG_SPACE(sizeof(struct ucred));
  char stackbuf[512];
  char *ctrl = space <= sizeof stackbuf ? stackbuf : malloc(space);
  if (!ctrl) return -ENOMEM;
  memset(&msg, 0, sizeof msg);
  iov.iov_base = data;
  iov.iov_len = (size_t)len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (addr && meta[0] > 0) { msg.msg_name = addr; msg.msg_namelen = (socklen_t)meta[0]; }
  msg.msg_control = ctrl;
  msg.msg_controllen = space;
  ssize_t r = recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC);
  if (r < 0) {
    int e = errno;
    if (ctrl != stackbuf) free(ctrl);
    return -e;
  }
  meta[0] = addr ? (int32_t)msg.msg_namelen : 0;
  meta[1] = msg.msg_flags;
  meta[2] = 0;
  meta[3] = 0;
  meta[7] = 0;
  int nout = 0;
  struct cmsghdr *c;
  for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_RIGHTS) {
      int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      int *p = (int *)CMSG_DATA(c);
      int i;
      for (i = 0; i < n; i++) {
        int v;
        memcpy(&v, p + i, sizeof v);
        if (nout < max_fds) fds_out[nout++] = v;
        else { close(v); meta[7]++; }
      }
    } else if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
      struct ucred u;
      memcpy(&u, CMSG_DATA(c), sizeof u);
      meta[3] = 1; meta[4] = u.pid; meta[5] = (int32_t)u.uid; meta[6] = (int32_t)u.gid;
    }
  }
  meta[2] = nout;
  if (ctrl != stackbuf) free(ctrl);
  return (int)r;
}

/* ------------------------------------------------------------ semaphores */

int qbn_sem_init(void *sem, int pshared, int value) { return sem_init((sem_t *)sem, pshared, (unsigned)value) < 0 ? NEG_ERRNO : 0; }
int qbn_sem_destroy(void *sem) { return sem_destroy((sem_t *)sem) < 0 ? NEG_ERRNO : 0; }
int qbn_sem_post(void *sem) { return sem_post((sem_t *)sem) < 0 ? NEG_ERRNO : 0; }
int qbn_sem_trywait(void *sem) { return sem_trywait((sem_t *)sem) < 0 ? NEG_ERRNO : 0; }
int qbn_sem_getvalue(void *sem) {
  int v = 0;
  if (sem_getvalue((sem_t *)sem, &v) < 0) return NEG_ERRNO;
  return v;
}
int qbn_sizeof_sem(void) { return (int)sizeof(sem_t); }
int qbn_page_size(void) { return (int)sysconf(_SC_PAGESIZE); }

static void deadline_after(struct timespec *ts, int64_t ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) { ts->tv_sec++; ts->tv_nsec -= 1000000000; }
}

/* Blocking wait with a timeout (ms < 0: forever). Retries EINTR. */
static int sem_wait_ms(sem_t *sem, int64_t ms) {
  int r;
  if (ms < 0) {
    do r = sem_wait(sem); while (r < 0 && errno == EINTR);
  } else {
    struct timespec ts;
    deadline_after(&ts, ms);
    do r = sem_clockwait(sem, CLOCK_MONOTONIC, &ts); while (r < 0 && errno == EINTR);
  }
  return r < 0 ? NEG_ERRNO : 0;
}

int qbn_sem_timedwait(void *sem, int64_t ms) { return sem_wait_ms((sem_t *)sem, ms); }

/* ---------------------------------------------------------------- reactor */
/*
 * Readiness for Bun's event loop without polling. JS asks for one report when
 * an fd becomes readable/writable ("arm"); the report reaches JS through a
 * doorbell socket whose other end Bun itself watches (Bun.connect({ fd })),
 * and JS then drains the reports. Two backends:
 *
 * - io_uring (preferred): each arm is a one-shot IORING_OP_POLL_ADD,
 *   hard-linked to a 1-byte IORING_OP_SEND on the doorbell. The kernel runs
 *   both as task work on the submitting thread -- Bun's -- so a wake-up costs
 *   one thread wake, as for Bun's own sockets. Completions are read from the
 *   completion ring in drain.
 * - epoll thread (fallback where io_uring is missing or disabled): a thread
 *   blocks in epoll_wait (EPOLLONESHOT interest) and queues the reports.
 *
 * Either way, semaphore waits run on threads of their own and queue their
 * results in the same locked queue; the doorbell is written when that queue
 * turns non-empty. Every report is a triple (token, value, clear): `value` is
 * the poll bits or a -errno/result, `clear` the interest bits the report
 * ends (epoll one-shot: all of them; io_uring: that poll's own mask).
 */
enum { BACKEND_EPOLL = 1, BACKEND_URING = 2 };

typedef struct qbn_reactor {
  int backend;
  int doorbell;       /* our end of the socketpair; Bun owns the other */
  pthread_mutex_t lock;
  uint32_t *queue;    /* triples (token, value, clear) from helper threads */
  int qlen, qcap;     /* in triples */
  int rung;           /* doorbell written since last drain */
  /* epoll backend */
  int epfd;
  int stop_pipe[2];   /* written once to stop the epoll thread */
  pthread_t thread;
  /* io_uring backend */
  int ring_fd;
  char *sq_map, *cq_map;
  size_t sq_len, cq_len;
  struct io_uring_sqe *sqes;
  size_t sqes_len;
  unsigned *sq_tail, *sq_mask, *sq_array, *sq_flags;
  unsigned *cq_head, *cq_tail, *cq_mask;
  struct io_uring_cqe *cqes;
  unsigned features;
  int futex_ok;       /* IORING_OP_FUTEX_WAIT usable for semaphores */
  char bell_byte;
} qbn_reactor;

static void ring_doorbell_locked(qbn_reactor *r) {
  if (!r->rung) {
    char one = 1;
    r->rung = 1;
    while (send(r->doorbell, &one, 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EINTR) {}
  }
}

static int reactor_push_locked(qbn_reactor *r, uint32_t token, uint32_t value, uint32_t clear) {
  if (r->qlen == r->qcap) {
    int ncap = r->qcap ? r->qcap * 2 : 256;
    uint32_t *nq = realloc(r->queue, sizeof(uint32_t) * 3 * (size_t)ncap);
    if (!nq) return -ENOMEM;
    r->queue = nq;
    r->qcap = ncap;
  }
  r->queue[r->qlen * 3] = token;
  r->queue[r->qlen * 3 + 1] = value;
  r->queue[r->qlen * 3 + 2] = clear;
  r->qlen++;
  ring_doorbell_locked(r);
  return 0;
}

static void reactor_push(qbn_reactor *r, uint32_t token, uint32_t value, uint32_t clear) {
  pthread_mutex_lock(&r->lock);
  reactor_push_locked(r, token, value, clear);
  pthread_mutex_unlock(&r->lock);
}

/*
 * struct epoll_event is packed on x86_64 (12 bytes), but glibc spells that
 * with __attribute__((packed)), which its headers drop for compilers that
 * do not define __GNUC__ -- TinyCC among them, giving a 16-byte struct and
 * garbled events. So the helper lays the events out by hand.
 */
#if defined(__x86_64__)
#define EV_SIZE 12
#define EV_DATA 4
#else
#define EV_SIZE 16
#define EV_DATA 8
#endif
#define EV_BATCH 64

static void ev_put(char *ev, uint32_t events, uint64_t data) {
  memset(ev, 0, EV_SIZE);
  memcpy(ev, &events, 4);
  memcpy(ev + EV_DATA, &data, 8);
}

static void *epoll_thread_main(void *arg) {
  qbn_reactor *r = arg;
  char evs[EV_BATCH * EV_SIZE];
  for (;;) {
    int n = epoll_wait(r->epfd, (struct epoll_event *)evs, EV_BATCH, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    int stop = 0, i;
    pthread_mutex_lock(&r->lock);
    for (i = 0; i < n; i++) {
      uint32_t events;
      uint64_t token;
      memcpy(&events, evs + i * EV_SIZE, 4);
      memcpy(&token, evs + i * EV_SIZE + EV_DATA, 8);
      if (token == UINT64_MAX) { stop = 1; continue; }
      reactor_push_locked(r, (uint32_t)token, events, 0xFFFFFFFFu);
    }
    pthread_mutex_unlock(&r->lock);
    if (stop) break;
  }
  return NULL;
}

static int epoll_backend_start(qbn_reactor *r) {
  r->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (r->epfd < 0) return NEG_ERRNO;
  if (pipe2(r->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
    int e = errno;
    close(r->epfd);
    return -e;
  }
  char ev[EV_SIZE];
  ev_put(ev, EPOLLIN, UINT64_MAX);
  epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->stop_pipe[0], (struct epoll_event *)ev);
  int e = pthread_create(&r->thread, NULL, epoll_thread_main, r);
  if (e) {
    close(r->epfd); close(r->stop_pipe[0]); close(r->stop_pipe[1]);
    return -e;
  }
  r->backend = BACKEND_EPOLL;
  return 0;
}

/* --- io_uring, raw syscalls (no liburing). x86_64 only: TinyCC has no
 * atomics, and there plain aligned loads/stores plus the syscalls' own
 * barriers give the ordering the rings need. Completions are posted by task
 * work on this (Bun's) thread, so reaping races with nobody. */
#if defined(__x86_64__)
#define URING_ENTRIES 256
#define URING_CQ_ENTRIES 4096
#define COMPILER_BARRIER() __asm__ volatile("" ::: "memory")

static void uring_unmap(qbn_reactor *r) {
  if (r->sqes && (void *)r->sqes != MAP_FAILED) munmap(r->sqes, r->sqes_len);
  if (r->cq_map && (void *)r->cq_map != MAP_FAILED && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_len);
  if (r->sq_map && (void *)r->sq_map != MAP_FAILED) munmap(r->sq_map, r->sq_len);
  if (r->ring_fd >= 0) close(r->ring_fd);
  r->ring_fd = -1;
}

/* Not in every distribution's <linux/io_uring.h> yet (Linux 6.7 ABI). */
#define IORING_OP_FUTEX_WAIT_ 51
#define FUTEX2_SIZE_U32_ 0x02
#define FUTEX2_PRIVATE_ 128
#define FUTEX_BITSET_MATCH_ANY_ 0xffffffffu
/* glibc's sem_t on x86_64: one 64-bit word, the count in the low half and
 * the number of sleeping waiters in the high half; sem_post calls
 * futex_wake on the low half only when that number is non-zero. */
#define SEM_ONE_WAITER ((uint64_t)1 << 32)

/* glibc passes FUTEX_PRIVATE_FLAG in the word after the count for a
 * process-shared semaphore (its futex calls then drop the flag), 0 for a
 * private one. */
static int sem_is_private(void *sem) { return ((volatile int *)sem)[2] == 0; }

static uint64_t cas64(volatile uint64_t *p, uint64_t expected, uint64_t desired) {
  uint64_t prev = expected;
  __asm__ volatile("lock; cmpxchgq %2, %1" : "+a"(prev), "+m"(*p) : "r"(desired) : "memory", "cc");
  return prev;
}

static void add64(volatile uint64_t *p, uint64_t delta) {
  __asm__ volatile("lock; addq %1, %0" : "+m"(*p) : "r"(delta) : "memory", "cc");
}

/* The word layout above, checked on a real semaphore of this libc. */
static int sem_layout_ok(void) {
  uint64_t mem[4] = {0, 0, 0, 0};
  sem_t *sem = (sem_t *)mem;
  if (sizeof(sem_t) < 16 || sem_init(sem, 1, 3) < 0) return 0;
  int ok = mem[0] == 3 && !sem_is_private(sem);
  sem_post(sem);
  ok = ok && mem[0] == 4 && sem_trywait(sem) == 0 && mem[0] == 3;
  add64(&mem[0], SEM_ONE_WAITER);
  int v = -1;
  ok = ok && sem_getvalue(sem, &v) == 0 && v == 3 && cas64(&mem[0], SEM_ONE_WAITER + 3, 2) == SEM_ONE_WAITER + 3 && mem[0] == 2;
  sem_destroy(sem);
  return ok;
}

static int uring_backend_start(qbn_reactor *r) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
  p.cq_entries = URING_CQ_ENTRIES;
  r->ring_fd = (int)syscall(__NR_io_uring_setup, URING_ENTRIES, &p);
  if (r->ring_fd < 0) { r->ring_fd = -1; return NEG_ERRNO; }
  /* Needed: no dropped completions, and the three operations we use. */
  if (!(p.features & IORING_FEAT_NODROP)) { uring_unmap(r); return -ENOTSUP; }
  {
    size_t plen = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *probe = calloc(1, plen);
    if (!probe) { uring_unmap(r); return -ENOMEM; }
    int ok = syscall(__NR_io_uring_register, r->ring_fd, IORING_REGISTER_PROBE, probe, 256) == 0 &&
             probe->last_op >= IORING_OP_SEND &&
             (probe->ops[IORING_OP_POLL_ADD].flags & IO_URING_OP_SUPPORTED) &&
             (probe->ops[IORING_OP_POLL_REMOVE].flags & IO_URING_OP_SUPPORTED) &&
             (probe->ops[IORING_OP_SEND].flags & IO_URING_OP_SUPPORTED);
    r->futex_ok = ok && probe->last_op >= IORING_OP_FUTEX_WAIT_ &&
                  (probe->ops[IORING_OP_FUTEX_WAIT_].flags & IO_URING_OP_SUPPORTED) &&
                  (probe->ops[IORING_OP_ASYNC_CANCEL].flags & IO_URING_OP_SUPPORTED) && sem_layout_ok();
    free(probe);
    if (!ok) { uring_unmap(r); return -ENOTSUP; }
  }
  r->features = p.features;
  r->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  r->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (p.features & IORING_FEAT_SINGLE_MMAP) {
    if (r->cq_len > r->sq_len) r->sq_len = r->cq_len;
    r->cq_len = r->sq_len;
  }
  r->sq_map = mmap(NULL, r->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->ring_fd, IORING_OFF_SQ_RING);
  if ((void *)r->sq_map == MAP_FAILED) { int e = errno; r->sq_map = NULL; uring_unmap(r); return -e; }
  if (p.features & IORING_FEAT_SINGLE_MMAP) r->cq_map = r->sq_map;
  else {
    r->cq_map = mmap(NULL, r->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->ring_fd, IORING_OFF_CQ_RING);
    if ((void *)r->cq_map == MAP_FAILED) { int e = errno; r->cq_map = NULL; uring_unmap(r); return -e; }
  }
  r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
  r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->ring_fd, IORING_OFF_SQES);
  if ((void *)r->sqes == MAP_FAILED) { int e = errno; r->sqes = NULL; uring_unmap(r); return -e; }
  r->sq_tail = (unsigned *)(r->sq_map + p.sq_off.tail);
  r->sq_mask = (unsigned *)(r->sq_map + p.sq_off.ring_mask);
  r->sq_array = (unsigned *)(r->sq_map + p.sq_off.array);
  r->sq_flags = (unsigned *)(r->sq_map + p.sq_off.flags);
  r->cq_head = (unsigned *)(r->cq_map + p.cq_off.head);
  r->cq_tail = (unsigned *)(r->cq_map + p.cq_off.tail);
  r->cq_mask = (unsigned *)(r->cq_map + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(r->cq_map + p.cq_off.cqes);
  r->bell_byte = 1;
  r->backend = BACKEND_URING;
  return 0;
}

/* Next free SQE (the SQ is always drained by the enter that follows). */
static struct io_uring_sqe *uring_sqe(qbn_reactor *r, unsigned *tail) {
  unsigned idx = *tail & *r->sq_mask;
  struct io_uring_sqe *sqe = &r->sqes[idx];
  memset(sqe, 0, sizeof *sqe);
  r->sq_array[idx] = idx;
  (*tail)++;
  return sqe;
}

static int uring_submit(qbn_reactor *r, unsigned tail, unsigned count) {
  COMPILER_BARRIER();
  *(volatile unsigned *)r->sq_tail = tail;
  /* A short submit leaves the rest queued: submit it too, or a later wait's
   * doorbell would be the one left behind. */
  while (count > 0) {
    int n = (int)syscall(__NR_io_uring_enter, r->ring_fd, count, 0, 0, NULL, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return NEG_ERRNO;
    if (n == 0) return -EBUSY;
    count -= (unsigned)n;
  }
  return 0;
}

/* The 1-byte send on the doorbell that a wait is hard-linked to: it runs when
 * the wait completes, however it completes, and wakes Bun's loop. */
static void uring_doorbell_sqe(qbn_reactor *r, unsigned *tail) {
  struct io_uring_sqe *bell = uring_sqe(r, tail);
  bell->opcode = IORING_OP_SEND;
  bell->fd = r->doorbell;
  bell->addr = (uint64_t)(uintptr_t)&r->bell_byte;
  bell->len = 1;
  bell->msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
  bell->user_data = 0;
  if (r->features & IORING_FEAT_CQE_SKIP) bell->flags = IOSQE_CQE_SKIP_SUCCESS;
}

/* One-shot poll for `events`, hard-linked to a doorbell byte. The poll's
 * user_data carries the token (low 32 bits) and its mask (high 32). */
static int uring_arm(qbn_reactor *r, int fd, uint32_t events, uint32_t token) {
  unsigned tail = *r->sq_tail;
  struct io_uring_sqe *poll = uring_sqe(r, &tail);
  poll->opcode = IORING_OP_POLL_ADD;
  poll->fd = fd;
  poll->poll32_events = events;
  poll->user_data = ((uint64_t)events << 32) | token;
  poll->flags = IOSQE_IO_HARDLINK;
  uring_doorbell_sqe(r, &tail);
  return uring_submit(r, tail, 2);
}

/* Cancel the poll armed with (token, events); its completion (-ECANCELED)
 * is ignored by JS, which has forgotten the token by then. */
static int uring_cancel(qbn_reactor *r, uint32_t events, uint32_t token) {
  unsigned tail = *r->sq_tail;
  struct io_uring_sqe *rm = uring_sqe(r, &tail);
  rm->opcode = IORING_OP_POLL_REMOVE;
  rm->fd = -1;
  rm->addr = ((uint64_t)events << 32) | token;
  rm->user_data = 0;
  return uring_submit(r, tail, 1);
}

static int uring_reap(qbn_reactor *r, uint32_t *out, int cap) {
  int n = 0;
  for (;;) {
    unsigned head = *r->cq_head;
    unsigned tail = *(volatile unsigned *)r->cq_tail;
    COMPILER_BARRIER();
    while (head != tail && n < cap) {
      struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
      uint32_t token = (uint32_t)c->user_data;
      head++;
      if (token == 0) continue; /* doorbell sends and poll removals */
      out[n * 3] = token;
      out[n * 3 + 1] = (uint32_t)c->res;
      out[n * 3 + 2] = (uint32_t)(c->user_data >> 32);
      n++;
    }
    COMPILER_BARRIER();
    *(volatile unsigned *)r->cq_head = head;
    /* Completions that did not fit the ring wait in the kernel: flush them. */
    if (n < cap && (*(volatile unsigned *)r->sq_flags & IORING_SQ_CQ_OVERFLOW)) {
      syscall(__NR_io_uring_enter, r->ring_fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);
      continue;
    }
    return n;
  }
}

/* sem_post `n` times in one step: add n to the count, then wake up to n
 * sleepers with one futex call (glibc's sem_post makes a futex call per post
 * while anyone sleeps). Same word protocol as glibc (see SEM_ONE_WAITER);
 * the futex is process-shared unless the semaphore was made private. */
static int sem_layout_checked = -1;

int qbn_sem_post_many(void *sem, int n) {
  if (n <= 0) return 0;
  if (sem_layout_checked < 0) sem_layout_checked = sem_layout_ok();
  if (!sem_layout_checked) {
    for (int i = 0; i < n; i++) if (sem_post((sem_t *)sem) < 0) return NEG_ERRNO;
    return 0;
  }
  volatile uint64_t *word = sem;
  uint64_t d = *word;
  for (;;) {
    if ((uint64_t)(uint32_t)d + (uint64_t)n > (uint64_t)SEM_VALUE_MAX) return -EOVERFLOW;
    uint64_t prev = cas64(word, d, d + (uint64_t)n);
    if (prev == d) break;
    d = prev;
  }
  uint32_t sleepers = (uint32_t)(d >> 32);
  if (sleepers > 0) {
    int op = FUTEX_WAKE | (sem_is_private(sem) ? FUTEX_PRIVATE_FLAG : 0);
    syscall(SYS_futex, (uint32_t *)sem, op, (int)(sleepers < (uint32_t)n ? sleepers : (uint32_t)n), NULL, NULL, 0);
  }
  return 0;
}

/*
 * Semaphore waits without a helper thread (io_uring backend, Linux >= 6.7):
 * a wait registers itself in the semaphore's waiter count, so that sem_post
 * wakes the futex, and sleeps in IORING_OP_FUTEX_WAIT on the count while it
 * reads 0, hard-linked to a doorbell byte like a poll. The wake completes as
 * task work on this thread. The count is taken by compare-and-swap on the
 * word, as sem_wait does. A post between the check and the sleep makes the
 * futex wait fail with EAGAIN at once: no wake-up is lost.
 */
int qbn_semfutex_supported(qbn_reactor *r) { return r->backend == BACKEND_URING && r->futex_ok; }

/* Take one count if there is one (leaving the waiter count too when
 * `registered`). 1: taken, 0: the count is 0. */
int qbn_semfutex_take(void *sem, int registered) {
  volatile uint64_t *word = sem;
  uint64_t d = *word;
  for (;;) {
    if ((uint32_t)d == 0) return 0;
    uint64_t prev = cas64(word, d, d - 1 - (registered ? SEM_ONE_WAITER : 0));
    if (prev == d) return 1;
    d = prev;
  }
}

void qbn_semfutex_register(void *sem) { add64(sem, SEM_ONE_WAITER); }
/* Leave the waiter count. A sleep the kernel had already woken when it was
 * cancelled took a wake-up meant for some sleeper: pass it on, as a woken
 * glibc waiter that finds the count taken would by sleeping again. */
void qbn_semfutex_unregister(void *sem) {
  volatile uint64_t *word = sem;
  add64(word, (uint64_t)0 - SEM_ONE_WAITER);
  uint64_t d = *word;
  if ((uint32_t)d > 0 && (d >> 32) > 0)
    syscall(SYS_futex, (uint32_t *)sem, FUTEX_WAKE | (sem_is_private(sem) ? FUTEX_PRIVATE_FLAG : 0), 1, NULL, NULL, 0);
}

/* Sleep (registered) until the count may be non-zero; reported with `token`
 * and, in the report's third word, `gen` (so a cancelled sleep's late
 * completion is told apart from the next one's). */
int qbn_semfutex_arm(qbn_reactor *r, void *sem, int token, int gen) {
  if (!qbn_semfutex_supported(r)) return -ENOTSUP;
  unsigned tail = *r->sq_tail;
  struct io_uring_sqe *wait = uring_sqe(r, &tail);
  wait->opcode = IORING_OP_FUTEX_WAIT_;
  wait->fd = FUTEX2_SIZE_U32_ | (sem_is_private(sem) ? FUTEX2_PRIVATE_ : 0); /* as the poster's wake will be */
  wait->addr = (uint64_t)(uintptr_t)sem;
  wait->off = 0;               /* addr2: sleep while the count reads 0 */
  ((uint64_t *)wait)[6] = FUTEX_BITSET_MATCH_ANY_; /* addr3, at byte 48 (older headers do not name it) */
  wait->user_data = ((uint64_t)(uint32_t)gen << 32) | (uint32_t)token;
  wait->flags = IOSQE_IO_HARDLINK;
  uring_doorbell_sqe(r, &tail);
  return uring_submit(r, tail, 2);
}

/* Cancel the sleep armed with (token, gen): done by the time this returns;
 * its completion, -ECANCELED, is ignored by JS. */
int qbn_semfutex_cancel(qbn_reactor *r, int token, int gen) {
  if (!qbn_semfutex_supported(r)) return -ENOTSUP;
  unsigned tail = *r->sq_tail;
  struct io_uring_sqe *cancel = uring_sqe(r, &tail);
  cancel->opcode = IORING_OP_ASYNC_CANCEL;
  cancel->fd = -1;
  cancel->addr = ((uint64_t)(uint32_t)gen << 32) | (uint32_t)token;
  cancel->user_data = 0;
  return uring_submit(r, tail, 1);
}
#else
int qbn_sem_post_many(void *sem, int n) {
  for (int i = 0; i < n; i++) if (sem_post((sem_t *)sem) < 0) return NEG_ERRNO;
  return 0;
}
int qbn_semfutex_supported(qbn_reactor *r) { (void)r; return 0; }
int qbn_semfutex_take(void *sem, int registered) { return -ENOTSUP; }
void qbn_semfutex_register(void *sem) {}
void qbn_semfutex_unregister(void *sem) {}
int qbn_semfutex_arm(qbn_reactor *r, void *sem, int token, int gen) { return -ENOTSUP; }
int qbn_semfutex_cancel(qbn_reactor *r, int token, int gen) { return -ENOTSUP; }
static int uring_backend_start(qbn_reactor *r) { (void)r; return -ENOTSUP; }
static int uring_arm(qbn_reactor *r, int fd, uint32_t events, uint32_t token) { return -ENOTSUP; }
static int uring_cancel(qbn_reactor *r, uint32_t events, uint32_t token) { return -ENOTSUP; }
static int uring_reap(qbn_reactor *r, uint32_t *out, int cap) { return 0; }
static void uring_unmap(qbn_reactor *r) {}
#endif

/* want: 0 = best available, 1 = epoll thread, 2 = io_uring (no fallback). */
void *qbn_reactor_create(int doorbell, int want, int32_t *err) {
  qbn_reactor *r = calloc(1, sizeof *r);
  if (!r) { *err = -ENOMEM; return NULL; }
  r->doorbell = doorbell;
  r->ring_fd = -1;
  r->epfd = -1;
  pthread_mutex_init(&r->lock, NULL);
  int rc = -ENOTSUP;
  if (want != BACKEND_EPOLL) rc = uring_backend_start(r);
  if (rc < 0 && want != BACKEND_URING) rc = epoll_backend_start(r);
  if (rc < 0) {
    pthread_mutex_destroy(&r->lock);
    free(r);
    *err = rc;
    return NULL;
  }
  *err = 0;
  return r;
}

/* 1: epoll thread, 2: io_uring */
int qbn_reactor_backend(qbn_reactor *r) { return r->backend; }

/*
 * Ask for one report when fd has any of `events`. epoll: replaces the fd's
 * interest. io_uring: adds one more poll for exactly these bits (JS never
 * arms bits that already have a poll pending).
 */
int qbn_reactor_arm(qbn_reactor *r, int fd, int events, int token) {
  if (r->backend == BACKEND_URING) return uring_arm(r, fd, (uint32_t)events, (uint32_t)token);
  char ev[EV_SIZE];
  ev_put(ev, (uint32_t)events | EPOLLONESHOT, (uint32_t)token);
  if (epoll_ctl(r->epfd, EPOLL_CTL_MOD, fd, (struct epoll_event *)ev) == 0) return 0;
  if (errno != ENOENT) return NEG_ERRNO;
  return epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, (struct epoll_event *)ev) < 0 ? NEG_ERRNO : 0;
}

/* io_uring: cancel the poll armed with exactly `events`. epoll: no-op. */
int qbn_reactor_cancel(qbn_reactor *r, int events, int token) {
  if (r->backend == BACKEND_URING) return uring_cancel(r, (uint32_t)events, (uint32_t)token);
  return 0;
}

/* Forget fd before closing it. epoll: remove it (ENOENT is fine). io_uring:
 * pending polls were cancelled with qbn_reactor_cancel. */
int qbn_reactor_forget(qbn_reactor *r, int fd) {
  if (r->backend != BACKEND_EPOLL) return 0;
  if (epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 && errno != ENOENT) return NEG_ERRNO;
  return 0;
}

/* Copy up to cap (token, value, clear) triples into out; returns the count. */
int qbn_reactor_drain(qbn_reactor *r, uint32_t *out, int cap) {
  int n = 0;
  if (r->backend == BACKEND_URING) n = uring_reap(r, out, cap);
  pthread_mutex_lock(&r->lock);
  int m = r->qlen < cap - n ? r->qlen : cap - n;
  memcpy(out + 3 * n, r->queue, sizeof(uint32_t) * 3 * (size_t)m);
  if (m < r->qlen) memmove(r->queue, r->queue + 3 * m, sizeof(uint32_t) * 3 * (size_t)(r->qlen - m));
  r->qlen -= m;
  if (r->qlen == 0) r->rung = 0;
  pthread_mutex_unlock(&r->lock);
  return n + m;
}

void qbn_reactor_destroy(qbn_reactor *r) {
  if (r->backend == BACKEND_EPOLL) {
    char one = 1;
    while (write(r->stop_pipe[1], &one, 1) < 0 && errno == EINTR) {}
    pthread_join(r->thread, NULL);
    close(r->epfd);
    close(r->stop_pipe[0]);
    close(r->stop_pipe[1]);
  } else {
    uring_unmap(r);
  }
  pthread_mutex_destroy(&r->lock);
  free(r->queue);
  free(r);
}

/* ------------------------------------------------- async semaphore waits */
/*
 * A waiter is a thread that sleeps on a condition variable until JS arms it,
 * then waits on one semaphore and reports the result to the reactor with its
 * token: 0 acquired, -ETIMEDOUT, -ECANCELED, or another -errno. Threads are
 * kept and re-armed, so a wait costs no thread creation.
 *
 * Cancelling is race-free without thread cancellation: under the lock, a
 * thread inside sem_wait is marked cancelled and the semaphore is posted
 * once; the thread then consumes exactly one count (ours, or a real one
 * whose twin ours now stands for), so the count is unchanged. If it timed
 * out instead, it takes our post back.
 */
enum { W_IDLE = 0, W_WAITING = 1, W_CANCELLED = 2 };

typedef struct qbn_semwaiter {
  qbn_reactor *reactor;
  sem_t *sem;
  uint32_t token;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int armed;
  int stop;
  int state;
  int64_t timeout_ms;
  pthread_t thread;
} qbn_semwaiter;

static void *semwaiter_main(void *arg) {
  qbn_semwaiter *w = arg;
  pthread_mutex_lock(&w->lock);
  for (;;) {
    while (!w->armed && !w->stop) pthread_cond_wait(&w->cond, &w->lock);
    if (w->stop) break;
    w->armed = 0;
    w->state = W_WAITING;
    int64_t timeout = w->timeout_ms;
    pthread_mutex_unlock(&w->lock);
    int r = sem_wait_ms(w->sem, timeout);
    pthread_mutex_lock(&w->lock);
    if (w->state == W_CANCELLED) {
      if (r < 0) sem_trywait(w->sem); /* timed out before the cancel's post: take it back */
      r = -ECANCELED;
    }
    w->state = W_IDLE;
    if (w->stop) break;
    pthread_mutex_unlock(&w->lock);
    reactor_push(w->reactor, w->token, (uint32_t)r, 0);
    pthread_mutex_lock(&w->lock);
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

void *qbn_semwaiter_create(qbn_reactor *reactor, void *sem, int token, int32_t *err) {
  qbn_semwaiter *w = calloc(1, sizeof *w);
  if (!w) { *err = -ENOMEM; return NULL; }
  w->reactor = reactor;
  w->sem = sem;
  w->token = (uint32_t)token;
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->cond, NULL);
  int e = pthread_create(&w->thread, NULL, semwaiter_main, w);
  if (e) {
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
    *err = -e;
    return NULL;
  }
  *err = 0;
  return w;
}

/* Start one wait (timeout_ms < 0: none); its result is reported with the token. */
void qbn_semwaiter_arm(qbn_semwaiter *w, int64_t timeout_ms) {
  pthread_mutex_lock(&w->lock);
  w->timeout_ms = timeout_ms;
  w->armed = 1;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

/* Cancel the current wait; it reports -ECANCELED. Returns 1 if one was pending. */
int qbn_semwaiter_cancel(qbn_semwaiter *w) {
  int pending = 0;
  pthread_mutex_lock(&w->lock);
  if (w->state == W_WAITING) {
    w->state = W_CANCELLED;
    sem_post(w->sem);
    pending = 1;
  } else if (w->armed) {
    w->armed = 0; /* not started: report the cancellation ourselves */
    pending = 1;
    pthread_mutex_unlock(&w->lock);
    reactor_push(w->reactor, w->token, (uint32_t)-ECANCELED, 0);
    return pending;
  }
  pthread_mutex_unlock(&w->lock);
  return pending;
}

/* Stop the thread (cancelling a wait in progress) and join it: afterwards
 * nothing touches the semaphore's memory. No report is made for the wait. */
void qbn_semwaiter_destroy(qbn_semwaiter *w) {
  pthread_mutex_lock(&w->lock);
  w->stop = 1;
  w->armed = 0;
  if (w->state == W_WAITING) {
    w->state = W_CANCELLED;
    sem_post(w->sem);
  }
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  pthread_cond_destroy(&w->cond);
  pthread_mutex_destroy(&w->lock);
  free(w);
}
