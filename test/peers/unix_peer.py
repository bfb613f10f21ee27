#!/usr/bin/env python3
"""A scriptable AF_UNIX peer for qbun's interop tests.

Independent of qbun: it uses only Python's own `socket` module. The test
drives it over stdin with one JSON command per line and reads one JSON reply
per line from stdout. The first line it prints is `READY {"pid":…,…}`.

Objects (sockets, fds) are kept in a table and named by integer ids.
Addresses are given as {"path": str} or {"raw": hex} (the raw `sun_path`
bytes, e.g. "00" + name for a short abstract name, or a 108-byte padded
name); Python passes `len(bytes)` + 2 as the address length.

Every blocking call times out after `timeout` seconds (default 10), so a
broken test fails instead of hanging.
"""
import array
import errno
import hashlib
import json
import os
import socket
import struct
import sys

TYPES = {
    "stream": socket.SOCK_STREAM,
    "seqpacket": socket.SOCK_SEQPACKET,
    "datagram": socket.SOCK_DGRAM,
}
CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

objs = {}
next_id = [1]


def put(obj):
    i = next_id[0]
    next_id[0] += 1
    objs[i] = obj
    return i


def addr_of(a):
    if "path" in a:
        return a["path"]
    return bytes.fromhex(a["raw"])


def addr_out(a):
    if isinstance(a, str):
        return {"path": a} if a else {"unnamed": True}
    if isinstance(a, bytes):
        return {"raw": a.hex()} if a else {"unnamed": True}
    return {"unnamed": True}


def fd_info(fd):
    st = os.fstat(fd)
    return {"ino": st.st_ino, "dev": st.st_dev}


def sock(cmd):
    s = objs[cmd["sock"]]
    s.settimeout(cmd.get("timeout", 10))
    return s


def op_socket(cmd):
    s = socket.socket(socket.AF_UNIX, TYPES[cmd["type"]])
    return {"sock": put(s)}


def op_bind(cmd):
    sock(cmd).bind(addr_of(cmd["addr"]))
    return {}


def op_listen(cmd):
    sock(cmd).listen(cmd.get("backlog", 128))
    return {}


def op_connect(cmd):
    sock(cmd).connect(addr_of(cmd["addr"]))
    return {}


def op_accept(cmd):
    conn, _ = sock(cmd).accept()
    return {"sock": put(conn)}


def op_passcred(cmd):
    sock(cmd).setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1 if cmd.get("on", True) else 0)
    return {}


def op_peercred(cmd):
    raw = sock(cmd).getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, CRED.size)
    pid, uid, gid = CRED.unpack(raw)
    return {"pid": pid, "uid": uid, "gid": gid}


def op_getsockname(cmd):
    return {"addr": addr_out(sock(cmd).getsockname())}




def payload(cmd):
    if "text" in cmd:
        return cmd["text"].encode()
    if "hex" in cmd:
        return bytes.fromhex(cmd["hex"])
    return b""


def op_send(cmd):
    """sendmsg with optional SCM_RIGHTS (fds: ids) and SCM_CREDENTIALS."""
    s = sock(cmd)
    anc = []
    if cmd.get("fds"):
        fds = [objs[i] if isinstance(objs[i], int) else objs[i].fileno() for i in cmd["fds"]]
        anc.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes()))
    if cmd.get("creds"):
        c = cmd["creds"]
        if c is True:
            c = [os.getpid(), os.getuid(), os.getgid()]
        anc.append((socket.SOL_SOCKET, socket.SCM_CREDENTIALS, CRED.pack(*c)))
    if "to" in cmd:
        n = s.sendmsg([payload(cmd)], anc, 0, addr_of(cmd["to"]))
    else:
        n = s.sendmsg([payload(cmd)], anc)
    return {"sent": n}


def op_send_fds(cmd):
    """The high-level helper added in Python 3.9 (socket.send_fds)."""
    s = sock(cmd)
    fds = [objs[i] for i in cmd["fds"]]
    n = socket.send_fds(s, [payload(cmd)], fds)
    return {"sent": n}


def op_recv_fds(cmd):
    """socket.recv_fds: received fds are registered and described."""
    s = sock(cmd)
    data, fds, flags, _ = socket.recv_fds(s, cmd.get("size", 65536), cmd.get("maxfds", 16))
    return {
        "text": data.decode(errors="replace"),
        "fds": [dict(fd_info(fd), id=put(fd)) for fd in fds],
        "ctrunc": bool(flags & socket.MSG_CTRUNC),
    }


