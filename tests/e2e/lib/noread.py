#!/usr/bin/env python3
# NAME
#   noread.py - a subscribeRepos client with a tiny receive window that reads slowly or never.
# SYNOPSIS
#   noread.py HOST PORT PATH MODE HOLD_S
# DESCRIPTION
#   Sets SO_RCVBUF to 4 KiB before connecting (so the kernel cannot absorb what the relay
#   sends, as a Node socket would), performs the WebSocket upgrade, then for HOLD_S seconds
#   either reads nothing (MODE=stuck) or 2 KiB every 50 ms (MODE=slow).  Afterwards it reads
#   everything left until the relay closes the connection (or 20 s pass) and prints one JSON
#   line: {"upgraded", "bytes", "eof", "closeCode"} (closeCode: of the last close frame seen in
#   the stream, or null).
import json, socket, sys, time

host, port, path, mode, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((host, port))
s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    c = s.recv(1)
    if not c:
        break
    head += c
upgraded = head.startswith(b"HTTP/1.1 101")
print(json.dumps({"upgraded": upgraded}), flush=True)
data = bytearray()
end = time.time() + hold
while time.time() < end:
    if mode == "slow":
        s.settimeout(0.05)
        try:
            c = s.recv(2048)
            if not c:
                break
            data += c
        except socket.timeout:
            pass
    time.sleep(0.05)
s.settimeout(20 if mode == "stuck" else 3)
eof = False
try:
    while True:
        c = s.recv(65536)
        if not c:
            eof = True
            break
        data += c
except (socket.timeout, ConnectionResetError):
    pass
# walk the frames for the last close frame
code, i = None, 0
while i + 2 <= len(data):
    op, n = data[i] & 0x0F, data[i + 1] & 0x7F
    j = i + 2
    if n == 126:
        n, j = int.from_bytes(data[j:j + 2], "big"), j + 2
    elif n == 127:
        n, j = int.from_bytes(data[j:j + 8], "big"), j + 8
    if op == 8 and n >= 2 and j + 2 <= len(data):
        code = int.from_bytes(data[j:j + 2], "big")
    i = j + n
print(json.dumps({"upgraded": upgraded, "bytes": len(data), "eof": eof, "closeCode": code}), flush=True)
