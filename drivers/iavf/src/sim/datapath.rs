//! The descriptor engine: transmit rings to the wire, the wire to receive rings.
//!
//! Transmit (16-byte data descriptors, `struct iavf_tx_desc`): the device fetches descriptors from
//! its head up to the tail doorbell, gathers each frame's buffers up to EOP,
//! skips context descriptors, and writes DTYPE = 0xF (descriptor done) into
//! qword 1 of every descriptor with RS, after its buffer was read. Write-backs,
//! on both sides, reach memory as module `irq` times them: by whole 4-descriptor
//! lines, the leftovers at the ITR expiry of an armed vector. A tail beyond
//! the ring is a malicious-driver-detection event: the queue stops. A frame
//! shorter than 17 bytes is one too (the queue stops, and i40e disables the VF:
//! `malicious_driver`); shorter than 60 are padded
//! with zeros (the MAC pads), a VLAN tag is inserted when IL2TAG1 asks for it,
//! and the anti-spoof check drops frames whose source MAC is not the VF's.
//!
//! Receive (legacy 32-byte descriptors, `union iavf_32byte_rx_desc`): frames pass the VSI's MAC filters
//! (its addresses, broadcast, promiscuous modes in effect), are hashed (RSS) and
//! steered by the LUT, then written into the buffers of the descriptors the
//! driver posted (head up to the tail doorbell). A frame longer than the data
//! buffer takes several descriptors, only the last with EOP (what the hardware
//! does; a driver that sets max frame = buffer size never sees it); a frame
//! longer than the queue's max frame size is dropped and counted (`rx_discards`,
//! `rx_oversize`; the limit counts the frame's 4-byte CRC). No free descriptor: dropped, counted in `rx_discards` (which
//! GET_STATS reports; DPDK's imissed). Checksums are reported as not checked
//! (L3L4P clear).
#![deny(unsafe_code)]

use std::sync::atomic::Ordering;

use super::device::{Device, Work};
use super::irq::{HeldWb, line_done};
use super::rss::{ToeplitzTable, classify};
use super::spec::{self, pf as lim, reg, rx, tx};
use super::{Counters, FaultState, PfModel};

/// An Rx queue's context as the PF programmed it, and the device's head.
#[derive(Clone, Debug, Default)]
pub(super) struct RxQ {
    pub enabled: bool,
    pub base: u64,
    pub len: u32,
    pub head: u32,
    pub dbuff: u32,
    pub rxmax: u32,
}

/// A Tx queue's context, the device's head and a frame being gathered.
#[derive(Clone, Debug, Default)]
pub(super) struct TxQ {
    pub enabled: bool,
    pub base: u64,
    pub len: u32,
    pub head: u32,
    /// Bytes of a frame whose EOP descriptor has not been fetched yet.
    pub partial: Vec<u8>,
    /// The frame being gathered is broken (a bad descriptor): dropped at EOP.
    pub partial_bad: bool,
    /// VLAN tag to insert into the frame being gathered.
    pub vlan: Option<u16>,
    /// Stopped by a malicious-driver-detection event until re-enabled.
    pub stopped: bool,
}

/// The RSS registers as last read, and the key's hash tables.
pub(super) struct RssCache {
    generation_seen: Option<u64>,
    key: [u8; lim::RSS_KEY_SIZE],
    lut: [u8; lim::RSS_LUT_SIZE],
    hena: u64,
    /// The Toeplitz hash of `key`, by table (rebuilt when the key changes).
    table: ToeplitzTable,
}

impl Default for RssCache {
    fn default() -> Self {
        let key = [0; lim::RSS_KEY_SIZE];
        RssCache {
            generation_seen: None,
            key,
            lut: [0; lim::RSS_LUT_SIZE],
            hena: 0,
            table: ToeplitzTable::new(&key),
        }
    }
}

