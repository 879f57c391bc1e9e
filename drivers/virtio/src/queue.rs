//! Virtqueue logic: descriptor bookkeeping, the receive and transmit fast
//! paths, and the control queue.
//!
//! Descriptor ids are handed out from a free stack and come back through the
//! used ring, so a device may complete buffers in any order. Every used entry is
//! checked before it is believed: an id that is out of range or not in flight,
//! or a length beyond the buffer, is counted as an error and never turns into a
//! packet. Each burst publishes its descriptors with one available-index write
//! and rings the doorbell at most once, and not at all while the device says
//! `VIRTQ_USED_F_NO_NOTIFY`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nicpoll::bar::Bar;
use nicpoll::mbuf::{MbufBatch, RxChain};
use nicpoll::mempool::Mempool;
use nicpoll::port::counters::QueueCountersRef;
use nicpoll::{Error, Result, RxQueue, TxQueue};

use crate::ring::{
    Desc, InFlight, NET_HDR_LEN, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
    Vring,
};
use crate::transport::Notifier;

/// Largest number of mbufs allocated at once when refilling a receive ring.
const REFILL_CHUNK: usize = 64;

/// One virtqueue's driver-side state.
pub(crate) struct Virtqueue<B: Bar> {
    pub(crate) ring: Vring,
    notifier: Notifier<B>,
    inflight: InFlight,
    /// Buffer length given to the device, per descriptor id (a chain's head:
    /// the whole chain's).
    lens: Box<[u32]>,
    /// Per head id, how many descriptors its chain takes (1 for one buffer).
    chain_len: Box<[u16]>,
    /// Per descriptor id of a chain, the next id (valid where the chain goes on).
    links: Box<[u16]>,
    /// Free descriptor ids (a stack).
    free: Box<[u16]>,
    nfree: u16,
    /// Next available index to publish (our shadow of avail.idx).
    avail_idx: u16,
    /// Next used index to look at.
    last_used: u16,
    size: u16,
}

impl<B: Bar> std::fmt::Debug for Virtqueue<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Virtqueue")
            .field("ring", &self.ring)
            .field("free", &self.nfree)
            .field("in_flight", &self.inflight.held())
            .finish()
    }
}

