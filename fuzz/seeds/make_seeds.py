#!/usr/bin/env python3
"""Writes the committed seed corpus (fuzz/seeds/<target>/) from readable op lists.

Each seed follows the byte layout its target decodes (see the target's source)."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def blob(b):
    return struct.pack('<H', len(b)) + b


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


# packet_path: seed, config, then ops (op byte % 14; high nibble picks the file).
inband = lambda cr, p: bytes([0, cr]) + blob(p)
gpa = lambda cr, w, p, e: bytes([1, cr, w]) + blob(p) + blob(e)
xfer = lambda cr, p, e: bytes([2, cr]) + blob(p) + blob(e)
idle = bytes([3])
read = lambda n: bytes([5]) + struct.pack('<H', n)
hold = lambda n: bytes([6]) + struct.pack('<H', n)
respond = lambda pick, r: bytes([7, pick]) + blob(r)
send = lambda wait, p, n: bytes([8, wait]) + blob(p) + struct.pack('<H', n)
host_answer = lambda r: bytes([9, 1]) + blob(r)
write('packet_path', 'inband_read', bytes([1, 0]) + inband(1, b'hello world!') + idle + read(64))
write('packet_path', 'gpa_xfer_hold_respond', bytes([2, 1]) + gpa(1, 1, b'gpa', b'E' * 5000)
      + xfer(1, b'xfer', b'T' * 300) + idle + hold(512) + hold(512) + respond(0, b'ok')
      + respond(1, b'ok2') + idle)
write('packet_path', 'send_answer', bytes([3, 4]) + send(1, b'request', 64) + idle
      + host_answer(b'response') + idle + read(16))
write('packet_path', 'throttle', bytes([4, 2]) + b''.join(inband(1, bytes([i]) * 100) for i in range(12))
      + idle + read(8) + read(200) + idle)

# ring_bytes: mode (bit 0: external host), seed, config, then ops.
desc = lambda ty, off8, len8, fl, tid: struct.pack('<HHHHQ', ty, off8, len8, fl, tid)
shaped = lambda tysel, off8, len8, body, trailer: (bytes([1, tysel, off8, len8, 0, 0])
                                                   + struct.pack('<Q', 7) + blob(body) + bytes([trailer]))
write('ring_bytes', 'builtin_valid_then_bad_len', bytes([0, 1, 0]) + bytes([0]) + blob(b'ok') + b'\x00'
      + shaped(0, 2, 200, b'x' * 16, 1) + bytes([3]))
write('ring_bytes', 'builtin_raw_descriptor', bytes([0, 2, 1]) + bytes([2]) + blob(desc(9, 3, 4, 0, 1) + b'\0' * 24)
      + bytes([3, 5, 0, 4]))
write('ring_bytes', 'external_scribble_index', bytes([1, 3, 0]) + bytes([0]) + struct.pack('<HQ', 0, 0x10_0000_0003)
      + bytes([3]))
write('ring_bytes', 'external_packet', bytes([1, 4, 2]) + bytes([2]) + bytes([0, 2, 3, 0, 0, 0]) + struct.pack('<Q', 1)
      + blob(b'abcdefgh') + bytes([1, 1]) + bytes([3]) + bytes([4, 64, 0, 2]))

# user_requests: config, then ops (op % 12; bit 7 picks the file). A user request is
# op 0..4, kind, aligned, out_aligned, out_len(u16), then the input.
def req(kind, out_len, body, aligned=1, out_aligned=1):
    return bytes([0, kind, aligned, out_aligned]) + struct.pack('<H', out_len) + body
hdr_send = lambda wait, payload: bytes([1, 0, wait]) + blob(payload)
write('user_requests', 'send_wait_complete', bytes([0]) + req(1, 64, hdr_send(1, b'payload')) + bytes([6, 0]) + blob(b'resp') + bytes([1]))
write('user_requests', 'packet_hold_respond', bytes([1]) + bytes([5]) + blob(b'packet-data')
      + req(0, 128, bytes([1, 0, 1]) + blob(b'')) + req(3, 0, bytes([1, 0, 0]) + blob(b'answer') + bytes([1])))
write('user_requests', 'raw_ioctl', bytes([2]) + req(6, 32, bytes([0]) + blob(b'\x01\x02\x03'), aligned=0) + bytes([8]))
write('user_requests', 'read_write_files', bytes([3]) + req(7, 100, blob(b'write me')) + req(0x87, 100, blob(b''))
      + bytes([5]) + blob(b'p') + bytes([10, 2]))

# host_mode: seed, config, then ops (op % 16; bit 7 picks the control handle).
offer = lambda sel: bytes([0, sel])  # sel: bit 0 instance, bit 1 pipe, bits 2-3 handle kind
connect = lambda i: bytes([12, i])
g_inband = lambda g, cr, p: bytes([13, g, cr, 0]) + blob(p)
g_gpa = lambda g, cr, w, p, e: bytes([13, g, cr, 1, w]) + blob(p) + blob(e)
g_xfer = lambda g, cr, p, e: bytes([13, g, cr, 2]) + blob(p) + blob(e)
g_answer = lambda g, r: bytes([14, g, 1, 1]) + blob(r)
g_leave = lambda g: bytes([14, g, 0])
h_read = lambda n, hold: bytes([2]) + struct.pack('<H', n) + bytes([hold])
h_write = lambda p: bytes([3]) + blob(p)
h_send = lambda wait, out4, p: bytes([4, wait, out4]) + blob(p)
h_respond = lambda r: bytes([5]) + blob(r) + bytes([1])
h_close = bytes([11])
steps = lambda n: bytes([15, n])
write('host_mode', 'offer_exchange_close', bytes([1, 0]) + offer(0) + connect(0)
      + g_inband(0, 1, b'from-guest') + steps(8) + h_read(256, 1) + h_respond(b'ok')
      + h_send(1, 4, b'to-guest') + steps(8) + g_answer(0, b'answer') + steps(8) + h_write(b'w')
      + h_close)
write('host_mode', 'pipe_external_data', bytes([2, 0x41]) + offer(3) + connect(1)
      + g_gpa(0, 1, 1, b'gpa', b'E' * 3000) + g_xfer(0, 1, b'xfer', b'T' * 100) + steps(15)
      + h_read(4096, 0) + h_read(4096, 1) + h_respond(b'')
      + bytes([7, 2, 8]) + struct.pack('<H', 8000) + steps(15))
write('host_mode', 'two_handles_guest_leaves', bytes([3, 0x86]) + offer(0) + bytes([0x80, 1])
      + connect(0) + connect(1) + g_inband(1, 1, b'second') + steps(4) + g_leave(0)
      + bytes([0x82]) + struct.pack('<H', 100) + bytes([1]) + steps(10) + bytes([0x80 | 11]) + offer(4))
write('host_mode', 'bad_offers', bytes([4, 0]) + offer(8) + offer(12) + struct.pack('<Q', 0xdead_0000)
      + bytes([1]) + blob(b'\x01' * 56) + offer(0) + offer(1) + bytes([6, 88]))

# ic_path: seed, sel (bits 0-1 the service, mod 3: heartbeat, shutdown, time sync; bits 2-3
# the timeout: 100, 250, 1000, 30000 ms), config, then ops (op % 16; bit 7 picks the handle).
# A service message reads: txid, version pick (not a multiple of 4: the negotiated
# versions), then its fields.
NEG = 1  # any version pick that is not a multiple of 4
negotiate = lambda txid: bytes([0, txid, 0])  # list mode 0: the full lists
negotiate_subsets = lambda txid, fw, msg: bytes([0, txid, 1, fw, msg])
negotiate_made_up = lambda txid, fw, msg: (bytes([0, txid, 3, len(fw)]) + bytes(fw)
                                           + bytes([len(msg)]) + bytes(msg))
hb_fields = lambda txid, seq, r40: bytes([txid, NEG]) + struct.pack('<Q', seq) + bytes([r40]) + (b'' if r40 else b'\x01')
heartbeat = lambda txid, seq, r40=1: bytes([1]) + hb_fields(txid, seq, r40)
sd_fields = lambda txid, flags, text: (bytes([txid, NEG, 1, flags]) + struct.pack('<II', 0x8000_0000, 30)
                                       + blob(text))
shutdown = lambda txid, flags, text=b'': bytes([2]) + sd_fields(txid, flags, text)
# At 4.0 (the full lists negotiate it): parent time, reference time, leap, stratum.
ts_fields = lambda txid, flags: bytes([txid, NEG, flags]) + struct.pack('<QQBB', 133_000_000_000_000_000, 5_000_000, 0, 2)
timesync = lambda txid, flags=1: bytes([3]) + ts_fields(txid, flags)
mutated = lambda kind, fields, muts: bytes([4, kind]) + fields + bytes([len(muts) - 1]) + b''.join(muts)
lying_size = lambda n: bytes([3]) + struct.pack('<H', n)
truncate = lambda n: bytes([2]) + struct.pack('<H', n)
flip = lambda at, bit: bytes([1]) + struct.pack('<H', at) + bytes([bit])
raw_hdr = lambda ty, flags, declared, body: bytes([5, 1, ty, flags]) + struct.pack('<H', declared) + blob(body)
raw = lambda b: bytes([5, 0]) + blob(b)
ic_hold = bytes([6, 1])
ic_plain = bytes([7, 1])
ic_respond = lambda hresult: bytes([8, 0, 2]) + struct.pack('<I', hresult)
ic_respond_short = bytes([8, 0, 4]) + blob(b'\x01')
ic_close = lambda reopen: bytes([9, reopen])
tick = lambda ms: bytes([11]) + struct.pack('<H', ms)
ic_idle = bytes([12])
ic_steps = lambda n: bytes([13, n])
rescind = bytes([14, 0x5A])
held_reads = lambda n: bytes([15, n - 1])
write('ic_path', 'heartbeat_layouts', bytes([1, 0 | (3 << 2), 0x12]) + negotiate(0) + ic_idle
      + heartbeat(1, 41) + heartbeat(2, 2**64 - 1, 0) + ic_idle
      + mutated(1, hb_fields(3, 7, 1), [truncate(27)]) + mutated(1, hb_fields(4, 9, 1), [lying_size(200)])
      + raw_hdr(3, 3, 12, b'\xab' * 12) + ic_idle + negotiate_subsets(5, 0b01, 0b11) + heartbeat(6, 5))
write('ic_path', 'shutdown_accept_refuse_close', bytes([2, 1 | (2 << 2), 0x53]) + negotiate(0) + ic_idle
      + shutdown(1, 2, b'restart') + ic_idle + ic_hold + ic_respond(0)
      + shutdown(2, 0) + ic_idle + ic_hold + ic_respond(0x8000_4005)
      + shutdown(3, 6) + shutdown(4, 1) + ic_idle + ic_plain + bytes([0x86, 1]) + ic_close(1)
      + tick(500) + tick(1200) + ic_idle)
write('ic_path', 'timesync_timeout_busy', bytes([3, 2 | (0 << 2), 0x10]) + negotiate(0) + ic_idle
      + timesync(1) + timesync(2, 2) + timesync(3, 2) + ic_idle + held_reads(2) + ic_respond_short
      + tick(50) + tick(150) + ic_idle + timesync(4) + ic_steps(4) + ic_hold + ic_respond(0))
write('ic_path', 'negotiation_and_mutations', bytes([4, 1 | (1 << 2), 0xD3]) + negotiate_made_up(0, [0, 1], [3, 2, 4])
      + negotiate_subsets(1, 0b10, 0b1000) + ic_idle
      + mutated(0, bytes([2, 0]), [flip(20, 0)]) + negotiate(3) + ic_idle
      + mutated(2, sd_fields(4, 2, b'x'), [lying_size(4), bytes([5, 7])]) + raw(b'\x00' * 19)
      + shutdown(5, 4) + ic_steps(3) + held_reads(3) + ic_respond(0) + rescind + shutdown(6, 0) + ic_idle)
# The user's other requests in IC mode (ops 16..=25): writes (any bytes, or a forged answer to
# the host's message number i), sends (no wait, waiting), batched sends, batched reads, INFO /
# STATS, any IOCTL (code pick, aligned, input, output length).
ic_write = lambda data: bytes([16, 1]) + blob(data)
ic_write_forged = lambda i: bytes([16, 0, i])
ic_send = lambda payload: bytes([18, 0]) + blob(payload)
ic_send_wait = lambda payload, resp: bytes([18, 2]) + blob(payload) + bytes([1, resp])
ic_send_batch = lambda payloads: bytes([20, len(payloads) - 1]) + b''.join(blob(p) for p in payloads) + bytes([1])
# flag pick: bit 0 hold, bit 1 wait; max packets (0: any); output for n records, or `out` bytes
ic_read_batch = lambda flags, max_packets, n: bytes([21, flags, max_packets, 1, n - 1])
ic_read_batch_out = lambda flags, max_packets, out: bytes([21, flags, max_packets, 0]) + struct.pack('<H', out)
ic_info = bytes([23, 1, 1])
ic_stats = bytes([23, 0, 1])
ic_info_short = bytes([23, 1, 0, 10])
ic_any = lambda sel, aligned, data, out: bytes([24, sel, aligned]) + blob(data) + struct.pack('<H', out)
ic_any_code = lambda code, aligned, data, out: (bytes([24, 0xF0]) + struct.pack('<I', code) + bytes([aligned])
                                                + blob(data) + struct.pack('<H', out))
send_header = lambda flags, n: struct.pack('<HHII', 16, 1, flags, n) + b'\x00' * 4
write('ic_path', 'user_sends_refused', bytes([5, 1 | (2 << 2), 0x53]) + negotiate(0) + ic_idle
      + shutdown(1, 2, b'restart') + ic_idle + ic_write_forged(1) + ic_write(b'hello')
      + ic_send(b'ping') + ic_send_wait(b'pong', 16) + ic_send_batch([b'a', b'bc']) + ic_idle
      + ic_read_batch(1, 0, 1) + ic_respond(0) + ic_info + ic_stats
      + ic_any(7, 1, b'\x00' * 16, 0) + ic_any(2, 0, send_header(0, 4) + b'abcd', 0)
      + ic_any(3, 1, b'\x01' * 40, 8) + ic_any_code(0x0022_2FFC, 1, b'\x00' * 8, 64) + ic_idle)
write('ic_path', 'read_batches', bytes([6, 2 | (2 << 2), 0x55]) + negotiate(0) + ic_idle
      + timesync(1) + timesync(2, 2) + ic_idle + ic_read_batch(0, 0, 2)
      + ic_read_batch(3, 1, 1) + timesync(3) + timesync(4) + ic_idle + ic_respond(0)
      + ic_read_batch_out(1, 0, 40) + ic_read_batch_out(1, 0, 60) + ic_read_batch(1, 2, 4)
      + ic_respond(0x8000_4005) + ic_info_short + ic_stats + ic_any(1, 0, b'\x00' * 16, 200)
      + tick(500) + tick(1200) + ic_idle)

# driver_calls: seed, then ops of three bytes (op % 16, a, b) and what each op reads after
# them; a packet callback reads its action byte (and the action's bytes) from the same
# stream when the packet is delivered (inside an idle op, a Disable or a sync request).
dc_alloc = bytes([0, 0, 0])
dc_init = lambda which: bytes([1, which, 0])
dc_enable = bytes([2, 0, 0])
dc_disable = bytes([3, 0, 0])
dc_cleanup = bytes([4, 0, 0])
dc_host = lambda want, n=8: bytes([5, 0 if want else 1, n])
dc_kept = lambda what, pick, size=None: bytes([7, what, pick]) + (bytes([size]) if size is not None else b'')
dc_out = lambda op, pick, *extra: bytes([8, op, 0, pick]) + bytes(extra)
dc_pkt_alloc = dc_out(0, 0)
dc_routine = lambda pick, r: dc_out(1, pick, r)  # r: 0 default, 1 driver's, 2 driver's that frees
dc_send = lambda pick, lensel, flagsel: dc_out(2, pick, lensel, flagsel)  # flagsel 2: WAIT
dc_free = lambda pick: dc_out(3, pick)
dc_forged = lambda kind, pick, routine, which=None: (bytes([9, kind, pick, routine])
                                                      + (bytes([which]) if which is not None else b''))
dc_sync = lambda bad: bytes([10, 1 if bad else 0, 0])
dc_host_complete = bytes([11, 0, 0])
dc_suspend_completes = lambda on: bytes([12, 1 if on else 0, 0])
dc_steps = lambda n: bytes([13, n, 0])
dc_idle = bytes([14, 0, 0])
# Packet callback actions (read when the packet is delivered).
cb_keep = bytes([0])
cb_defer = bytes([2])
cb_fail = bytes([3])
cb_twice = lambda size: bytes([4, size])
cb_scribble = lambda size: bytes([5, size])
cb_dpc_misuse = lambda what: bytes([6, what])
cb_defer_other = lambda pick: bytes([7, pick])
cb_complete = lambda size: bytes([9, size])  # size pick: 0, 8, 13, 200, near the limit (4, 5), ring, ring + 8
opened = dc_alloc + dc_init(0) + dc_enable
write('driver_calls', 'correct_lifecycle', bytes([1]) + opened + dc_host(True) + dc_host(False) + dc_idle
      + cb_complete(1) + cb_complete(3) + dc_sync(False) + dc_pkt_alloc + dc_routine(0, 2) + dc_send(0, 1, 2)
      + dc_idle + dc_host_complete + dc_idle + dc_disable + dc_cleanup)
write('driver_calls', 'init_after_enable_cleanup_while_enabled', bytes([2]) + opened + dc_init(1)
      + dc_cleanup + dc_disable + dc_init(0) + dc_cleanup)
write('driver_calls', 'complete_twice_and_scribble', bytes([3]) + opened + dc_host(True) + dc_host(True)
      + dc_idle + cb_twice(1) + cb_scribble(2) + dc_disable + dc_cleanup)
write('driver_calls', 'kept_outstanding_at_disable', bytes([4]) + opened + dc_host(True) + dc_host(True)
      + dc_host(False) + dc_idle + cb_keep + cb_keep + cb_keep + dc_kept(0, 1, 1) + dc_kept(1, 0, 3)
      + dc_suspend_completes(False) + dc_disable + dc_cleanup)
write('driver_calls', 'kept_completed_in_suspend', bytes([5]) + opened + dc_host(True) + dc_host(True)
      + dc_idle + cb_keep + cb_keep + dc_suspend_completes(True) + dc_disable + dc_cleanup)
write('driver_calls', 'outgoing_misuse', bytes([6]) + opened + dc_pkt_alloc + dc_routine(0, 1)
      + dc_send(0, 1, 2) + dc_send(0, 1, 2) + dc_free(0) + dc_idle + dc_host_complete + dc_idle
      + dc_free(0) + dc_free(0) + dc_pkt_alloc + dc_pkt_alloc + dc_send(2, 2, 0) + dc_free(2)
      + dc_disable + dc_cleanup)
write('driver_calls', 'forged_handles', bytes([7]) + opened + dc_host(True) + dc_host(True) + dc_idle
      + cb_keep + cb_complete(1) + dc_pkt_alloc + dc_free(0)
      + dc_forged(0, 0, 0) + dc_forged(1, 0, 1) + dc_forged(2, 0, 1) + dc_forged(6, 0, 2, 0)
      + dc_forged(5, 0, 1) + dc_forged(5, 0, 0) + dc_forged(7, 0, 0) + dc_forged(4, 0, 2, 1)
      + dc_kept(0, 0, 1) + dc_disable + dc_cleanup + dc_forged(3, 0, 2, 1) + dc_forged(3, 0, 2, 0)
      + dc_forged(7, 1, 1))
write('driver_calls', 'dpc_misuse', bytes([8]) + opened + b''.join(dc_host(True) for _ in range(9)) + dc_idle
      + b''.join(cb_dpc_misuse(i) for i in range(9)) + dc_idle + dc_disable + dc_cleanup)
write('driver_calls', 'defer', bytes([9]) + opened + dc_host(True) + dc_host(True) + dc_host(False) + dc_idle
      + cb_keep + cb_defer + cb_complete(1) + cb_defer_other(0) + dc_kept(2, 0) + dc_idle + dc_kept(0, 0, 1)
      + dc_disable + dc_cleanup)
write('driver_calls', 'sync_requests', bytes([10]) + opened + dc_sync(False) + dc_sync(True)
      + dc_host(True) + dc_idle + cb_dpc_misuse(8) + dc_disable + dc_cleanup)
write('driver_calls', 'completion_sizes', bytes([11]) + opened + b''.join(dc_host(True) for _ in range(5))
      + dc_idle + cb_complete(4) + cb_complete(4 + 8 * 7) + cb_complete(6) + cb_complete(7) + cb_complete(3)
      + dc_idle + dc_disable + dc_cleanup)
write('driver_calls', 'send_while_closed_and_leak', bytes([12]) + opened + dc_pkt_alloc + dc_pkt_alloc
      + dc_routine(1, 1) + dc_send(1, 1, 2) + dc_disable + dc_send(0, 1, 0) + dc_cleanup + dc_alloc
      + dc_pkt_alloc + dc_send(0, 1, 0) + dc_cleanup)
write('driver_calls', 'fail_stops_queue', bytes([13]) + opened + dc_host(True) + dc_host(True) + dc_idle
      + cb_fail + dc_host(True) + dc_sync(False) + dc_pkt_alloc + dc_routine(0, 2) + dc_send(0, 1, 2)
      + dc_idle + dc_host_complete + dc_idle + dc_disable + dc_cleanup + dc_alloc + dc_enable + dc_host(True)
      + dc_idle + cb_complete(1) + dc_disable + dc_cleanup)
write('driver_calls', 'reenable_and_use_after_cleanup', bytes([14]) + opened + dc_host(True) + dc_idle + cb_keep
      + dc_disable + dc_kept(0, 0, 1) + dc_enable + dc_host(True) + dc_idle + cb_keep + dc_disable
      + dc_cleanup + dc_forged(3, 0, 2, 4) + dc_forged(3, 0, 2, 3))
# A forged handle before any channel (the first KMCL call of the process, on a fresh thread:
# the violation must reach this input's simulation).
write('driver_calls', 'forged_before_any_channel', bytes([15]) + dc_forged(0, 0, 0) + dc_forged(1, 0, 2, 0))