/// Descriptors fetched per Tx queue per poll.
const TX_BUDGET: u32 = 512;
/// Descriptors read from DMA memory at once.
const TX_FETCH: usize = 64;
/// Frames taken from the wire per poll.
const RX_BATCH: usize = 256;
/// Frame buffers kept for reuse, per VF: enough for a burst in flight on
/// each side of a ring (beyond it, buffers are freed).
const SPARE_FRAMES: usize = 1024;
/// Capacity of a new frame buffer (a standard frame, VLAN tags and CRC).
const FRAME_CAPACITY: usize = 2048;
/// Smallest frame the 700 series transmits (i40e `I40E_MIN_TX_LEN`).
const MIN_TX_LEN: usize = 17;
/// Frames are padded to this (60 bytes + CRC = the Ethernet minimum).
const PAD_LEN: usize = 60;

impl Device {
    // -------------------------------------------------------------- transmit

    pub(super) fn poll_tx(&mut self) -> Work {
        let mut work = 0;
        for q in 0..self.txq.len() {
            let t = &self.txq[q];
            if !t.enabled || t.len == 0 || t.stopped {
                continue;
            }
            let tail = self.sh.regs.get(reg::qtx_tail(q)) & reg::TAIL_MASK;
            if tail == t.head {
                continue;
            }
            if tail >= t.len {
                self.sh.counters.mdd_events.inc();
                log::error!(
                    "simulated iavf {}: Tx queue {q}: tail {tail} beyond the {}-descriptor ring \
                     (malicious driver detection): queue stopped",
                    self.sh.name,
                    t.len
                );
                self.txq[q].stopped = true;
                self.dirty = true;
                continue;
            }
            work += self.tx_ring(q, tail);
        }
        if !self.tx_frames.is_empty() {
            let mut frames = std::mem::take(&mut self.tx_frames);
            let lost = self.wire.send(&mut frames);
            self.sh.counters.wire_lost.add(lost);
            self.tx_frames = frames;
        }
        work
    }

    /// Fetch and process descriptors of queue `q` from its head to `tail`.
    fn tx_ring(&mut self, q: usize, tail: u32) -> Work {
        let mut buf = [0u8; tx::DESC_LEN * TX_FETCH];
        let mut done = 0u32;
        while done < TX_BUDGET {
            let (base, len, head) = {
                let t = &self.txq[q];
                (t.base, t.len, t.head)
            };
            if head == tail {
                break;
            }
            let run = if tail > head { tail - head } else { len - head }.min(TX_FETCH as u32);
            let ring_at = base + u64::from(head) * tx::DESC_LEN as u64;
            let bytes = &mut buf[..run as usize * tx::DESC_LEN];
            if let Err(e) = self.dma.read(ring_at, bytes) {
                self.sh.iommu.record_fault(
                    e.with_context(format!("fetching Tx descriptors {head}.. of queue {q}")),
                    &self.sh.name,
                );
                // The queue cannot make progress; the hardware would hang it.
                self.txq[q].stopped = true;
                self.dirty = true;
                return done as Work;
            }
            for i in 0..run as usize {
                let d = &buf[i * tx::DESC_LEN..(i + 1) * tx::DESC_LEN];
                let addr = u64::from_le_bytes(d[0..8].try_into().expect("8 bytes"));
                let q1 = u64::from_le_bytes(d[8..16].try_into().expect("8 bytes"));
                let desc_at = ring_at + (i * tx::DESC_LEN) as u64;
                self.tx_descriptor(q, desc_at, addr, q1);
                if self.txq[q].stopped {
                    // A malicious-driver event: the queue takes nothing more.
                    let t = &mut self.txq[q];
                    t.head = (head + i as u32 + 1) % len;
                    return done as Work + i + 1;
                }
            }
            let t = &mut self.txq[q];
            t.head = (head + run) % len;
            done += run;
            self.flush_tx(q, false);
        }
        done as Work
    }

