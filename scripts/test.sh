#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs, then runs
# bun test twice — on the default reactor backend (io_uring where the kernel
# allows it), then the tests whose waits go through the reactor (sockets,
# shared memory and semaphores, the qb client, blobs, leases) again on the
# epoll-thread fallback, so both wake-up paths stay tested.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

bun test --timeout=60000 "$@"
first=$?
echo "--- again on the epoll fallback backend (QBUN_REACTOR=epoll) ---"
QBUN_REACTOR=epoll bun test --timeout=60000 test/unix- test/shm test/reactor test/qb-client test/blob test/lease
second=$?
[ "$first" -eq 0 ] && [ "$second" -eq 0 ]
