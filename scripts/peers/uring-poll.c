/*
 * Diagnostic for scripts/bench-unix.ts, NOT part of qbun: readiness through
 * io_uring instead of a helper thread. A one-shot IORING_OP_POLL_ADD is
 * submitted for a socket; the ring has an eventfd registered
 * (IORING_REGISTER_EVENTFD), which the kernel signals when the completion is
 * posted; Bun watches that eventfd in its own event loop
 * (Bun.file(efd).stream()). The wake-up chain is then peer -> JS thread, as
 * with Bun's own sockets, instead of peer -> epoll thread -> doorbell -> JS
 * thread. Built with gcc as a shared library and loaded with bun:ffi dlopen.
 *
 * Raw syscalls (no liburing). Every function returns >= 0 or -errno.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct {
  int ring_fd;
  void *sq_map, *cq_map;
  size_t sq_len, cq_len;
  struct io_uring_sqe *sqes;
  size_t sqes_len;
  unsigned *sq_tail, *sq_mask, *sq_array;
  unsigned *cq_head, *cq_tail, *cq_mask;
  struct io_uring_cqe *cqes;
} uring_poll;

int up_eventfd(void) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

void up_destroy(uring_poll *u) {
  if (!u) return;
  if (u->sqes && u->sqes != MAP_FAILED) munmap(u->sqes, u->sqes_len);
  if (u->cq_map && u->cq_map != MAP_FAILED && u->cq_map != u->sq_map) munmap(u->cq_map, u->cq_len);
  if (u->sq_map && u->sq_map != MAP_FAILED) munmap(u->sq_map, u->sq_len);
  if (u->ring_fd >= 0) close(u->ring_fd);
  free(u);
}

/* A ring of `entries` slots whose completions signal `efd`. */
uring_poll *up_create(int efd, int entries, int32_t *err) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  uring_poll *u = calloc(1, sizeof *u);
  if (!u) { *err = -ENOMEM; return NULL; }
  u->ring_fd = (int)syscall(__NR_io_uring_setup, (unsigned)entries, &p);
  if (u->ring_fd < 0) { *err = -errno; u->ring_fd = -1; up_destroy(u); return NULL; }
  u->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  u->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (p.features & IORING_FEAT_SINGLE_MMAP) {
    if (u->cq_len > u->sq_len) u->sq_len = u->cq_len;
    u->cq_len = u->sq_len;
  }
  u->sq_map = mmap(NULL, u->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->ring_fd, IORING_OFF_SQ_RING);
  if (u->sq_map == MAP_FAILED) { *err = -errno; up_destroy(u); return NULL; }
  u->cq_map = (p.features & IORING_FEAT_SINGLE_MMAP)
    ? u->sq_map
    : mmap(NULL, u->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->ring_fd, IORING_OFF_CQ_RING);
  if (u->cq_map == MAP_FAILED) { *err = -errno; up_destroy(u); return NULL; }
  u->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
  u->sqes = mmap(NULL, u->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->ring_fd, IORING_OFF_SQES);
  if (u->sqes == MAP_FAILED) { *err = -errno; up_destroy(u); return NULL; }
  char *sq = u->sq_map, *cq = u->cq_map;
  u->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  u->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  u->sq_array = (unsigned *)(sq + p.sq_off.array);
  u->cq_head = (unsigned *)(cq + p.cq_off.head);
  u->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  u->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  u->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  if (syscall(__NR_io_uring_register, u->ring_fd, IORING_REGISTER_EVENTFD, &efd, 1) < 0) {
    *err = -errno;
    up_destroy(u);
    return NULL;
  }
  *err = 0;
  return u;
}

/* Submit one one-shot poll for `events` (POLLIN...) on fd, tagged `token`. */
int up_poll(uring_poll *u, int fd, int events, int token) {
  unsigned tail = *u->sq_tail;
  unsigned idx = tail & *u->sq_mask;
  struct io_uring_sqe *s = &u->sqes[idx];
  memset(s, 0, sizeof *s);
  s->opcode = IORING_OP_POLL_ADD;
  s->fd = fd;
  s->poll32_events = (unsigned)events;
  s->user_data = (uint64_t)(uint32_t)token;
  u->sq_array[idx] = idx;
  __atomic_store_n(u->sq_tail, tail + 1, __ATOMIC_RELEASE);
  int r;
  do r = (int)syscall(__NR_io_uring_enter, u->ring_fd, 1, 0, 0, NULL, 0);
  while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : r;
}

/* Copy up to cap completions as (token, result) pairs; returns the count. */
int up_reap(uring_poll *u, int32_t *out, int cap) {
  unsigned head = *u->cq_head;
  unsigned tail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);
  int n = 0;
  while (head != tail && n < cap) {
    struct io_uring_cqe *c = &u->cqes[head & *u->cq_mask];
    out[2 * n] = (int32_t)c->user_data;
    out[2 * n + 1] = c->res;
    n++;
    head++;
  }
  __atomic_store_n(u->cq_head, head, __ATOMIC_RELEASE);
  return n;
}