impl<B: Bar> Virtqueue<B> {
    pub(crate) fn new(ring: Vring, notifier: Notifier<B>) -> Virtqueue<B> {
        let size = ring.size();
        ring.set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT);
        Virtqueue {
            ring,
            notifier,
            inflight: InFlight::new(size),
            lens: vec![0u32; size as usize].into_boxed_slice(),
            chain_len: vec![1u16; size as usize].into_boxed_slice(),
            links: vec![0u16; size as usize].into_boxed_slice(),
            free: (0..size).rev().collect(),
            nfree: size,
            avail_idx: 0,
            last_used: 0,
            size,
        }
    }

    /// Descriptors free.
    pub(crate) fn nfree(&self) -> u16 {
        self.nfree
    }

    #[inline(always)]
    fn pop_free(&mut self) -> u16 {
        debug_assert!(self.nfree > 0);
        self.nfree -= 1;
        self.free[self.nfree as usize]
    }

    #[inline(always)]
    fn push_free(&mut self, id: u16) {
        self.free[self.nfree as usize] = id;
        self.nfree += 1;
    }

    /// Write `d` as descriptor `id` and append it to the available ring (not
    /// yet published).
    #[inline(always)]
    fn post(&mut self, id: u16, d: Desc) {
        self.lens[id as usize] = d.len();
        self.ring.write_desc(id, d);
        self.ring.write_avail(self.avail_idx, id);
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Write a descriptor chain, one descriptor per (IOVA, length), linked
    /// with NEXT, and append its head to the available ring (not yet
    /// published). The caller checked that `nfree()` covers it.
    fn post_chain(&mut self, segs: impl Iterator<Item = (u64, usize)>, total: u32) -> u16 {
        let head = self.pop_free();
        let mut id = head;
        let mut k = 1u16;
        let mut segs = segs.peekable();
        while let Some((iova, len)) = segs.next() {
            if segs.peek().is_some() {
                let next = self.pop_free();
                self.links[id as usize] = next;
                self.ring
                    .write_desc(id, Desc::new(iova, len as u32, VIRTQ_DESC_F_NEXT, next));
                id = next;
                k += 1;
            } else {
                self.ring.write_desc(id, Desc::new(iova, len as u32, 0, 0));
            }
        }
        self.lens[head as usize] = total;
        self.chain_len[head as usize] = k;
        self.ring.write_avail(self.avail_idx, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        head
    }

    /// Give back the descriptors of the chain headed by `head` (the head too).
    #[inline]
    fn free_chain(&mut self, head: u16) {
        let k = std::mem::replace(&mut self.chain_len[head as usize], 1);
        let mut id = head;
        for _ in 1..k {
            let next = self.links[id as usize];
            self.push_free(id);
            id = next;
        }
        self.push_free(id);
    }

    /// Publish what was posted; ring the doorbell if the device wants one and
    /// `notify` is set (false before DRIVER_OK).
    #[inline(always)]
    fn publish(&mut self, notify: bool) {
        self.ring.publish_avail(self.avail_idx);
        if notify && self.ring.device_wants_notify() {
            self.notifier.notify();
        }
    }

    /// Ring the doorbell if the device wants one (after DRIVER_OK, for what was
    /// published before it).
    pub(crate) fn notify_if_wanted(&mut self) {
        if self.ring.device_wants_notify() {
            self.notifier.notify();
        }
    }

    /// Used entries not yet looked at; more than the ring holds means the
    /// device's index is corrupt: only a ring's worth is considered.
    #[inline(always)]
    fn pending_used(&self) -> (u16, bool) {
        let n = self.ring.used_idx().wrapping_sub(self.last_used);
        if n > self.size {
            (self.size, true)
        } else {
            (n, false)
        }
    }

    /// Give every free descriptor a fresh receive buffer from `pool` (in chunks,
    /// through `scratch`), and publish them. Returns (posted, mbufs missing).
    pub(crate) fn refill_rx(
        &mut self,
        pool: &Mempool,
        scratch: &mut MbufBatch,
        notify: bool,
    ) -> (usize, usize) {
        let mut posted = 0;
        let mut missing = 0;
        while self.nfree > 0 {
            let want = (self.nfree as usize).min(REFILL_CHUNK).min(scratch.spare());
            if !pool.alloc_bulk(scratch, want) {
                missing = self.nfree as usize;
                break;
            }
            while let Some(m) = scratch.pop_front() {
                let id = self.pop_free();
                // The 12-byte header lands in the headroom, the frame at the
                // mbuf's data start.
                let addr = m.data_iova() - NET_HDR_LEN as u64;
                let len = (m.capacity() + NET_HDR_LEN) as u32;
                self.post(id, Desc::new(addr, len, VIRTQ_DESC_F_WRITE, 0));
                self.inflight.insert(id, m);
                posted += 1;
            }
        }
        if posted > 0 {
            self.publish(notify);
        }
        (posted, missing)
    }

    /// Take back what the device finished transmitting, freeing the mbufs in
    /// bulk through `done`. Returns the bad used entries seen.
    fn reclaim_tx(&mut self, done: &mut MbufBatch) -> u64 {
        let (n, corrupt) = self.pending_used();
        let mut errors = u64::from(corrupt);
        for _ in 0..n {
            let e = self.ring.used_elem(self.last_used);
            self.last_used = self.last_used.wrapping_add(1);
            let id = e.id();
            let Some(m) = self.inflight.take(id) else {
                errors += 1;
                continue;
            };
            self.free_chain(id as u16);
            if e.len() > self.lens[id as usize] {
                errors += 1;
            }
            if let Err(m) = done.push(m) {
                done.clear();
                let _ = done.push(m);
            }
        }
        done.clear();
        errors
    }
}

/// Where a queue's state goes when the queue is dropped, so the port can free
/// its mbufs once the device is reset (never while the device may use them).
pub(crate) type Home<B> = Arc<Mutex<Option<Virtqueue<B>>>>;

fn park<B: Bar>(home: &Home<B>, vq: Option<Virtqueue<B>>) {
    if let Some(vq) = vq {
        *home.lock().unwrap_or_else(|e| e.into_inner()) = Some(vq);
    }
}

/// A receive queue.
pub struct VirtioRxQueue<B: Bar> {
    vq: Option<Virtqueue<B>>,
    home: Home<B>,
    pool: Mempool,
    port: u16,
    queue: u16,
    counters: QueueCountersRef,
    scratch: MbufBatch,
    refill_thresh: u16,
    /// VIRTIO_NET_F_MRG_RXBUF: a frame may take several buffers.
    mrg: bool,
    /// Longest frame delivered; longer ones are counted.
    max_len: usize,
    /// A merged frame whose buffers have not all come yet.
    merge: RxChain,
    /// Buffers of it still to come.
    merge_left: u16,
    /// It lost a buffer (a bad used entry): drop it when the last one comes.
    broken: bool,
}

impl<B: Bar> VirtioRxQueue<B> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        vq: Virtqueue<B>,
        home: Home<B>,
        pool: Mempool,
        port: u16,
        queue: u16,
        counters: QueueCountersRef,
        mrg: bool,
        max_len: usize,
    ) -> VirtioRxQueue<B> {
        let refill_thresh = (vq.size / 8).clamp(1, 64);
        VirtioRxQueue {
            vq: Some(vq),
            home,
            pool,
            port,
            queue,
            counters,
            scratch: MbufBatch::new(),
            refill_thresh,
            mrg,
            max_len,
            merge: RxChain::new(),
            merge_left: 0,
            broken: false,
        }
    }
}

