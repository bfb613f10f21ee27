/*
 * Keeps one CPU from going idle during the "busy" latency runs of
 * scripts/bench-unix.ts.
 *
 *   busy-loop CPU SECONDS [NICE]
 *
 * Pins itself to CPU (-1: no pinning), sets its nice value (default 0),
 * prints "READY" and spins until SECONDS have passed, SIGTERM arrives, or
 * its parent dies.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: busy-loop CPU SECONDS [NICE]\n"); return 2; }
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 1;
  int cpu = atoi(argv[1]);
  double seconds = atof(argv[2]);
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) perror("busy-loop: sched_setaffinity");
  }
  int nice_value = argc > 3 ? atoi(argv[3]) : 0;
  if (nice_value != 0 && setpriority(PRIO_PROCESS, 0, nice_value) < 0) perror("busy-loop: setpriority");
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  printf("READY\n");
  fflush(stdout);
  volatile unsigned long spins = 0;
  for (;;) {
    for (int i = 0; i < 100000; i++) spins++;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double elapsed = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
    if (elapsed >= seconds) break;
  }
  return 0;
}
