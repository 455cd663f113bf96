#!/usr/bin/env python3
"""Test servers for the NAT end-to-end tests (tests/tests/e2e_nat.rs), all in one process.

Each argument starts one server, ADDR:PORT first:
  http:ADDR:PORT:DIR     HTTP/1.0 file server for DIR
  dns:ADDR:PORT:NAME:IP  DNS over UDP and TCP: an A query for NAME gets IP (TTL 60); any other
                         A query NXDOMAIN, other types of NAME an empty NOERROR answer
  sink:ADDR:PORT         reads each connection to EOF, answers "<bytes> <sha256 hex>\\n", closes
  gather:ADDR:PORT:N     holds connections until N are open, then answers each "ok <i>\\n" and
                         closes them; after 60 s without reaching N it answers "short <count>\\n"
Every server logs one line per event on stdout. "ready" is printed once all are listening.
"""
import functools
import hashlib
import http.server
import socket
import struct
import sys
import threading
import time


def log(*parts):
    print(*parts, flush=True)


def tcp_listener(addr, port, backlog=512):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(backlog)
    return s


def serve_forever(listener, handle):
    def loop():
        while True:
            conn, peer = listener.accept()
            threading.Thread(target=handle, args=(conn, peer), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


# --- DNS -------------------------------------------------------------------------------------

def dns_answer(query, name, ip):
    """The response to one DNS query message, or None if it is not one."""
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, i = [], 12
    while i < len(query) and query[i]:
        labels.append(query[i + 1:i + 1 + query[i]].decode("ascii", "replace"))
        i += query[i] + 1
    if i + 5 > len(query):
        return None
    qtype, _qclass = struct.unpack("!HH", query[i + 1:i + 5])
    question = query[12:i + 5]
    qname = ".".join(labels).lower()
    rd = flags & 0x0100
    if qname != name:
        rcode, answers = 3, b""
    elif qtype == 1:
        rcode = 0
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ip)
    else:
        rcode, answers = 0, b""
    header = struct.pack("!HHHHHH", qid, 0x8400 | rd | 0x0080 | rcode, 1,
                         1 if answers else 0, 0, 0)
    log("dns", qname, qtype, "rcode", rcode)
    return header + question + answers


def start_dns(addr, port, name, ip):
    name = name.lower().rstrip(".")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((addr, int(port)))

    def udp_loop():
        while True:
            query, peer = udp.recvfrom(4096)
            reply = dns_answer(query, name, ip)
            if reply:
                udp.sendto(reply, peer)
    threading.Thread(target=udp_loop, daemon=True).start()

    def tcp_conn(conn, peer):
        with conn:
            f = conn.makefile("rb")
            while True:
                head = f.read(2)
                if len(head) < 2:
                    return
                query = f.read(struct.unpack("!H", head)[0])
                reply = dns_answer(query, name, ip)
                if not reply:
                    return
                log("dns tcp from", peer[0])
                conn.sendall(struct.pack("!H", len(reply)) + reply)
    serve_forever(tcp_listener(addr, port), tcp_conn)


# --- TCP sink and gather ---------------------------------------------------------------------

def start_sink(addr, port):
    def conn_handler(conn, peer):
        with conn:
            digest, total = hashlib.sha256(), 0
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    break
                digest.update(data)
                total += len(data)
            answer = "%d %s" % (total, digest.hexdigest())
            conn.sendall((answer + "\n").encode())
        if total:
            log("sink", port, answer)
    serve_forever(tcp_listener(addr, port), conn_handler)


def start_gather(addr, port, n):
    n = int(n)
    listener = tcp_listener(addr, port, backlog=max(512, 2 * n))

    def loop():
        while True:
            held = [listener.accept()[0]]
            listener.settimeout(60)
            try:
                while len(held) < n:
                    held.append(listener.accept()[0])
                lines = ["ok %d\n" % i for i in range(len(held))]
            except socket.timeout:
                lines = ["short %d\n" % len(held)] * len(held)
            listener.settimeout(None)
            log("gather", port, "held", len(held), "of", n)
            for conn, line in zip(held, lines):
                try:
                    conn.sendall(line.encode())
                except OSError as e:
                    log("gather send:", e)
                conn.close()
    threading.Thread(target=loop, daemon=True).start()


# --- HTTP ------------------------------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


def start_http(addr, port, directory):
    handler = functools.partial(QuietHandler, directory=directory)
    server = Server((addr, int(port)), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main():
    starters = {"http": start_http, "dns": start_dns, "sink": start_sink, "gather": start_gather}
    for spec in sys.argv[1:]:
        kind, *args = spec.split(":")
        starters[kind](*args)
    log("ready")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
