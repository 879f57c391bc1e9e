//! A fake modern virtio-net device for the unit tests: a register file on a
//! [`SimBar`] laid out as QEMU's virtio-net-pci lays out its BAR 4 (common
//! configuration at 0x0, ISR at 0x1000, device configuration at 0x2000,
//! doorbells at 0x3000 with a multiplier of 4), which reacts to the driver's
//! writes as the spec says a device does; and a device side that consumes the
//! available rings and produces used entries through IOVAs (IOVA mode DC: the
//! virtual address), either one step at a time or from a thread.
//!
//! Written from the virtio 1.0 specification (§2.4, §4.1.4, §5.1), not from
//! the driver.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use nicpoll::bar::{Bar, SimBar};

use crate::pci::{CapRef, VirtioCaps};
use crate::queue::ctrl;
use crate::ring::{DeviceView, NET_HDR_LEN, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use crate::transport::{common, feature, netcfg, status};

pub(crate) const BAR_LEN: usize = 0x4000;
const ISR: usize = 0x1000;
const DEVCFG: usize = 0x2000;
const NOTIFY: usize = 0x3000;
const NOTIFY_MULT: u32 = 4;

/// The capabilities of the fake (what `parse_caps` would find).
pub(crate) fn caps() -> VirtioCaps {
    let r = |offset, length| CapRef {
        bar: 4,
        offset,
        length,
    };
    VirtioCaps {
        common: r(0, 0x1000),
        notify: r(NOTIFY as u32, 0x1000),
        notify_multiplier: NOTIFY_MULT,
        isr: r(ISR as u32, 0x1000),
        device: Some(r(DEVCFG as u32, 0x1000)),
    }
}

/// One descriptor of a chain: (address, length, flags).
type Seg = (u64, u32, u16);

#[derive(Clone, Debug, Default)]
pub(crate) struct QState {
    pub max: u16,
    pub size: u16,
    pub enable: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub last_avail: u16,
    pub used_idx: u16,
    pub notifies: u64,
    /// Frames waiting for a receive buffer (as QEMU queues them).
    pub pending: VecDeque<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub offered: u64,
    pub driver_features: u64,
    pub status: u8,
    /// Every value written to device_status, in order.
    pub status_log: Vec<u8>,
    pub accept_features_ok: bool,
    pub queue_sel: u16,
    pub queues: Vec<QState>,
    pub ctrl_index: Option<u16>,
    /// (class, command, data) of every control command.
    pub ctrl_cmds: Vec<(u8, u8, Vec<u8>)>,
    pub ctrl_ack: u8,
    /// DMA the device could not do (addresses outside what it may reach).
    pub dma_faults: u64,
    /// Frames dropped for want of a receive buffer.
    pub rx_dropped: u64,
    /// Of those, frames larger than a buffer without merged receive buffers.
    pub rx_oversize: u64,
    pub tx_frames: u64,
}

/// The fake device. Share it (`Arc`) between the driver (as its `Bar`) and the
/// test (as the device side).
pub(crate) struct FakeVirtio {
    regs: SimBar,
    st: Mutex<State>,
    pub view: DeviceView,
}

/// How the fake is built.
pub(crate) struct FakeConfig {
    pub features: u64,
    pub mac: [u8; 6],
    pub max_pairs: u16,
    pub queue_size: u16,
    pub link_up: bool,
    pub trust_all: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            features: feature::VERSION_1
                | feature::NET_MAC
                | feature::NET_STATUS
                | feature::NET_CTRL_VQ
                | feature::NET_CTRL_RX
                | feature::NET_MQ
                | feature::NET_CSUM
                | feature::NET_MRG_RXBUF
                | feature::RING_EVENT_IDX,
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            max_pairs: 4,
            queue_size: 256,
            link_up: true,
            trust_all: false,
        }
    }
}

