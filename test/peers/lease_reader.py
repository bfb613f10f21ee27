"""A reader of a qbun lease owner written against the documented wire format
only (Python's socket, struct, mmap; no qbun code).

usage: lease_reader.py ABSTRACT_NAME ENDPOINT
Subscribes, maps the region from the locator and the fd that came with it,
tries to map it writable (must fail), prints READY {json}; then waits for one
write notification, reads the region with the sequence check, prints {json}.
"""
import errno
import json
import mmap
import socket
import struct
import sys

FRAME = struct.Struct("<IBBHII")  # magic, version, type, reserved, request id, body length
MAGIC, LOCATOR_MAGIC, REGION_MAGIC = 0x534C4251, 0x434C4251, 0x524C4251
SUBSCRIBE, REPLY, ERROR, LOCATOR, WRITTEN = 1, 16, 17, 32, 35


def frame(ftype, request_id, body):
    return FRAME.pack(MAGIC, 1, ftype, 0, request_id, len(body)) + body


def receive(sock):
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 17, 4)
    magic, version, ftype, reserved, request_id, length = FRAME.unpack_from(data)
    assert magic == MAGIC and version == 1 and reserved == 0 and length == len(data) - FRAME.size, "bad frame header"
    return ftype, request_id, data[FRAME.size:], fds


def decode_locator(body):
    magic, version, flags, epoch, count, size, file_size, name_len, zero = struct.unpack_from("<IHHIIddHH", body)
    assert magic == LOCATOR_MAGIC and version == 1 and zero == 0
    name = body[36:36 + name_len].decode()
    segments = [struct.unpack_from("<ddd", body, 36 + name_len + 24 * i) for i in range(count)]
    assert len(body) == 36 + name_len + 24 * count
    return {"endpoint": name, "epoch": epoch, "size": int(size), "fileSize": int(file_size), "flags": flags,
            "segments": [[int(x) for x in s] for s in segments]}


def read_consistent(region, locator):
    for _ in range(100000):
        before = struct.unpack_from("<i", region, 8)[0]
        if before & 1:
            continue
        chunks = [region[f:f + n] for (_o, n, f) in locator["segments"]]
        after = struct.unpack_from("<i", region, 8)[0]
        if before == after:
            return before & 0xFFFFFFFF, b"".join(chunks)
    raise RuntimeError("contended")


def main():
    name, endpoint = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(b"\0" + name.encode())
    sock.send(frame(SUBSCRIBE, 1, json.dumps({"endpoint": endpoint, "notifyWrites": True}).encode()))
    locator, region, fd = None, None, None
    while True:
        ftype, request_id, body, fds = receive(sock)
        if ftype == LOCATOR:
            locator, fd = decode_locator(body), fds[0]
        elif ftype == REPLY and request_id == 1:
            break
        elif ftype == ERROR:
            raise RuntimeError(body.decode())
    try:
        mmap.mmap(fd, locator["fileSize"], mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        map_write = "ok"
    except OSError as e:
        map_write = errno.errorcode.get(e.errno, str(e.errno))
    region = mmap.mmap(fd, locator["fileSize"], mmap.MAP_SHARED, mmap.PROT_READ)
    header = struct.unpack_from("<iiiiiii", region, 0)
    print("READY " + json.dumps({"locator": locator, "mapWrite": map_write, "magicOk": header[0] == REGION_MAGIC,
                                 "headerEpoch": header[4], "headerSize": header[5]}), flush=True)
    while True:
        ftype, _rid, body, fds = receive(sock)
        for extra in fds:
            socket.close(extra)
        if ftype == WRITTEN:
            epoch, sequence = struct.unpack_from("<II", body)
            seq, data = read_consistent(region, locator)
            print(json.dumps({"epoch": epoch, "notified": sequence, "sequence": seq, "head": data[:8].hex()}), flush=True)
            return


main()
