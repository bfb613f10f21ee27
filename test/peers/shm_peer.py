"""A foreign peer for the shared-memory tests: Python's socket, mmap, os and
ctypes (glibc's sem_*), never qbun code.

usage: shm_peer.py MODE ADDRESS [ARGS]
  ADDRESS: "@name" for an abstract (short form) stream socket, or a path.
  inspect: receive fds; for each, try a writable and a read-only shared
           mapping, a write(2), a resize; read the first bytes; write b"PY"
           at offset 100 when a writable mapping worked. Reply with JSON.
  sem OFF: receive one fd, map it, sem_post the semaphore at OFF; after a
           byte arrives on the socket, wait up to 5 s for a post back; reply
           with JSON.
  send-memfd: create a memfd of 4096 bytes holding b"from python", send it.
"""
import ctypes
import errno
import json
import mmap
import os
import socket
import sys
import time


def connect(address):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(b"\0" + address[1:].encode() if address.startswith("@") else address)
    return s


def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def inspect(sock):
    _, fds, _, _ = socket.recv_fds(sock, 1024, 16)
    results = []
    for fd in fds:
        size = os.fstat(fd).st_size
        r = {"size": size}
        maps = []
        def rw():
            maps.append(mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE))
        r["mapWrite"] = attempt(rw)
        ro = []
        r["mapRead"] = attempt(lambda: ro.append(mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)))
        r["head"] = ro[0][:16].hex() if ro else None
        r["write"] = attempt(lambda: os.pwrite(fd, b"W", 0))
        r["grow"] = attempt(lambda: os.ftruncate(fd, size + 4096))
        if maps:
            maps[0][100:102] = b"PY"
            maps[0].flush()
        results.append(r)
        for m in maps + ro:
            m.close()
        os.close(fd)
    sock.sendall(json.dumps(results).encode())


def sem(sock, offset):
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    _, fds, _, _ = socket.recv_fds(sock, 1024, 1)
    fd = fds[0]
    size = os.fstat(fd).st_size
    m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    holder = ctypes.c_char.from_buffer(m)
    addr = ctypes.c_void_p(ctypes.addressof(holder) + offset)
    posted = libc.sem_post(addr)
    sock.recv(1)  # qbun has taken our post and posted back: now wait for it
    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
    deadline = time.time() + 5
    ts = Timespec(int(deadline), int((deadline % 1) * 1e9))
    got = libc.sem_timedwait(addr, ctypes.byref(ts))
    del holder
    m.close()
    os.close(fd)
    sock.sendall(json.dumps({"posted": posted, "gotPost": got == 0}).encode())


def send_memfd(sock):
    fd = os.memfd_create("py-peer")
    os.ftruncate(fd, 4096)
    os.pwrite(fd, b"from python", 0)
    socket.send_fds(sock, [b"x"], [fd])
    os.close(fd)
    sock.recv(1)


def main():
    mode, address = sys.argv[1], sys.argv[2]
    sock = connect(address)
    if mode == "inspect":
        inspect(sock)
    elif mode == "sem":
        sem(sock, int(sys.argv[3]))
    elif mode == "send-memfd":
        send_memfd(sock)
    sock.close()


main()
