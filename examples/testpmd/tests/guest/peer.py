#!/usr/bin/env python3
"""Host-side link partner for the virtio guest test (examples/testpmd/tests/guest.rs).

QEMU's `-netdev dgram` sends each guest frame as one datagram to SOCK and takes one
datagram per frame back. This peer follows the guest script's phases by what it sees:

  1. txonly: UDP frames from the guest are counted by destination IP.
  2. Once the guest has been quiet for QUIET seconds, the peer injects frames
     (ethertype 0x88b5, to the guest's MAC) in bursts, with an ARP request for
     10.0.2.15 in each burst, for the guest's rxonly run to count.
  3. When an ARP reply comes back (icmpecho runs), it stops injecting and sends
     PINGS ICMP echo requests, and counts the replies whose id, sequence,
     payload and checksums are right.
  4. Later UDP frames (the pod-rename txonly run, to another IP) are counted too.

It writes its counters to SUMMARY (JSON, replaced atomically) at most every 50 ms,
and optionally every frame to PCAP. Sends never block (a full QEMU socket drops).
With NICPOLL_PEER_JUMBO=1 in its environment the injected frames and the echo
requests are 9014 bytes long (an MTU-9000 frame), and UDP frames whose length
disagrees with their IP header are counted apart (udp_bad_len).
usage: peer.py SOCK SUMMARY SECONDS [PCAP]"""
import json, os, signal, socket, struct, sys, time

path, summary_path, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
pcap = open(sys.argv[4], 'wb') if len(sys.argv) > 4 else None
if pcap:
    pcap.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
MAC = bytes.fromhex('020000000202')
IP = bytes([10, 0, 2, 2])
GUEST_IP = bytes([10, 0, 2, 15])
QUIET, BURST, PERIOD, PINGS = 0.4, 10, 0.02, 5
JUMBO = os.environ.get('NICPOLL_PEER_JUMBO') == '1'
FRAME = 9014 if JUMBO else 74  # injected frames

S = {'udp_by_dst': {}, 'frames_in': 0, 'guest_mac': None, 'injected': 0, 'inject_dropped': 0,
     'arp_requests_sent': 0, 'arp_replies': 0, 'pings_sent': 0, 'ping_replies': 0,
     'bad_replies': 0, 'phase': 'txonly', 'other_in': 0, 'udp_max_len': 0, 'udp_bad_len': 0,
     'ping_bytes': 0}
G = {'mac': None}  # the guest's MAC, as bytes


def save():
    tmp = summary_path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(S, f)
    os.replace(tmp, summary_path)


def dump(f):
    if pcap:
        t = time.time()
        pcap.write(struct.pack('<IIII', int(t), int(t % 1 * 1e6), len(f), len(f)) + f)


def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def send(s, qemu, f):
    try:
        s.settimeout(0)
        s.sendto(f, qemu)
        dump(f)
        return True
    except OSError:  # full (EAGAIN / timeout), or QEMU's end is gone
        return False


def arp_request(guest_mac):
    f = b'\xff' * 6 + MAC + b'\x08\x06' + bytes.fromhex('0001080006040001') + MAC + IP + b'\0' * 6 + GUEST_IP
    return f + bytes(60 - len(f))


def ping(guest_mac, seq):
    payload = b'nicpoll-ping-%04d' % seq + bytes(range(32))
    if JUMBO:  # to a 9014-byte frame: 14 + 20 + 8 + payload
        payload += bytes((i * 7 + seq) & 0xff for i in range(9014 - 42 - len(payload)))
    icmp = struct.pack('!BBHHH', 8, 0, 0, 0x4e50, seq) + payload
    icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0, IP, GUEST_IP)
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    return guest_mac + MAC + b'\x08\x00' + ip + icmp, payload


def main():
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    end = time.time() + limit
    qemu = None
    last_guest = 0.0
    next_burst = 0.0
    seq = 0
    pings = {}
    dirty = True
    next_save = 0.0
    print('peer: listening on', path, flush=True)
    save()
    while time.time() < end:
        now = time.time()
        # Phase changes driven by time: txonly -> inject after a quiet gap.
        if S['phase'] == 'txonly' and qemu and now - last_guest > QUIET:
            S['phase'] = 'inject'
            dirty = True
            print('peer: guest quiet, injecting', flush=True)
        if S['phase'] == 'inject' and now >= next_burst:
            for _ in range(BURST):
                seq += 1
                f = G['mac'] + MAC + b'\x88\xb5' + struct.pack('!I', seq) + bytes(FRAME - 18)
                if send(s, qemu, f):
                    S['injected'] += 1
                else:
                    S['inject_dropped'] += 1
            if send(s, qemu, arp_request(G['mac'])):
                S['arp_requests_sent'] += 1
            next_burst = now + PERIOD
            dirty = True
        if S['phase'] == 'ping' and len(pings) < PINGS and now >= next_burst:
            n = len(pings) + 1
            f, payload = ping(G['mac'], n)
            if send(s, qemu, f):
                pings[n] = payload
                S['pings_sent'] += 1
            next_burst = now + 0.05
            dirty = True
        if dirty and now >= next_save:
            save()
            dirty = False
            next_save = now + 0.05
        s.settimeout(0.005)
        try:
            f, addr = s.recvfrom(65536)
        except socket.timeout:
            continue
        dump(f)
        qemu = addr or qemu
        S['frames_in'] += 1
        dirty = True
        et = f[12:14]
        if et == b'\x08\x00' and len(f) >= 34 and f[23] == 17:
            last_guest = time.time()
            dst = '.'.join(str(b) for b in f[30:34])
            S['udp_max_len'] = max(S['udp_max_len'], len(f))
            if 14 + struct.unpack('!H', f[16:18])[0] != len(f):
                S['udp_bad_len'] += 1
            S['udp_by_dst'][dst] = S['udp_by_dst'].get(dst, 0) + 1
            if S['guest_mac'] is None:
                G['mac'] = f[6:12]
                S['guest_mac'] = f[6:12].hex(':')
            if S['phase'] == 'done':
                S['phase'] = 'txonly-again'
        elif et == b'\x08\x06' and f[20:22] == b'\x00\x02' and f[28:32] == GUEST_IP and f[38:42] == IP:
            S['arp_replies'] += 1
            if S['phase'] == 'inject':
                S['phase'] = 'ping'
                S['arp_reply_mac'] = f[22:28].hex(':')
                next_burst = 0.0
                print('peer: ARP reply, pinging', flush=True)
        elif et == b'\x08\x00' and len(f) >= 42 and f[23] == 1:
            ip, icmp = f[14:34], f[34:34 + struct.unpack('!H', f[16:18])[0] - 20]
            typ, _, _, ident, sq = struct.unpack('!BBHHH', icmp[:8])
            ok = (typ == 0 and ident == 0x4e50 and pings.get(sq) == icmp[8:] and csum(icmp) == 0
                  and csum(ip) == 0 and f[26:30] == GUEST_IP and f[30:34] == IP and f[0:6] == MAC)
            if ok:
                S['ping_replies'] += 1
                S['ping_bytes'] = max(S['ping_bytes'], len(f))
                if S['ping_replies'] == PINGS:
                    S['phase'] = 'done'
                    print('peer: all pings answered', flush=True)
            else:
                S['bad_replies'] += 1
        else:
            S['other_in'] += 1
    save()
    os.unlink(path)


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the test stops us; save first
try:
    main()
finally:
    save()
