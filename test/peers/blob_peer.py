"""A foreign blob consumer for the blob tests: Python's socket, mmap, os and
fcntl, never qbun code. It speaks the blob channel's frames by hand.

usage: blob_peer.py ADDRESS [--hold]
  ADDRESS: "@name" for an abstract seqpacket socket, or a path.
  Prints READY, then for every blob offered: checks the fd against the
  header, tries to map it writable (must fail), to write and to grow it,
  maps it read-only, hashes it, acknowledges MAPPED, prints one JSON line,
  then unmaps it and acknowledges RELEASED (with --hold: keeps it mapped and
  never releases, waiting to be killed). Exits 0 when the channel ends.
"""
import errno
import fcntl
import hashlib
import json
import mmap
import os
import socket
import struct
import sys

HEADER = struct.Struct("<IBBBB16sQII")
MAGIC = 0x424C4251
OFFER, MAPPED, RELEASED, REFUSED = 1, 2, 3, 4
F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)


def frame(kind, blob_id, reason=0):
    return HEADER.pack(MAGIC, 1, kind, 0, 0, blob_id, 0, 0, reason)


def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def main():
    address = sys.argv[1]
    hold = "--hold" in sys.argv[2:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(b"\0" + address[1:].encode() if address.startswith("@") else address)
    print("READY", flush=True)
    held = []
    while True:
        data, fds, _flags, _addr = socket.recv_fds(s, 70000, 4)
        if not data and not fds:
            break
        magic, version, kind, flags, backend, blob_id, size, meta_len, _reason = HEADER.unpack_from(data)
        assert magic == MAGIC and version == 1 and kind == OFFER and len(fds) == 1, "unexpected frame"
        fd = fds[0]
        st = os.fstat(fd)
        if st.st_size != size:
            os.close(fd)
            s.send(frame(REFUSED, blob_id, 1))
            print(json.dumps({"id": blob_id.hex(), "refused": "size-mismatch"}), flush=True)
            continue
        writable = []
        r = {"id": blob_id.hex(), "size": size, "announcedSealed": bool(flags & 1)}
        r["mapWrite"] = attempt(lambda: writable.append(mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)))
        r["write"] = attempt(lambda: os.pwrite(fd, b"X", 0))
        r["grow"] = attempt(lambda: os.ftruncate(fd, size + 4096))
        r["shrink"] = attempt(lambda: os.ftruncate(fd, 0))
        try:
            r["seals"] = fcntl.fcntl(fd, F_GET_SEALS)
        except OSError:
            r["seals"] = 0
        r["accessMode"] = "read-only" if (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) == os.O_RDONLY else "read-write"
        m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        os.close(fd)
        r["sha256"] = hashlib.sha256(m).hexdigest()
        r["metadata"] = json.loads(data[HEADER.size:HEADER.size + meta_len]) if meta_len else {}
        for w in writable:
            w.close()
        s.send(frame(MAPPED, blob_id))
        print(json.dumps(r), flush=True)
        if hold:
            held.append(m)
        else:
            m.close()
            s.send(frame(RELEASED, blob_id))
    print("END", flush=True)


main()
