"""A blob consumer that tries every way to change what it received, for the
blob immutability tests: Python's socket, mmap, os and fcntl, no qbun code.

usage: blob_attack.py ADDRESS
  ADDRESS: "@name" for an abstract seqpacket socket, or a path.
  Prints READY, then for every blob offered, in this order: maps the
  received fd writable, writes to it, chmods it back to 0600, reopens
  /proc/self/fd/N read-write and (if that worked) maps that writable,
  writes "X" at offset 0 and shrinks the file to 4096 bytes. Prints one
  JSON line of outcomes ("ok" or an errno name, plus "uid"), acknowledges
  MAPPED then RELEASED. Exits 0 when the channel ends.
"""
import errno
import json
import mmap
import os
import socket
import struct
import sys

HEADER = struct.Struct("<IBBBB16sQII")
MAGIC = 0x424C4251
OFFER, MAPPED, RELEASED = 1, 2, 3


def frame(kind, blob_id):
    return HEADER.pack(MAGIC, 1, kind, 0, 0, blob_id, 0, 0, 0)


def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def map_writable(fd, size):
    mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE).close()


def main():
    address = sys.argv[1]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(b"\0" + address[1:].encode() if address.startswith("@") else address)
    print("READY", flush=True)
    while True:
        data, fds, _flags, _addr = socket.recv_fds(s, 70000, 4)
        if not data and not fds:
            break
        magic, version, kind, _f, _b, blob_id, size, _m, _r = HEADER.unpack_from(data)
        assert magic == MAGIC and version == 1 and kind == OFFER and len(fds) == 1, "unexpected frame"
        fd = fds[0]
        r = {"id": blob_id.hex(), "uid": os.getuid()}
        r["mapWrite"] = attempt(lambda: map_writable(fd, size))
        r["write"] = attempt(lambda: os.pwrite(fd, b"X", 0))
        r["chmod"] = attempt(lambda: os.fchmod(fd, 0o600))
        reopened = []
        r["reopen"] = attempt(lambda: reopened.append(os.open(f"/proc/self/fd/{fd}", os.O_RDWR)))
        for rw in reopened:
            r["reopenMapWrite"] = attempt(lambda: map_writable(rw, size))
            r["reopenWrite"] = attempt(lambda: os.pwrite(rw, b"X", 0))
            r["reopenShrink"] = attempt(lambda: os.ftruncate(rw, 4096))
            os.close(rw)
        os.close(fd)
        s.send(frame(MAPPED, blob_id))
        print(json.dumps(r), flush=True)
        s.send(frame(RELEASED, blob_id))
    print("END", flush=True)


main()