impl<B: Bar> Drop for VirtioRxQueue<B> {
    fn drop(&mut self) {
        park(&self.home, self.vq.take());
    }
}

impl<B: Bar + 'static> RxQueue for VirtioRxQueue<B> {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let Some(vq) = self.vq.as_mut() else { return 0 };
        let spare = out.spare();
        let mut got = 0usize;
        let mut bytes = 0u64;
        let mut errors = 0u64;
        if spare > 0 {
            let (pending, corrupt) = vq.pending_used();
            errors += u64::from(corrupt);
            let n = (pending as usize).min(spare);
            for _ in 0..n {
                let e = vq.ring.used_elem(vq.last_used);
                vq.last_used = vq.last_used.wrapping_add(1);
                let id = e.id();
                let m = vq.inflight.take(id);
                let len = e.len();
                if m.is_some() {
                    vq.push_free(id as u16);
                }
                if self.merge_left > 0 {
                    // The next buffer of a merged frame: data from its start,
                    // the 12 bytes of headroom the header would take included.
                    let seg = m.filter(|_| len <= vq.lens[id as usize]);
                    self.merge_left -= 1;
                    match seg {
                        Some(mut s) if !self.broken => {
                            let off = s.headroom() - NET_HDR_LEN;
                            if !s.set_data(off, len as usize) || self.merge.push(s).is_err() {
                                self.broken = true;
                            }
                        }
                        _ => self.broken = true,
                    }
                    if self.merge_left == 0
                        && let Some(m) = finish_merge(
                            &mut self.merge,
                            &mut self.broken,
                            self.max_len,
                            &mut errors,
                        )
                    {
                        bytes += m.pkt_len() as u64;
                        got += 1;
                        let _ = out.push(m);
                    }
                    continue;
                }
                let Some(mut m) = m else {
                    errors += 1;
                    continue;
                };
                if (len as usize) < NET_HDR_LEN || len > vq.lens[id as usize] {
                    // Never trusted: the buffer goes back to its pool.
                    errors += 1;
                    drop(m);
                    continue;
                }
                let flen = len as usize - NET_HDR_LEN;
                let buffers = if self.mrg { num_buffers(&mut m) } else { 1 };
                // data_off is the fresh mbuf's (set when it was allocated), so
                // the frame starts right after the header the device wrote.
                m.set_len(flen);
                if buffers != 1 {
                    if buffers == 0 {
                        errors += 1;
                        continue;
                    }
                    // The first buffer of a merged frame: it is the packet.
                    m.set_port(self.port);
                    m.set_queue(self.queue);
                    let _ = self.merge.push(m);
                    self.merge_left = buffers - 1;
                    continue;
                }
                if flen > self.max_len {
                    errors += 1;
                    continue;
                }
                m.set_port(self.port);
                m.set_queue(self.queue);
                bytes += flen as u64;
                got += 1;
                let _ = out.push(m);
            }
        }
        if vq.nfree() >= self.refill_thresh {
            let (_, missing) = vq.refill_rx(&self.pool, &mut self.scratch, true);
            if missing > 0 {
                self.counters.rx_nombuf.add(missing as u64);
            }
        }
        if got > 0 {
            self.counters.rx_packets.add(got as u64);
            self.counters.rx_bytes.add(bytes);
        }
        if errors > 0 {
            self.counters.rx_errors.add(errors);
        }
        got
    }
}