    fn tx_descriptor(&mut self, q: usize, desc_at: u64, addr: u64, q1: u64) {
        let counters: &Counters = &self.sh.counters;
        let dtype = q1 & tx::DTYPE_MASK;
        let cmd = (q1 >> tx::CMD_SHIFT) & 0xFFF;
        match dtype {
            tx::DTYPE_DATA => {
                let size = ((q1 >> tx::BUF_SZ_SHIFT) & tx::BUF_SZ_MASK) as usize;
                let t = &mut self.txq[q];
                if t.partial.capacity() == 0 {
                    // A new frame: into a buffer a received frame left.
                    t.partial = self
                        .spare
                        .pop()
                        .unwrap_or_else(|| Vec::with_capacity(FRAME_CAPACITY));
                }
                if size == 0 || t.partial.len() + size > spec::FRAME_SIZE_MAX + 4 {
                    counters.tx_bad_desc.inc();
                    t.partial_bad = true;
                } else if !t.partial_bad {
                    let at = t.partial.len();
                    t.partial.resize(at + size, 0);
                    if let Err(e) = self.dma.read(addr, &mut t.partial[at..]) {
                        t.partial_bad = true;
                        self.sh.iommu.record_fault(
                            e.with_context(format!(
                                "reading the buffer of a Tx descriptor of queue {q}"
                            )),
                            &self.sh.name,
                        );
                    }
                }
                if cmd & tx::CMD_IL2TAG1 != 0 {
                    self.txq[q].vlan = Some((q1 >> tx::L2TAG1_SHIFT) as u16);
                }
                if cmd & tx::CMD_RS != 0 {
                    let done = (q1 & !tx::DTYPE_MASK) | tx::DTYPE_DESC_DONE;
                    let t = &self.txq[q];
                    let idx = ((desc_at - t.base) / tx::DESC_LEN as u64) as u32;
                    self.tx_wb[q].push_back(HeldWb {
                        idx,
                        at: desc_at,
                        q0: None,
                        q1: done,
                    });
                }
                if cmd & tx::CMD_EOP != 0 {
                    let t = &mut self.txq[q];
                    let frame = std::mem::take(&mut t.partial);
                    let bad = std::mem::take(&mut t.partial_bad);
                    let vlan = t.vlan.take();
                    if bad {
                        counters.tx_errors.inc();
                        self.recycle(frame);
                    } else if let Some(kept) = self.transmit(q, frame, vlan) {
                        self.recycle(kept);
                    }
                }
            }
            // TSO/tunnel/L2TAG2 parameters for the next data descriptors: nothing
            // the model uses.
            tx::DTYPE_CONTEXT => {}
            _ => {
                // Not a descriptor the driver wrote (a done one, DTYPE 0xF, reused
                // without being rewritten, or garbage).
                counters.tx_bad_desc.inc();
                self.txq[q].partial_bad = true;
            }
        }
    }

    /// A complete frame leaves the VF: checks, counters, to the wire batch.
    /// Returns the frame if it did not leave (its buffer is reused).
    fn transmit(&mut self, q: usize, mut frame: Vec<u8>, vlan: Option<u16>) -> Option<Vec<u8>> {
        let c: &Counters = &self.sh.counters;
        if frame.len() < MIN_TX_LEN {
            self.malicious_driver(q, frame.len());
            return Some(frame);
        }
        if let Some(tci) = vlan {
            let mut tag = [0u8; 4];
            tag[0..2].copy_from_slice(&0x8100u16.to_be_bytes());
            tag[2..4].copy_from_slice(&tci.to_be_bytes());
            frame.splice(12..12, tag);
        }
        if frame.len() < PAD_LEN {
            frame.resize(PAD_LEN, 0);
        }
        if self.cfg.spoofchk && !self.pf.owns_source(&frame[6..12]) {
            c.tx_discards.inc();
            c.tx_spoofed.inc();
            return Some(frame);
        }
        // i40e turns VLAN anti-spoofing on with MAC anti-spoofing
        // (i40e_vsi_setup for a spoof-checked VF): a tagged frame whose VLAN
        // is not one of the VF's filters does not leave.
        if self.cfg.spoofchk
            && !self.cfg.pf.is_ice()
            && frame[12..14] == 0x8100u16.to_be_bytes()
            && !self
                .pf
                .vlans
                .contains(&(u16::from_be_bytes([frame[14], frame[15]]) & 0xFFF))
        {
            c.tx_discards.inc();
            c.tx_spoofed.inc();
            return Some(frame);
        }
        let faults: &FaultState = &self.sh.faults;
        if faults.armed.load(Ordering::Relaxed) && FaultState::take(&faults.tx_drop) {
            return Some(frame);
        }
        c.tx_bytes.add(frame.len() as u64);
        match cast_kind(&frame) {
            Cast::Unicast => c.tx_unicast.inc(),
            Cast::Multicast => c.tx_multicast.inc(),
            Cast::Broadcast => c.tx_broadcast.inc(),
        }
        let kept = if !self.link_up {
            c.wire_lost.inc();
            Some(frame)
        } else {
            c.tx_frames.inc();
            self.tx_frames.push(frame);
            None
        };
        if faults.armed.load(Ordering::Relaxed) {
            let left = faults.reset_after_tx.load(Ordering::Acquire);
            if left > 0 {
                faults.reset_after_tx.store(left - 1, Ordering::Release);
                if left == 1 {
                    log::info!(
                        "simulated iavf {}: resetting the VF after the armed number of \
                         transmitted frames (fault knob)",
                        self.sh.name
                    );
                    self.start_reset(true);
                }
            }
        }
        kept
    }