impl FakeVirtio {
    pub(crate) fn new(cfg: FakeConfig) -> Arc<FakeVirtio> {
        let mq = cfg.features & feature::NET_MQ != 0;
        let ctrl = cfg.features & feature::NET_CTRL_VQ != 0;
        let pairs = if mq { cfg.max_pairs } else { 1 };
        let nq = 2 * pairs + u16::from(ctrl);
        let regs = SimBar::new(BAR_LEN);
        regs.write16(common::NUM_QUEUES, nq);
        for (i, b) in cfg.mac.iter().enumerate() {
            regs.write8(DEVCFG + netcfg::MAC + i, *b);
        }
        regs.write16(
            DEVCFG + netcfg::STATUS,
            if cfg.link_up { netcfg::S_LINK_UP } else { 0 },
        );
        regs.write16(DEVCFG + netcfg::MAX_VIRTQUEUE_PAIRS, cfg.max_pairs);
        let queues = (0..nq)
            .map(|_| QState {
                max: cfg.queue_size,
                size: cfg.queue_size,
                ..QState::default()
            })
            .collect();
        let dev = FakeVirtio {
            regs,
            st: Mutex::new(State {
                offered: cfg.features,
                driver_features: 0,
                status: 0,
                status_log: Vec::new(),
                accept_features_ok: true,
                queue_sel: 0,
                queues,
                ctrl_index: ctrl.then_some(2 * pairs),
                ctrl_cmds: Vec::new(),
                ctrl_ack: ctrl::OK,
                dma_faults: 0,
                rx_dropped: 0,
                rx_oversize: 0,
                tx_frames: 0,
            }),
            view: DeviceView::new(cfg.trust_all),
        };
        dev.mirror_queue(&dev.state());
        Arc::new(dev)
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mirror_queue(&self, st: &State) {
        let q = st
            .queues
            .get(st.queue_sel as usize)
            .cloned()
            .unwrap_or_default();
        self.regs.write16(common::QUEUE_SIZE, q.size);
        self.regs.write16(common::QUEUE_ENABLE, u16::from(q.enable));
        self.regs.write16(common::QUEUE_NOTIFY_OFF, st.queue_sel);
        for (off, v) in [
            (common::QUEUE_DESC, q.desc),
            (common::QUEUE_DRIVER, q.avail),
            (common::QUEUE_DEVICE, q.used),
        ] {
            self.regs.write32(off, v as u32);
            self.regs.write32(off + 4, (v >> 32) as u32);
        }
    }

    fn on_write(&self, off: usize, v: u32) {
        let mut st = self.state();
        let sel = st.queue_sel as usize;
        match off {
            common::DEVICE_FEATURE_SELECT => {
                let f = if v < 2 {
                    (st.offered >> (32 * v)) as u32
                } else {
                    0
                };
                self.regs.write32(common::DEVICE_FEATURE, f);
            }
            common::DRIVER_FEATURE => {
                let half = self.regs.read32(common::DRIVER_FEATURE_SELECT);
                if half < 2 {
                    let mask = 0xffff_ffffu64 << (32 * half);
                    st.driver_features = (st.driver_features & !mask) | ((v as u64) << (32 * half));
                }
            }
            common::DEVICE_STATUS => {
                let mut v = v as u8;
                st.status_log.push(v);
                if v == 0 {
                    st.driver_features = 0;
                    st.queue_sel = 0;
                    for q in st.queues.iter_mut() {
                        *q = QState {
                            max: q.max,
                            size: q.max,
                            notifies: q.notifies,
                            ..QState::default()
                        };
                    }
                } else if v & status::FEATURES_OK != 0 && st.status & status::FEATURES_OK == 0 {
                    let ok = st.accept_features_ok
                        && st.driver_features & !st.offered == 0
                        && st.driver_features & feature::VERSION_1 != 0;
                    if !ok {
                        v &= !status::FEATURES_OK;
                    }
                }
                st.status = v;
                self.regs.write8(common::DEVICE_STATUS, v);
                self.mirror_queue(&st);
            }
            common::QUEUE_SELECT => {
                st.queue_sel = v as u16;
                self.mirror_queue(&st);
            }
            common::QUEUE_SIZE => {
                if let Some(q) = st.queues.get_mut(sel) {
                    q.size = v as u16;
                }
            }
            common::QUEUE_ENABLE => {
                if let Some(q) = st.queues.get_mut(sel) {
                    q.enable = v & 1 != 0;
                }
            }
            o @ common::QUEUE_DESC..common::LEN => {
                if let Some(q) = st.queues.get_mut(sel) {
                    let field = match (o - common::QUEUE_DESC) / 8 {
                        0 => &mut q.desc,
                        1 => &mut q.avail,
                        _ => &mut q.used,
                    };
                    let shift = if (o - common::QUEUE_DESC).is_multiple_of(8) {
                        0
                    } else {
                        32
                    };
                    *field = (*field & !(0xffff_ffffu64 << shift)) | ((v as u64) << shift);
                }
            }
            o if (NOTIFY..NOTIFY + 0x1000).contains(&o) => {
                let q = ((o - NOTIFY) / NOTIFY_MULT as usize) as u16;
                assert_eq!(v as u16, q, "a doorbell carries its queue's index");
                if let Some(qs) = st.queues.get_mut(q as usize) {
                    qs.notifies += 1;
                }
                if st.ctrl_index == Some(q) {
                    self.process_ctrl(&mut st);
                }
            }
            _ => {}
        }
        // Read-only registers keep their value.
        if off == common::NUM_QUEUES {
            panic!("the driver wrote the read-only num_queues");
        }
    }

    // ---- the device side -------------------------------------------------

    fn read<const N: usize>(&self, st: &mut State, iova: u64) -> [u8; N] {
        let mut b = [0u8; N];
        if !self.view.read(iova, &mut b) {
            st.dma_faults += 1;
        }
        b
    }

    fn write(&self, st: &mut State, iova: u64, b: &[u8]) {
        if !self.view.write(iova, b) {
            st.dma_faults += 1;
        }
    }

    fn live(st: &State, q: usize) -> bool {
        st.status & status::DRIVER_OK != 0 && st.queues.get(q).is_some_and(|q| q.enable)
    }

    /// The next available chain of queue `q`: (head id, [(addr, len, flags)]).
    fn pop_avail(&self, st: &mut State, q: usize) -> Option<(u16, Vec<Seg>)> {
        let qs = st.queues[q].clone();
        let idx = u16::from_le_bytes(self.read::<2>(st, qs.avail + 2));
        fence(Ordering::Acquire);
        if idx == qs.last_avail {
            return None;
        }
        let slot = (qs.last_avail % qs.size) as u64;
        let head = u16::from_le_bytes(self.read::<2>(st, qs.avail + 4 + 2 * slot));
        st.queues[q].last_avail = qs.last_avail.wrapping_add(1);
        let mut chain = Vec::new();
        let mut id = head;
        for _ in 0..qs.size {
            let d = self.read::<16>(st, qs.desc + 16 * (id % qs.size) as u64);
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap());
            let len = u32::from_le_bytes(d[8..12].try_into().unwrap());
            let flags = u16::from_le_bytes(d[12..14].try_into().unwrap());
            chain.push((addr, len, flags));
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                break;
            }
            id = u16::from_le_bytes(d[14..16].try_into().unwrap());
        }
        Some((head, chain))
    }

    /// Append a used entry to queue `q` (any id and length: tests use this to
    /// produce bad entries).
    pub(crate) fn push_used_locked(&self, st: &mut State, q: usize, id: u32, len: u32) {
        let qs = st.queues[q].clone();
        let slot = (qs.used_idx % qs.size) as u64;
        let mut e = [0u8; 8];
        e[0..4].copy_from_slice(&id.to_le_bytes());
        e[4..8].copy_from_slice(&len.to_le_bytes());
        self.write(st, qs.used + 4 + 8 * slot, &e);
        fence(Ordering::Release);
        let idx = qs.used_idx.wrapping_add(1);
        self.write(st, qs.used + 2, &idx.to_le_bytes());
        st.queues[q].used_idx = idx;
    }

    /// Replace the id of used entry `idx` of queue `q` (a device bug, for
    /// tests).
    pub(crate) fn overwrite_used_id(&self, q: usize, idx: u16, id: u32) {
        let mut st = self.state();
        let qs = st.queues[q].clone();
        let slot = (idx % qs.size) as u64;
        self.write(&mut st, qs.used + 4 + 8 * slot, &id.to_le_bytes());
    }

    pub(crate) fn push_used(&self, q: usize, id: u32, len: u32) {
        let mut st = self.state();
        self.push_used_locked(&mut st, q, id, len);
    }

    /// Set queue `q`'s used-ring flags (`VIRTQ_USED_F_NO_NOTIFY`).
    pub(crate) fn set_used_flags(&self, q: usize, flags: u16) {
        let mut st = self.state();
        let used = st.queues[q].used;
        self.write(&mut st, used, &flags.to_le_bytes());
    }

    fn process_ctrl(&self, st: &mut State) {
        let q = st.ctrl_index.unwrap() as usize;
        while let Some((head, chain)) = self.pop_avail(st, q) {
            let mut ro = Vec::new();
            let mut ack_at = None;
            for (addr, len, flags) in chain {
                if flags & VIRTQ_DESC_F_WRITE != 0 {
                    ack_at = Some(addr);
                } else {
                    let mut b = vec![0u8; len as usize];
                    if !self.view.read(addr, &mut b) {
                        st.dma_faults += 1;
                    }
                    ro.extend(b);
                }
            }
            let (class, cmd) = (
                ro.first().copied().unwrap_or(0xff),
                ro.get(1).copied().unwrap_or(0xff),
            );
            st.ctrl_cmds
                .push((class, cmd, ro.get(2..).unwrap_or_default().to_vec()));
            let ack = st.ctrl_ack;
            if let Some(a) = ack_at {
                self.write(st, a, &[ack]);
            }
            self.push_used_locked(st, q, head as u32, 1);
        }
    }

    /// Consume every available transmit buffer of queue `q`; returns the frames
    /// (without their virtio_net_hdr).
    pub(crate) fn tx_pop(&self, q: usize) -> Vec<Vec<u8>> {
        let mut st = self.state();
        self.tx_pop_locked(&mut st, q)
    }

    fn tx_pop_locked(&self, st: &mut State, q: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if !Self::live(st, q) {
            return out;
        }
        while let Some((head, chain)) = self.pop_avail(st, q) {
            let mut bytes = Vec::new();
            for (addr, len, flags) in chain {
                assert_eq!(
                    flags & VIRTQ_DESC_F_WRITE,
                    0,
                    "a transmit buffer is device-readable"
                );
                let mut b = vec![0u8; len as usize];
                if !self.view.read(addr, &mut b) {
                    st.dma_faults += 1;
                }
                bytes.extend(b);
            }
            assert!(bytes.len() >= NET_HDR_LEN, "every frame has its header");
            assert_eq!(
                &bytes[..NET_HDR_LEN],
                &[0u8; NET_HDR_LEN],
                "no offloads asked for"
            );
            out.push(bytes[NET_HDR_LEN..].to_vec());
            st.tx_frames += 1;
            self.push_used_locked(st, q, head as u32, 0);
        }
        out
    }

    /// Deliver `frame` into receive queue `q`, with `hdr` as its virtio_net_hdr;
    /// false if the queue has no buffer (the frame is dropped).
    pub(crate) fn rx_push(&self, q: usize, frame: &[u8], hdr: [u8; NET_HDR_LEN]) -> bool {
        let mut st = self.state();
        self.rx_push_locked(&mut st, q, frame, hdr)
    }

    fn rx_push_locked(
        &self,
        st: &mut State,
        q: usize,
        frame: &[u8],
        hdr: [u8; NET_HDR_LEN],
    ) -> bool {
        if !Self::live(st, q) {
            return false;
        }
        // Merged receive buffers (§5.1.6.4): as many buffers as the header
        // and the frame take, the header's num_buffers saying how many.
        // Without them one buffer must hold it all, else the frame is dropped.
        let mrg = st.driver_features & feature::NET_MRG_RXBUF != 0;
        let total = NET_HDR_LEN + frame.len();
        let mut bufs: Vec<(u16, u64, u32)> = Vec::new();
        let mut room = 0usize;
        while room < total {
            let Some((head, chain)) = self.pop_avail(st, q) else {
                // Not enough buffers now: put back what was taken; the frame
                // is dropped (or, for loop_back, waits).
                st.queues[q].last_avail = st.queues[q].last_avail.wrapping_sub(bufs.len() as u16);
                st.rx_dropped += 1;
                return false;
            };
            assert_eq!(chain.len(), 1, "one descriptor per receive buffer");
            let (addr, len, flags) = chain[0];
            assert_ne!(
                flags & VIRTQ_DESC_F_WRITE,
                0,
                "a receive buffer is device-writable"
            );
            bufs.push((head, addr, len));
            room += len as usize;
            if !mrg && room < total {
                st.queues[q].last_avail = st.queues[q].last_avail.wrapping_sub(1);
                st.rx_dropped += 1;
                st.rx_oversize += 1;
                return false;
            }
        }
        let mut b = hdr.to_vec();
        b[10..12].copy_from_slice(&(bufs.len() as u16).to_le_bytes());
        b.extend_from_slice(frame);
        let mut at = 0;
        let mut used = Vec::new();
        for &(head, addr, len) in &bufs {
            let n = (b.len() - at).min(len as usize);
            self.write(st, addr, &b[at..at + n]);
            at += n;
            used.push((head as u32, n as u32));
        }
        self.push_used_many_locked(st, q, &used);
        true
    }

    /// Append used entries to queue `q` and publish them with one index write
    /// (as QEMU's virtqueue_flush does for a merged frame).
    fn push_used_many_locked(&self, st: &mut State, q: usize, entries: &[(u32, u32)]) {
        let qs = st.queues[q].clone();
        let mut idx = qs.used_idx;
        for &(id, len) in entries {
            let slot = (idx % qs.size) as u64;
            let mut e = [0u8; 8];
            e[0..4].copy_from_slice(&id.to_le_bytes());
            e[4..8].copy_from_slice(&len.to_le_bytes());
            self.write(st, qs.used + 4 + 8 * slot, &e);
            idx = idx.wrapping_add(1);
        }
        fence(Ordering::Release);
        self.write(st, qs.used + 2, &idx.to_le_bytes());
        st.queues[q].used_idx = idx;
    }

    /// Loop transmit queue 2i+1 back to receive queue 2i, keeping frames that
    /// find no buffer for later (in order). Returns frames moved.
    pub(crate) fn loop_back(&self) -> usize {
        let mut st = self.state();
        let pairs = st.queues.len() / 2;
        let mut moved = 0;
        for i in 0..pairs {
            let frames = self.tx_pop_locked(&mut st, 2 * i + 1);
            st.queues[2 * i].pending.extend(frames);
            while let Some(f) = st.queues[2 * i].pending.pop_front() {
                if !Self::live(&st, 2 * i) {
                    st.queues[2 * i].pending.clear();
                    break;
                }
                let mut hdr = [0u8; NET_HDR_LEN];
                hdr[10] = 1; // num_buffers
                let oversize = st.rx_oversize;
                if !self.rx_push_locked(&mut st, 2 * i, &f, hdr) {
                    if st.rx_oversize != oversize {
                        continue; // never fits: dropped
                    }
                    st.rx_dropped -= 1; // not dropped: it waits
                    st.queues[2 * i].pending.push_front(f);
                    break;
                }
                moved += 1;
            }
        }
        moved
    }

    /// Run [`loop_back`](Self::loop_back) on a thread until the handle drops.
    pub(crate) fn spawn_loopback(self: &Arc<Self>) -> Looper {
        let stop = Arc::new(AtomicBool::new(false));
        let (dev, s) = (self.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if dev.loop_back() == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
            }
        });
        Looper {
            stop,
            handle: Some(handle),
        }
    }
}

/// Stops the loopback thread when dropped.
pub(crate) struct Looper {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Looper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Bar for FakeVirtio {
    fn len(&self) -> usize {
        BAR_LEN
    }
    fn read32(&self, offset: usize) -> u32 {
        self.regs.read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        self.regs.write32(offset, value);
        self.on_write(offset, value);
    }
    fn read16(&self, offset: usize) -> u16 {
        self.regs.read16(offset)
    }
    fn write16(&self, offset: usize, value: u16) {
        self.regs.write16(offset, value);
        self.on_write(offset, value.into());
    }
    fn read8(&self, offset: usize) -> u8 {
        if offset == ISR {
            // Reading the ISR clears it.
            let v = self.regs.read8(offset);
            self.regs.write8(offset, 0);
            return v;
        }
        self.regs.read8(offset)
    }
    fn write8(&self, offset: usize, value: u8) {
        self.regs.write8(offset, value);
        self.on_write(offset, value.into());
    }
}