/// The merged frame whose last buffer came: the packet, or `None` (and
/// counted) if a buffer was bad or it is over the frame limit.
#[cold]
fn finish_merge(
    merge: &mut RxChain,
    broken: &mut bool,
    max_len: usize,
    errors: &mut u64,
) -> Option<nicpoll::Mbuf> {
    if std::mem::take(broken) || merge.pkt_len() > max_len {
        merge.discard();
        *errors += 1;
        return None;
    }
    merge.finish()
}

/// The `num_buffers` field of the virtio_net_hdr in front of a received
/// frame (le16 at offset 10, virtio 1.0 §5.1.6): the buffers the frame takes.
#[inline]
fn num_buffers(m: &mut nicpoll::Mbuf) -> u16 {
    let Some(h) = m.prepend(NET_HDR_LEN) else {
        return 0;
    };
    let n = u16::from_le_bytes([h[10], h[11]]);
    m.adj(NET_HDR_LEN);
    n
}

/// A transmit queue.
pub struct VirtioTxQueue<B: Bar> {
    vq: Option<Virtqueue<B>>,
    home: Home<B>,
    counters: QueueCountersRef,
    done: MbufBatch,
    free_thresh: u16,
}

impl<B: Bar> VirtioTxQueue<B> {
    pub(crate) fn new(vq: Virtqueue<B>, home: Home<B>, counters: QueueCountersRef) -> Self {
        // DPDK's virtio default: clean up once fewer than min(size / 4, 32) are free.
        let free_thresh = (vq.size / 4).clamp(1, 32);
        VirtioTxQueue {
            vq: Some(vq),
            home,
            counters,
            done: MbufBatch::new(),
            free_thresh,
        }
    }
}

impl<B: Bar> Drop for VirtioTxQueue<B> {
    fn drop(&mut self) {
        park(&self.home, self.vq.take());
    }
}

impl<B: Bar + 'static> TxQueue for VirtioTxQueue<B> {
    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        let Some(vq) = self.vq.as_mut() else { return 0 };
        if pkts.is_empty() {
            return 0;
        }
        let mut errors = 0u64;
        let mut reclaimed = false;
        if (vq.nfree() as usize) < pkts.len().max(self.free_thresh as usize) {
            errors += vq.reclaim_tx(&mut self.done);
            reclaimed = true;
        }
        let mut n = 0;
        let mut posted = 0u64;
        let mut bytes = 0u64;
        while let Some(front) = pkts.as_slice().first() {
            // A chain takes one descriptor per segment (the header goes in the
            // first one's headroom).
            let need = front.nb_segs();
            if need > vq.nfree() as usize && !reclaimed {
                errors += vq.reclaim_tx(&mut self.done);
                reclaimed = true;
                continue;
            }
            if need > vq.nfree() as usize {
                if need > vq.size as usize {
                    // Never fits the ring: dropped and counted.
                    drop(pkts.pop_front());
                    errors += 1;
                    n += 1;
                    continue;
                }
                break;
            }
            let Some(mut m) = pkts.pop_front() else { break };
            n += 1;
            let len = m.pkt_len();
            match m.prepend(NET_HDR_LEN) {
                // No offloads: an all-zero header.
                Some(h) => h.fill(0),
                None => {
                    // No headroom for the header: dropped and counted.
                    errors += 1;
                    continue;
                }
            }
            let id = if m.is_chained() {
                vq.post_chain(m.segment_iovas(), (len + NET_HDR_LEN) as u32)
            } else {
                let id = vq.pop_free();
                vq.post(id, Desc::new(m.data_iova(), m.len() as u32, 0, 0));
                id
            };
            vq.inflight.insert(id, m);
            posted += 1;
            bytes += len as u64;
        }
        if posted > 0 {
            vq.publish(true);
            self.counters.tx_packets.add(posted);
            self.counters.tx_bytes.add(bytes);
        }
        if errors > 0 {
            self.counters.tx_errors.add(errors);
        }
        n
    }
}