    /// A frame shorter than the hardware sends (17 bytes: Linux's and DPDK's
    /// iavf pad or refuse anything shorter, "hardware can't handle really short
    /// frames") is a malicious-driver event: the hardware stops the transmit
    /// queue; i40e then disables the VF, ignoring its messages until the host
    /// resets it ("TX driver issue detected on VF", i40e_handle_mdd_event);
    /// ice only counts it (the queue stays stuck; its mdd-auto-reset-vf flag is
    /// off by default).
    fn malicious_driver(&mut self, q: usize, len: usize) {
        let c: &Counters = &self.sh.counters;
        c.tx_errors.inc();
        c.mdd_events.inc();
        self.txq[q].stopped = true;
        self.dirty = true;
        log::error!(
            "simulated iavf {}: Malicious Driver Detection event on TX queue {q}: a {len}-byte \
             frame (shorter than {MIN_TX_LEN}): queue stopped",
            self.sh.name
        );
        if !self.cfg.pf.is_ice() {
            log::error!(
                "simulated iavf {}: TX driver issue detected on VF; the PF disables it until the \
                 host resets it",
                self.sh.name
            );
            self.pf.disabled = true;
        }
    }

    // --------------------------------------------------------------- receive

    pub(super) fn poll_rx(&mut self) -> Work {
        let mut frames = std::mem::take(&mut self.rx_frames);
        self.sh.inbox.drain(&mut frames, RX_BATCH);
        let too_long = self.wire.receive(&mut frames, RX_BATCH, &mut self.sock_buf);
        self.sh.counters.wire_lost.add(too_long);
        let n = frames.len();
        if n > 0 {
            self.refresh_rss();
            for mut f in frames.drain(..) {
                self.receive(&mut f);
                self.recycle(f);
            }
        }
        self.rx_frames = frames;
        n
    }

    fn refresh_rss(&mut self) {
        let regs = &self.sh.regs;
        let generation_seen = regs.rss_gen();
        if self.rss.generation_seen == Some(generation_seen) {
            return;
        }
        self.rss.generation_seen = Some(generation_seen);
        let old_key = self.rss.key;
        for i in 0..13 {
            self.rss.key[i * 4..i * 4 + 4]
                .copy_from_slice(&regs.get(reg::vfqf_hkey(i)).to_le_bytes());
        }
        if self.rss.key != old_key {
            self.rss.table = ToeplitzTable::new(&self.rss.key);
        }
        for i in 0..16 {
            self.rss.lut[i * 4..i * 4 + 4]
                .copy_from_slice(&regs.get(reg::vfqf_hlut(i)).to_le_bytes());
        }
        self.rss.hena =
            u64::from(regs.get(reg::vfqf_hena(0))) | (u64::from(regs.get(reg::vfqf_hena(1))) << 32);
    }

    /// Keep `frame`'s buffer for a frame to come (or free it: enough kept).
    #[inline]
    pub(super) fn recycle(&mut self, mut frame: Vec<u8>) {
        if self.spare.len() < SPARE_FRAMES && frame.capacity() > 0 {
            frame.clear();
            self.spare.push(frame);
        }
    }