def op_recv(cmd):
    """recvmsg: data, fds (registered, with fstat identity), credentials, flags, sender."""
    s = sock(cmd)
    maxfds = cmd.get("maxfds", 16)
    anc_size = socket.CMSG_SPACE(maxfds * 4) + socket.CMSG_SPACE(CRED.size) if maxfds > 0 else socket.CMSG_SPACE(CRED.size)
    data, anc, flags, addr = s.recvmsg(cmd.get("size", 65536), anc_size)
    fds = []
    creds = None
    for level, kind, raw in anc:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(raw[: len(raw) - len(raw) % 4])
            fds.extend(a)
        elif kind == socket.SCM_CREDENTIALS:
            pid, uid, gid = CRED.unpack(raw[: CRED.size])
            creds = {"pid": pid, "uid": uid, "gid": gid}
    return {
        "hex": data.hex(),
        "text": data.decode(errors="replace"),
        "fds": [dict(fd_info(fd), id=put(fd)) for fd in fds],
        "creds": creds,
        "trunc": bool(flags & socket.MSG_TRUNC),
        "ctrunc": bool(flags & socket.MSG_CTRUNC),
        "from": addr_out(addr),
    }


def op_read_all(cmd):
    """Read until `n` bytes or end of stream; report the count and a SHA-256."""
    s = sock(cmd)
    want = cmd.get("n", -1)
    h = hashlib.sha256()
    got = 0
    while want < 0 or got < want:
        chunk = s.recv(min(1 << 20, want - got) if want >= 0 else 1 << 20)
        if not chunk:
            break
        h.update(chunk)
        got += len(chunk)
    return {"n": got, "sha256": h.hexdigest()}


def pattern(n, seed):
    """n bytes of a deterministic pattern: byte i = (i * 7 + seed) % 251."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def op_send_pattern(cmd):
    """sendall n pattern bytes (stream), or one message of n bytes (others)."""
    s = sock(cmd)
    data = pattern(cmd["n"], cmd.get("seed", 0))
    if s.type == socket.SOCK_STREAM:
        s.sendall(data)
    elif "to" in cmd:
        s.sendto(data, addr_of(cmd["to"]))
    else:
        s.send(data)
    return {"n": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def op_recv_many(cmd):
    """Receive `count` messages; report each one's size (and the first bytes as text)."""
    s = sock(cmd)
    sizes = []
    heads = []
    for _ in range(cmd["count"]):
        data = s.recv(cmd.get("size", 1 << 20))
        sizes.append(len(data))
        heads.append(data[:32].decode(errors="replace"))
    return {"sizes": sizes, "heads": heads}




def op_open(cmd):
    fd = os.open(cmd["path"], os.O_RDWR | os.O_CREAT, 0o600)
    return dict(fd_info(fd), id=put(fd))


def op_memfd(cmd):
    fd = os.memfd_create(cmd.get("name", "peer"), 0)
    os.write(fd, cmd.get("text", "").encode())
    return dict(fd_info(fd), id=put(fd))


def op_fd_write(cmd):
    return {"n": os.write(objs[cmd["fd"]], cmd["text"].encode())}


def op_fd_read(cmd):
    fd = objs[cmd["fd"]]
    return {"text": os.pread(fd, 1 << 16, 0).decode(errors="replace")}


def op_close(cmd):
    o = objs.pop(cmd["id"])
    if isinstance(o, int):
        os.close(o)
    else:
        o.close()
    return {}


def op_shutdown(cmd):
    sock(cmd).shutdown(socket.SHUT_WR)
    return {}




def op_exit(cmd):
    # Leaves socket files in place: Python never unlinks them on close.
    sys.stdout.write(json.dumps({"ok": True}) + "\n")
    sys.stdout.flush()
    os._exit(0)


def main():
    ready = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()}
    sys.stdout.write("READY " + json.dumps(ready) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        handler = globals().get("op_" + cmd["op"])
        try:
            if handler is None:
                raise ValueError("unknown op " + cmd["op"])
            reply = handler(cmd)
            reply["ok"] = True
        except OSError as e:
            code = errno.errorcode.get(e.errno, "ETIMEDOUT" if isinstance(e, TimeoutError) else "")
            reply = {"ok": False, "errno": e.errno, "code": code, "error": str(e)}
        except Exception as e:  # a bug in a test command: report, keep going
            reply = {"ok": False, "errno": None, "code": "", "error": repr(e)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