/// Control queue classes and commands (virtio 1.0 §5.1.6.5).
pub mod ctrl {
    /// Receive filtering class.
    pub const CLASS_RX: u8 = 0;
    /// Promiscuous on/off (one byte).
    pub const RX_PROMISC: u8 = 0;
    /// All-multicast on/off (one byte).
    pub const RX_ALLMULTI: u8 = 1;
    /// Multiqueue class.
    pub const CLASS_MQ: u8 = 4;
    /// Number of queue pairs (le16).
    pub const MQ_VQ_PAIRS_SET: u8 = 0;
    /// The device's "done".
    pub const OK: u8 = 0;
}

/// Bytes after the control ring for one command: class+cmd at 0, data at 16,
/// the device's ack at 64.
pub(crate) const CTRL_BUF_LEN: usize = 128;
const CTRL_TIMEOUT: Duration = Duration::from_secs(5);

/// The control virtqueue: one synchronous command at a time.
pub(crate) struct CtrlQueue<B: Bar> {
    ring: Vring,
    notifier: Notifier<B>,
    /// Offset of the command buffer from the ring's start.
    buf: usize,
    avail_idx: u16,
    last_used: u16,
    name: String,
}

impl<B: Bar> CtrlQueue<B> {
    /// `ring` must have [`CTRL_BUF_LEN`] bytes after `buf`.
    pub(crate) fn new(ring: Vring, buf: usize, notifier: Notifier<B>, name: &str) -> Self {
        ring.set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT);
        CtrlQueue {
            ring,
            notifier,
            buf,
            avail_idx: 0,
            last_used: 0,
            name: name.to_string(),
        }
    }

    /// Send `class`/`cmd` with `data` and wait for the device's answer.
    pub(crate) fn command(&mut self, class: u8, cmd: u8, data: &[u8]) -> Result<()> {
        assert!(data.len() <= 32, "control command data too long");
        let what = format!("control command class {class} command {cmd}");
        let (b, r) = (self.buf, &self.ring);
        r.write_bytes(b, &[class, cmd]);
        r.write_bytes(b + 16, data);
        r.write_bytes(b + 64, &[0xff]);
        if data.is_empty() {
            r.write_desc(0, Desc::new(r.iova_at(b), 2, VIRTQ_DESC_F_NEXT, 2));
        } else {
            r.write_desc(0, Desc::new(r.iova_at(b), 2, VIRTQ_DESC_F_NEXT, 1));
            r.write_desc(
                1,
                Desc::new(r.iova_at(b + 16), data.len() as u32, VIRTQ_DESC_F_NEXT, 2),
            );
        }
        r.write_desc(2, Desc::new(r.iova_at(b + 64), 1, VIRTQ_DESC_F_WRITE, 0));
        r.write_avail(self.avail_idx, 0);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        r.publish_avail(self.avail_idx);
        self.notifier.notify();
        let t = Instant::now();
        while r.used_idx() == self.last_used {
            if t.elapsed() > CTRL_TIMEOUT {
                return Err(Error::Pci {
                    device: self.name.clone(),
                    reason: format!("the device did not answer {what} within {CTRL_TIMEOUT:?}"),
                });
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        let e = r.used_elem(self.last_used);
        self.last_used = r.used_idx();
        let ack = r.read_byte(b + 64);
        if e.id() != 0 || ack != ctrl::OK {
            return Err(Error::Pci {
                device: self.name.clone(),
                reason: format!(
                    "the device refused {what} (ack {ack:#x}, used id {})",
                    e.id()
                ),
            });
        }
        Ok(())
    }
}