    /// One frame from the wire (its buffer is the caller's to reuse).
    fn receive(&mut self, f: &mut Vec<u8>) {
        let c: &Counters = &self.sh.counters;
        if !self.link_up {
            c.rx_link_down.inc();
            return;
        }
        if f.len() < 14 {
            c.rx_filtered.inc();
            return;
        }
        let cast = cast_kind(f);
        let dst: [u8; 6] = f[0..6].try_into().expect("6 bytes");
        let accept = match cast {
            Cast::Broadcast => true,
            Cast::Multicast => self.pf.promisc.1 || self.pf.filters.contains(&dst),
            Cast::Unicast => self.pf.promisc.0 || self.pf.filters.contains(&dst),
        };
        if !accept {
            c.rx_filtered.inc();
            return;
        }
        // Counted at the VSI, with the CRC the wire carried.
        c.rx_bytes.add(f.len() as u64 + 4);
        match cast {
            Cast::Unicast => c.rx_unicast.inc(),
            Cast::Multicast => c.rx_multicast.inc(),
            Cast::Broadcast => c.rx_broadcast.inc(),
        }
        let faults: &FaultState = &self.sh.faults;
        let armed = faults.armed.load(Ordering::Relaxed);
        if armed && FaultState::take(&faults.rx_drop) {
            c.rx_discards.inc();
            return;
        }
        let class = classify(f, self.cfg.pf == PfModel::X722);
        let (queue, hash) = if class.input_len > 0 && self.rss.hena & (1u64 << class.pctype) != 0 {
            let h = self.rss.table.hash(&class.input[..class.input_len]);
            let q = self.rss.lut[(h as usize) & (lim::RSS_LUT_SIZE - 1)] & 0xF;
            (usize::from(q), Some(h))
        } else {
            (0, None)
        };
        let mut l2tag1 = None;
        if self.pf.vlan_strip && f.len() >= 18 && f[12..14] == 0x8100u16.to_be_bytes() {
            l2tag1 = Some(u16::from_be_bytes([f[14], f[15]]));
            f.drain(12..16);
        }
        let Some(rq) = self.rxq.get(queue).cloned() else {
            c.rx_discards.inc();
            c.rx_queue_off.inc();
            return;
        };
        if !rq.enabled || rq.len == 0 || rq.dbuff == 0 {
            c.rx_discards.inc();
            c.rx_queue_off.inc();
            return;
        }
        // The queue's largest frame counts the 4-byte CRC the wire carried
        // (the limit i40e programs is MTU + I40E_PACKET_HDR_PAD, which has
        // ETH_FCS_LEN in it; the CRC itself is stripped).
        if f.len() + 4 > rq.rxmax as usize && !(armed && FaultState::take(&faults.ignore_rxmax)) {
            c.rx_discards.inc();
            c.rx_oversize.inc();
            return;
        }
        let tail = self.sh.regs.get(reg::qrx_tail(queue)) & reg::TAIL_MASK;
        if tail >= rq.len {
            // A tail outside the ring gives the device nothing it can use.
            c.rx_discards.inc();
            c.rx_missed.inc();
            return;
        }
        let avail = (tail + rq.len - rq.head) % rq.len;
        let dbuff = rq.dbuff as usize;
        let needed = f.len().div_ceil(dbuff).max(1);
        if (avail as usize) < needed {
            c.rx_discards.inc();
            c.rx_missed.inc();
            return;
        }
        // Status of the last descriptor.
        let umb = match cast {
            Cast::Unicast => rx::UMBCAST_UNICAST,
            Cast::Multicast => rx::UMBCAST_MULTICAST,
            Cast::Broadcast => rx::UMBCAST_BROADCAST,
        };
        let mut last_status = rx::STATUS_EOP | (umb << rx::STATUS_UMBCAST_SHIFT);
        let mut q0_last = 0u64;
        if let Some(h) = hash {
            last_status |= rx::FLTSTAT_RSS_HASH << rx::STATUS_FLTSTAT_SHIFT;
            q0_last |= u64::from(h) << rx::RSS_SHIFT;
        }
        if let Some(tci) = l2tag1 {
            last_status |= rx::STATUS_L2TAG1P;
            q0_last |= u64::from(tci) << rx::L2TAG1_SHIFT;
        }
        let mut error = 0u64;
        let mut bad_length = false;
        if armed {
            if FaultState::take(&faults.rx_error) {
                error |= rx::ERROR_RXE;
            }
            if FaultState::take(&faults.rx_bad_length) {
                bad_length = true;
            }
            if FaultState::take(&faults.rx_no_eop) {
                last_status &= !rx::STATUS_EOP;
            }
        }
        let mut head = rq.head;
        for (i, chunk) in f.chunks(dbuff).enumerate() {
            let last = i + 1 == needed;
            let desc_at = rq.base + u64::from(head) * rx::DESC_LEN as u64;
            let pkt_addr = match self.dma.read_u64(desc_at) {
                Ok(a) => a,
                Err(e) => {
                    self.sh.iommu.record_fault(
                        e.with_context(format!("fetching Rx descriptor {head} of queue {queue}")),
                        &self.sh.name,
                    );
                    c.rx_discards.inc();
                    self.rxq[queue].head = head;
                    return;
                }
            };
            if let Err(e) = self.dma.write(pkt_addr, chunk) {
                // The device does not know its write was blocked: it completes the
                // descriptor anyway, and the driver finds stale data.
                self.sh.iommu.record_fault(
                    e.with_context(format!(
                        "writing a received frame into the buffer of Rx descriptor {head} of \
                         queue {queue}"
                    )),
                    &self.sh.name,
                );
            }
            let len = if bad_length && last {
                rx::LENGTH_PBUF_MASK
            } else {
                chunk.len() as u64
            };
            let (status, q0) = if last {
                (
                    last_status | (u64::from(class.ptype) << rx::PTYPE_SHIFT) | error,
                    q0_last,
                )
            } else {
                (0, 0)
            };
            let q1 = rx::STATUS_DD | status | (len << rx::LENGTH_PBUF_SHIFT);
            // Held until its line is complete or an ITR expires (module irq).
            self.rx_wb[queue].push_back(HeldWb {
                idx: head,
                at: desc_at,
                q0: Some(q0),
                q1,
            });
            head = (head + 1) % rq.len;
        }
        self.rxq[queue].head = head;
        c.rx_delivered.inc();
        self.flush_rx(queue, false);
    }

    /// Write back what receive queue `q` holds: whole lines (`all`: every
    /// held descriptor, an ITR expiry). Returns how many were written.
    pub(super) fn flush_rx(&mut self, q: usize, all: bool) -> Work {
        let (head, len) = (self.rxq[q].head, self.rxq[q].len);
        let mut n = 0;
        while let Some(e) = self.rx_wb[q].front().copied() {
            if !all && !line_done(e.idx, head, len) {
                break;
            }
            self.rx_wb[q].pop_front();
            // Qwords 0, 2 and 3 first, then qword 1 with DD.
            if let Err(err) = self.dma.write_rx_writeback(e.at, e.q0.unwrap_or(0), e.q1) {
                self.sh.iommu.record_fault(
                    err.with_context(format!("writing back Rx descriptor {} of queue {q}", e.idx)),
                    &self.sh.name,
                );
            }
            n += 1;
        }
        if n > 0 {
            // A write-back is the queue's interrupt cause (module irq).
            self.rx_cause[q] = true;
        }
        n
    }

    /// Write back what transmit queue `q` holds (DD into its RS
    /// descriptors): whole lines, or everything (`all`).
    pub(super) fn flush_tx(&mut self, q: usize, all: bool) -> Work {
        let (head, len) = (self.txq[q].head, self.txq[q].len);
        let mut n = 0;
        while let Some(e) = self.tx_wb[q].front().copied() {
            if !all && !line_done(e.idx, head, len) {
                break;
            }
            self.tx_wb[q].pop_front();
            if let Err(err) = self.dma.write_u64(e.at + 8, e.q1) {
                self.sh.iommu.record_fault(
                    err.with_context(format!("writing back a Tx descriptor of queue {q}")),
                    &self.sh.name,
                );
            }
            n += 1;
        }
        if n > 0 {
            self.tx_cause[q] = true;
        }
        n
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cast {
    Unicast,
    Multicast,
    Broadcast,
}

fn cast_kind(f: &[u8]) -> Cast {
    if f[0..6] == [0xff; 6] {
        Cast::Broadcast
    } else if f[0] & 1 != 0 {
        Cast::Multicast
    } else {
        Cast::Unicast
    }
}
