//! Test side of the simulated VF's tests: a minimal admin-queue client, message
//! builders and ring writers, written from the public headers directly (virtchnl.h, DPDK
//! `base/iavf_register.h`, `iavf_adminq_cmd.h`, `iavf_type.h`). It uses
//! neither the driver's modules nor the model's constants, so a mistake in
//! either shows against a third reading of the spec.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use nicpoll::bar::Bar;
use nicpoll::memory::{DmaMemory, DmaRegion};
use nicpoll_iavf::sim::{SimConfig, SimVf, SimVfBar};

/// Register offsets (`iavf_register.h`).
pub mod r {
    pub const fn qtx_tail(q: usize) -> usize {
        q * 4
    }
    pub const fn qrx_tail(q: usize) -> usize {
        0x2000 + q * 4
    }
    pub const VFINT_ICR01: usize = 0x4800;
    pub const VFINT_DYN_CTL01: usize = 0x5C00;
    pub const fn dyn_ctln1(v: usize) -> usize {
        0x3800 + 4 * v
    }
    /// DYN_CTL: INTENA, CLEARPBA, ITR index (3: none) at bit 3, interval
    /// (2 µs units) at bit 5, WB_ON_ITR (queue vectors).
    pub const INTENA: u32 = 1 << 0;
    pub const CLEARPBA: u32 = 1 << 1;
    pub const ITR_NONE: u32 = 3 << 3;
    pub const INTERVAL_SHIFT: u32 = 5;
    pub const WB_ON_ITR: u32 = 1 << 30;
    pub const VFINT_ICR0_ENA1: usize = 0x5000;
    pub const ARQBAH: usize = 0x6000;
    pub const ATQH: usize = 0x6400;
    pub const ATQLEN: usize = 0x6800;
    pub const ARQBAL: usize = 0x6C00;
    pub const ARQT: usize = 0x7000;
    pub const ARQH: usize = 0x7400;
    pub const ATQBAH: usize = 0x7800;
    pub const ATQBAL: usize = 0x7C00;
    pub const ARQLEN: usize = 0x8000;
    pub const ATQT: usize = 0x8400;
    pub const RSTAT: usize = 0x8800;
    pub const fn hena(i: usize) -> usize {
        0xC400 + 4 * i
    }
    pub const fn hkey(i: usize) -> usize {
        0xCC00 + 4 * i
    }
    pub const fn hlut(i: usize) -> usize {
        0xD000 + 4 * i
    }
    pub const LEN_ENABLE: u32 = 1 << 31;
    pub const LEN_OVFL: u32 = 1 << 29;
}

/// AQ descriptor flags (`iavf_adminq_cmd.h`).
pub mod f {
    pub const DD: u16 = 0x0001;
    pub const CMP: u16 = 0x0002;
    pub const ERR: u16 = 0x0004;
    pub const LB: u16 = 0x0200;
    pub const RD: u16 = 0x0400;
    pub const BUF: u16 = 0x1000;
    pub const SI: u16 = 0x2000;
}

/// virtchnl opcodes (`enum virtchnl_ops`).
pub mod op {
    pub const VERSION: u32 = 1;
    pub const RESET_VF: u32 = 2;
    pub const GET_VF_RESOURCES: u32 = 3;
    pub const CONFIG_TX_QUEUE: u32 = 4;
    pub const CONFIG_RX_QUEUE: u32 = 5;
    pub const CONFIG_VSI_QUEUES: u32 = 6;
    pub const CONFIG_IRQ_MAP: u32 = 7;
    pub const ENABLE_QUEUES: u32 = 8;
    pub const DISABLE_QUEUES: u32 = 9;
    pub const ADD_ETH_ADDR: u32 = 10;
    pub const DEL_ETH_ADDR: u32 = 11;
    pub const ADD_VLAN: u32 = 12;
    pub const DEL_VLAN: u32 = 13;
    pub const CONFIG_PROMISCUOUS_MODE: u32 = 14;
    pub const GET_STATS: u32 = 15;
    pub const EVENT: u32 = 17;
    pub const CONFIG_RSS_KEY: u32 = 23;
    pub const CONFIG_RSS_LUT: u32 = 24;
    pub const GET_RSS_HENA_CAPS: u32 = 25;
    pub const SET_RSS_HENA: u32 = 26;
    pub const ENABLE_VLAN_STRIPPING: u32 = 27;
    pub const DISABLE_VLAN_STRIPPING: u32 = 28;
    pub const REQUEST_QUEUES: u32 = 29;
    pub const GET_SUPPORTED_RXDIDS: u32 = 44;
}

/// Capability bits (`VIRTCHNL_VF_OFFLOAD_*`).
pub mod cap {
    pub const L2: u32 = 1 << 0;
    pub const RSS_AQ: u32 = 1 << 3;
    pub const RSS_REG: u32 = 1 << 4;
    pub const WB_ON_ITR: u32 = 1 << 5;
    pub const REQ_QUEUES: u32 = 1 << 6;
    pub const ADV_LINK_SPEED: u32 = 1 << 7;
    pub const VLAN: u32 = 1 << 16;
    pub const RX_POLLING: u32 = 1 << 17;
    pub const RSS_PF: u32 = 1 << 19;
    pub const RX_FLEX_DESC: u32 = 1 << 26;
}

/// virtchnl status codes (`enum virtchnl_status_code`): what ice answers with.
pub const SUCCESS: i32 = 0;
pub const ERR_PARAM: i32 = -5;
pub const ERR_NOT_SUPPORTED: i32 = -64;
/// Linux errno values, which Linux 6.12's i40e answers with.
pub const EPERM: i32 = -1;
pub const EINVAL: i32 = -22;
pub const EOPNOTSUPP: i32 = -95;

pub const AQ_N: u32 = 32;
pub const AQ_BUF: usize = 4096;

/// A message the PF put on the ARQ.
#[derive(Clone, Debug)]
pub struct Msg {
    pub op: u32,
    pub status: i32,
    pub payload: Vec<u8>,
    pub flags: u16,
    pub retval: u16,
    pub param0: u32,
    pub param1: u32,
}

impl Msg {
    /// For an EVENT: (event, speed, status).
    pub fn event(&self) -> (i32, u32, u8) {
        (
            le32(&self.payload, 0) as i32,
            le32(&self.payload, 4),
            self.payload[8],
        )
    }
}

/// ATQ descriptor after the device completed it.
#[derive(Clone, Copy, Debug)]
pub struct AqWb {
    pub flags: u16,
    pub retval: u16,
}

pub fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
pub fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// What GET_VF_RESOURCES said.
#[derive(Clone, Debug)]
pub struct Resources {
    pub num_vsis: u16,
    pub num_queue_pairs: u16,
    pub max_vectors: u16,
    pub max_mtu: u16,
    pub caps: u32,
    pub rss_key_size: u32,
    pub rss_lut_size: u32,
    pub vsi_id: u16,
    pub vsi_queue_pairs: u16,
    pub vsi_type: i32,
    pub mac: [u8; 6],
}

/// A simulated VF, its BAR, one mapped DMA region with a bump allocator, and an
/// admin-queue client.
pub struct Rig {
    pub vf: SimVf,
    pub bar: SimVfBar,
    pub mem: DmaMemory,
    pub region: std::sync::Arc<DmaRegion>,
    next: usize,
    pub atq: u64,
    pub arq: u64,
    pub atq_bufs: u64,
    pub arq_bufs: u64,
    ntu: u32,
    ntc: u32,
    pub events: Vec<Msg>,
    pub vsi_id: u16,
    /// What GET_VF_RESOURCES granted.
    pub caps: u32,
    /// The vector `queues` mapped the queues to.
    pub irq_vector: u16,
}

pub const REGION: usize = 8 << 20;

impl Rig {
    pub fn new(cfg: SimConfig) -> Rig {
        let vf = SimVf::new(cfg).expect("simulated VF starts");
        let mem = DmaMemory::plain();
        let region = std::sync::Arc::new(mem.alloc("sim test memory", REGION).unwrap());
        vf.map_dma(&region).unwrap();
        let bar = vf.bar();
        let mut rig = Rig {
            vf,
            bar,
            mem,
            region,
            next: 0,
            atq: 0,
            arq: 0,
            atq_bufs: 0,
            arq_bufs: 0,
            ntu: 0,
            ntc: 0,
            events: Vec::new(),
            vsi_id: 0,
            caps: 0,
            irq_vector: 0,
        };
        rig.atq = rig.alloc(AQ_N as usize * 32, 4096);
        rig.arq = rig.alloc(AQ_N as usize * 32, 4096);
        rig.atq_bufs = rig.alloc(AQ_N as usize * AQ_BUF, 4096);
        rig.arq_bufs = rig.alloc(AQ_N as usize * AQ_BUF, 4096);
        rig
    }

    /// A default VF with the admin queue up, VERSION and GET_VF_RESOURCES done.
    pub fn up(cfg: SimConfig) -> (Rig, Resources) {
        let mut rig = Rig::new(cfg);
        rig.init_aq();
        let res = rig.bring_up(cap::L2 | cap::RSS_PF | cap::RX_POLLING | cap::WB_ON_ITR);
        (rig, res)
    }

    /// `len` bytes of the region, aligned; returns the IOVA.
    pub fn alloc(&mut self, len: usize, align: usize) -> u64 {
        let off = self.next.div_ceil(align) * align;
        assert!(off + len <= REGION, "test region exhausted");
        self.next = off + len;
        self.region.iova(off)
    }

    pub fn write(&self, iova: u64, data: &[u8]) {
        self.vf.write_iova(iova, data).unwrap();
    }

    pub fn read(&self, iova: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.vf.read_iova(iova, &mut b).unwrap();
        b
    }

    pub fn read_u64(&self, iova: u64) -> u64 {
        le64(&self.read(iova, 8), 0)
    }

    pub fn write_u64(&self, iova: u64, v: u64) {
        self.write(iova, &v.to_le_bytes())
    }

    /// Admin queue bring-up as DPDK's `iavf_init_adminq` does it.
    pub fn init_aq(&mut self) {
        let b = &self.bar;
        self.ntu = 0;
        self.ntc = 0;
        b.write32(r::ATQH, 0);
        b.write32(r::ATQT, 0);
        b.write32(r::ATQLEN, AQ_N | r::LEN_ENABLE);
        b.write32(r::ATQBAL, self.atq as u32);
        b.write32(r::ATQBAH, (self.atq >> 32) as u32);
        assert_eq!(b.read32(r::ATQBAL), self.atq as u32);
        for i in 0..AQ_N {
            self.arm_arq(i);
        }
        b.write32(r::ARQH, 0);
        b.write32(r::ARQT, 0);
        b.write32(r::ARQLEN, AQ_N | r::LEN_ENABLE);
        b.write32(r::ARQBAL, self.arq as u32);
        b.write32(r::ARQBAH, (self.arq >> 32) as u32);
        b.write32(r::ARQT, AQ_N - 1);
    }

    fn arm_arq(&self, i: u32) {
        let buf = self.arq_bufs + u64::from(i) * AQ_BUF as u64;
        let mut d = [0u8; 32];
        d[0..2].copy_from_slice(&(f::BUF | f::LB).to_le_bytes());
        d[4..6].copy_from_slice(&(AQ_BUF as u16).to_le_bytes());
        d[0x18..0x1C].copy_from_slice(&((buf >> 32) as u32).to_le_bytes());
        d[0x1C..0x20].copy_from_slice(&(buf as u32).to_le_bytes());
        self.write(self.arq + u64::from(i) * 32, &d);
    }

    /// Post a message and wait for the ATQ head to move past it.
    pub fn send(&mut self, v_op: u32, payload: &[u8]) -> AqWb {
        self.send_raw(0x0801, v_op, payload, None)
    }

    /// Post a descriptor with any AQ opcode, optionally a buffer address
    /// different from the slot's.
    pub fn send_raw(&mut self, aq_op: u16, v_op: u32, payload: &[u8], addr: Option<u64>) -> AqWb {
        let slot = self.ntu;
        let buf = self.atq_bufs + u64::from(slot) * AQ_BUF as u64;
        let mut d = [0u8; 32];
        let mut flags = f::SI;
        if !payload.is_empty() {
            flags |= f::BUF | f::RD;
            if payload.len() > 512 {
                flags |= f::LB;
            }
            d[4..6].copy_from_slice(&(payload.len() as u16).to_le_bytes());
            self.write(buf, payload);
            let a = addr.unwrap_or(buf);
            d[0x18..0x1C].copy_from_slice(&((a >> 32) as u32).to_le_bytes());
            d[0x1C..0x20].copy_from_slice(&(a as u32).to_le_bytes());
        }
        d[0..2].copy_from_slice(&flags.to_le_bytes());
        d[2..4].copy_from_slice(&aq_op.to_le_bytes());
        d[8..12].copy_from_slice(&v_op.to_le_bytes());
        let at = self.atq + u64::from(slot) * 32;
        self.write(at, &d);
        self.ntu = (self.ntu + 1) % AQ_N;
        self.bar.write32(r::ATQT, self.ntu);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.bar.read32(r::ATQH) != self.ntu {
            // A message that resets the VF (RESET_VF, REQUEST_QUEUES) may have
            // the reset clear the queue registers, head included, between two
            // of our reads: the queue is gone then, not stuck.
            if self.bar.read32(r::ATQLEN) & r::LEN_ENABLE == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ATQ head did not move (op {v_op})"
            );
            std::thread::sleep(Duration::from_micros(20));
        }
        let wb = self.read(at, 8);
        AqWb {
            flags: le16(&wb, 0),
            retval: le16(&wb, 6),
        }
    }

    /// The next ARQ message within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        while self.bar.read32(r::ARQH) & 0x3FF == self.ntc {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        let slot = self.ntc;
        let d = self.read(self.arq + u64::from(slot) * 32, 32);
        let len = usize::from(le16(&d, 4));
        let buf = self.arq_bufs + u64::from(slot) * AQ_BUF as u64;
        let m = Msg {
            op: le32(&d, 8),
            status: le32(&d, 12) as i32,
            payload: if len > 0 {
                self.read(buf, len)
            } else {
                Vec::new()
            },
            flags: le16(&d, 0),
            retval: le16(&d, 6),
            param0: le32(&d, 0x10),
            param1: le32(&d, 0x14),
        };
        assert_eq!(le16(&d, 2), 0x0802, "ARQ descriptors carry send_msg_to_vf");
        self.arm_arq(slot);
        self.bar.write32(r::ARQT, slot);
        self.ntc = (self.ntc + 1) % AQ_N;
        Some(m)
    }

    /// Send and wait for the reply to `v_op` (events seen meanwhile are kept).
    pub fn call(&mut self, v_op: u32, payload: &[u8]) -> Msg {
        let wb = self.send(v_op, payload);
        assert_eq!(
            wb.flags & (f::DD | f::CMP | f::ERR),
            f::DD | f::CMP,
            "AQ-level error {wb:?}"
        );
        self.reply(v_op)
    }

    /// Wait for the reply to `v_op`.
    pub fn reply(&mut self, v_op: u32) -> Msg {
        loop {
            let m = self
                .recv(Duration::from_secs(5))
                .unwrap_or_else(|| panic!("no reply to virtchnl op {v_op}"));
            // Events arrive between replies (a reply to an EVENT sent by the VF
            // carries op 17 too, with no payload).
            if m.op == op::EVENT && !(v_op == op::EVENT && m.payload.is_empty()) {
                self.events.push(m);
                continue;
            }
            assert_eq!(m.op, v_op, "reply to another op");
            return m;
        }
    }

    /// Send and expect this status.
    pub fn expect(&mut self, v_op: u32, payload: &[u8], status: i32) -> Msg {
        let m = self.call(v_op, payload);
        assert_eq!(m.status, status, "op {v_op} with {} bytes", payload.len());
        m
    }

    /// The next event (within 1 s).
    pub fn event(&mut self) -> Msg {
        if !self.events.is_empty() {
            return self.events.remove(0);
        }
        let m = self.recv(Duration::from_secs(1)).expect("an event");
        assert_eq!(m.op, op::EVENT);
        m
    }

    /// VERSION then GET_VF_RESOURCES asking `caps`.
    pub fn bring_up(&mut self, caps: u32) -> Resources {
        let v = self.expect(op::VERSION, &version(1, 1), SUCCESS);
        assert_eq!((le32(&v.payload, 0), le32(&v.payload, 4)), (1, 1));
        let m = self.expect(op::GET_VF_RESOURCES, &caps.to_le_bytes(), SUCCESS);
        let res = parse_resources(&m.payload);
        self.vsi_id = res.vsi_id;
        self.caps = res.caps;
        res
    }

    /// Configure `n` queue pairs with rings of `ring_len` (Rx buffers of
    /// `buf` bytes, max frame `max_pkt`), map them to a vector whose ITR writes
    /// descriptors back as DPDK's poll mode sets it (`iavf_config_rx_queues_irqs`:
    /// vector 1 with WB_ON_ITR when granted, else vector 0 enabled with a 32 µs
    /// ITR), enable them.
    pub fn queues(&mut self, n: usize, ring_len: u32, buf: u32, max_pkt: u32) -> Vec<Queue> {
        let mut qs = Vec::new();
        for q in 0..n {
            let tx_ring = self.alloc(ring_len as usize * 16, 4096);
            let rx_ring = self.alloc(ring_len as usize * 32, 4096);
            let rx_bufs = self.alloc(ring_len as usize * buf as usize, 4096);
            qs.push(Queue {
                id: q,
                len: ring_len,
                tx_ring,
                rx_ring,
                rx_bufs,
                buf,
                tx_next: 0,
                rx_next: 0,
            });
        }
        let pairs: Vec<Pair> = qs
            .iter()
            .map(|q| Pair {
                qid: q.id as u16,
                tx_len: q.len as u16,
                tx_ring: q.tx_ring,
                rx_len: q.len,
                rx_ring: q.rx_ring,
                buf: q.buf,
                max_pkt,
            })
            .collect();
        self.expect(
            op::CONFIG_VSI_QUEUES,
            &vsi_queues(self.vsi_id, &pairs),
            SUCCESS,
        );
        let all = (1u16 << n) - 1;
        self.irq_vector = if self.caps & cap::WB_ON_ITR != 0 {
            self.bar
                .write32(r::dyn_ctln1(0), r::WB_ON_ITR | (2 << r::INTERVAL_SHIFT));
            1
        } else {
            self.bar
                .write32(r::VFINT_DYN_CTL01, r::INTENA | (16 << r::INTERVAL_SHIFT));
            0
        };
        self.expect(
            op::CONFIG_IRQ_MAP,
            &irq_map(&[(self.vsi_id, self.irq_vector, all, all)]),
            SUCCESS,
        );
        for q in &qs {
            // Post every Rx buffer, tail = len - 1.
            for i in 0..q.len {
                self.post_rx(q, i);
            }
            self.bar.write32(r::qrx_tail(q.id), q.len - 1);
        }
        let all = (1u32 << n) - 1;
        self.expect(
            op::ENABLE_QUEUES,
            &queue_select(self.vsi_id, all, all),
            SUCCESS,
        );
        qs
    }

    /// Write Rx descriptor `i` of `q` in read format: its buffer, DD clear.
    pub fn post_rx(&self, q: &Queue, i: u32) {
        let mut d = [0u8; 32];
        d[0..8].copy_from_slice(&q.rx_buf(i).to_le_bytes());
        self.write(q.rx_ring + u64::from(i) * 32, &d);
    }

    /// Rx descriptor `i` of `q`, all four qwords.
    pub fn rx_desc(&self, q: &Queue, i: u32) -> [u64; 4] {
        let b = self.read(q.rx_ring + u64::from(i) * 32, 32);
        [le64(&b, 0), le64(&b, 8), le64(&b, 16), le64(&b, 24)]
    }

    /// Enable vector 0 again after it fired and masked itself (what DPDK's
    /// alarm does every 50 ms): without RX_POLLING the PF leaves its
    /// auto-masking on, and write-back on ITR stops with the mask.
    pub fn rearm(&self) {
        if self.irq_vector == 0 {
            self.bar
                .write32(r::VFINT_DYN_CTL01, r::INTENA | r::CLEARPBA | r::ITR_NONE);
        }
    }

    /// Wait until Rx descriptor `i` of `q` has DD.
    pub fn wait_rx(&self, q: &Queue, i: u32) -> [u64; 4] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let d = self.rx_desc(q, i);
            if d[1] & 1 != 0 {
                return d;
            }
            self.rearm();
            assert!(
                Instant::now() < deadline,
                "Rx descriptor {i} of queue {} not done",
                q.id
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Put `frame` in Tx descriptor `tx_next` of `q` (one buffer, EOP|ICRC, RS
    /// if asked), at `buf_iova` (or a buffer of its own), without ringing.
    pub fn put_tx(&mut self, q: &mut Queue, frame: &[u8], rs: bool, buf_iova: Option<u64>) -> u32 {
        let buf = match buf_iova {
            Some(b) => b,
            None => {
                let b = self.alloc(frame.len().max(1), 128);
                self.write(b, frame);
                b
            }
        };
        let i = q.tx_next;
        let cmd: u64 = 0x001 | 0x004 | if rs { 0x002 } else { 0 };
        let q1 = (cmd << 4) | ((frame.len() as u64) << 34);
        self.write_u64(q.tx_ring + u64::from(i) * 16, buf);
        self.write_u64(q.tx_ring + u64::from(i) * 16 + 8, q1);
        q.tx_next = (q.tx_next + 1) % q.len;
        i
    }

    /// Ring the Tx doorbell of `q`.
    pub fn ring_tx(&self, q: &Queue) {
        self.bar.write32(r::qtx_tail(q.id), q.tx_next);
    }

    /// Tx descriptor `i` of `q`, qword 1.
    pub fn tx_qw1(&self, q: &Queue, i: u32) -> u64 {
        self.read_u64(q.tx_ring + u64::from(i) * 16 + 8)
    }

    /// Wait until Tx descriptor `i` has DTYPE 0xF.
    pub fn wait_tx_done(&self, q: &Queue, i: u32) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.tx_qw1(q, i);
            if v & 0xF == 0xF {
                return v;
            }
            self.rearm();
            assert!(Instant::now() < deadline, "Tx descriptor {i} not done");
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// GET_STATS as twelve u64.
    pub fn eth_stats(&mut self) -> [u64; 12] {
        let m = self.expect(op::GET_STATS, &queue_select(self.vsi_id, 0, 0), SUCCESS);
        assert_eq!(m.payload.len(), 96);
        std::array::from_fn(|i| le64(&m.payload, i * 8))
    }

    /// Wait until `cond` holds (2 s).
    pub fn until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// A queue pair as the test laid it out.
#[derive(Clone, Debug)]
pub struct Queue {
    pub id: usize,
    pub len: u32,
    pub tx_ring: u64,
    pub rx_ring: u64,
    pub rx_bufs: u64,
    pub buf: u32,
    pub tx_next: u32,
    pub rx_next: u32,
}

impl Queue {
    pub fn rx_buf(&self, i: u32) -> u64 {
        self.rx_bufs + u64::from(i) * u64::from(self.buf)
    }
}

/// Rx write-back fields (`union iavf_32byte_rx_desc`).
pub fn rx_len(qw1: u64) -> usize {
    ((qw1 >> 38) & 0x3FFF) as usize
}
pub fn rx_dd(qw1: u64) -> bool {
    qw1 & 1 != 0
}
pub fn rx_eop(qw1: u64) -> bool {
    qw1 & 2 != 0
}
pub fn rx_error(qw1: u64) -> u64 {
    (qw1 >> 19) & 0xFF
}
pub fn rx_ptype(qw1: u64) -> u8 {
    ((qw1 >> 30) & 0xFF) as u8
}
pub fn rx_fltstat(qw1: u64) -> u64 {
    (qw1 >> 12) & 3
}
pub fn rx_umbcast(qw1: u64) -> u64 {
    (qw1 >> 9) & 3
}

// ------------------------------------------------------------ message builders

pub fn version(major: u32, minor: u32) -> Vec<u8> {
    let mut v = major.to_le_bytes().to_vec();
    v.extend_from_slice(&minor.to_le_bytes());
    v
}

pub fn parse_resources(p: &[u8]) -> Resources {
    assert!(
        p.len() >= 36,
        "vf_resource with one VSI is 36 bytes, got {}",
        p.len()
    );
    Resources {
        num_vsis: le16(p, 0),
        num_queue_pairs: le16(p, 2),
        max_vectors: le16(p, 4),
        max_mtu: le16(p, 6),
        caps: le32(p, 8),
        rss_key_size: le32(p, 12),
        rss_lut_size: le32(p, 16),
        vsi_id: le16(p, 20),
        vsi_queue_pairs: le16(p, 22),
        vsi_type: le32(p, 24) as i32,
        mac: p[30..36].try_into().unwrap(),
    }
}

/// One queue pair for CONFIG_VSI_QUEUES.
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    pub qid: u16,
    pub tx_len: u16,
    pub tx_ring: u64,
    pub rx_len: u32,
    pub rx_ring: u64,
    pub buf: u32,
    pub max_pkt: u32,
}

/// CONFIG_VSI_QUEUES: 8-byte header + 64 per pair, plus the historical extra
/// pair (72 + 64·n).
pub fn vsi_queues(vsi: u16, pairs: &[Pair]) -> Vec<u8> {
    let mut m = vec![0u8; 72 + 64 * pairs.len()];
    m[0..2].copy_from_slice(&vsi.to_le_bytes());
    m[2..4].copy_from_slice(&(pairs.len() as u16).to_le_bytes());
    for (i, p) in pairs.iter().enumerate() {
        let q = &mut m[8 + 64 * i..8 + 64 * (i + 1)];
        // txq_info
        q[0..2].copy_from_slice(&vsi.to_le_bytes());
        q[2..4].copy_from_slice(&p.qid.to_le_bytes());
        q[4..6].copy_from_slice(&p.tx_len.to_le_bytes());
        q[8..16].copy_from_slice(&p.tx_ring.to_le_bytes());
        // rxq_info at 24
        let rx = &mut q[24..64];
        rx[0..2].copy_from_slice(&vsi.to_le_bytes());
        rx[2..4].copy_from_slice(&p.qid.to_le_bytes());
        rx[4..8].copy_from_slice(&p.rx_len.to_le_bytes());
        rx[12..16].copy_from_slice(&p.buf.to_le_bytes());
        rx[16..20].copy_from_slice(&p.max_pkt.to_le_bytes());
        rx[24..32].copy_from_slice(&p.rx_ring.to_le_bytes());
    }
    m
}

/// CONFIG_IRQ_MAP: (vsi, vector, rxq_map, txq_map) entries; 14 + 12·n bytes.
pub fn irq_map(maps: &[(u16, u16, u16, u16)]) -> Vec<u8> {
    let mut m = vec![0u8; 14 + 12 * maps.len()];
    m[0..2].copy_from_slice(&(maps.len() as u16).to_le_bytes());
    for (i, &(vsi, vec, rxq, txq)) in maps.iter().enumerate() {
        let e = &mut m[2 + 12 * i..2 + 12 * (i + 1)];
        e[0..2].copy_from_slice(&vsi.to_le_bytes());
        e[2..4].copy_from_slice(&vec.to_le_bytes());
        e[4..6].copy_from_slice(&rxq.to_le_bytes());
        e[6..8].copy_from_slice(&txq.to_le_bytes());
    }
    m
}

/// virtchnl_queue_select (12 bytes).
pub fn queue_select(vsi: u16, rx: u32, tx: u32) -> Vec<u8> {
    let mut m = vec![0u8; 12];
    m[0..2].copy_from_slice(&vsi.to_le_bytes());
    m[4..8].copy_from_slice(&rx.to_le_bytes());
    m[8..12].copy_from_slice(&tx.to_le_bytes());
    m
}

/// ADD/DEL_ETH_ADDR: 12 + 8·n bytes.
pub fn ether_addrs(vsi: u16, addrs: &[[u8; 6]]) -> Vec<u8> {
    let mut m = vec![0u8; 12 + 8 * addrs.len()];
    m[0..2].copy_from_slice(&vsi.to_le_bytes());
    m[2..4].copy_from_slice(&(addrs.len() as u16).to_le_bytes());
    for (i, a) in addrs.iter().enumerate() {
        m[4 + 8 * i..4 + 8 * i + 6].copy_from_slice(a);
    }
    m
}

/// ADD/DEL_VLAN: 6 + 2·n bytes.
pub fn vlans(vsi: u16, ids: &[u16]) -> Vec<u8> {
    let mut m = vec![0u8; 6 + 2 * ids.len()];
    m[0..2].copy_from_slice(&vsi.to_le_bytes());
    m[2..4].copy_from_slice(&(ids.len() as u16).to_le_bytes());
    for (i, v) in ids.iter().enumerate() {
        m[4 + 2 * i..6 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
    m
}

/// CONFIG_PROMISCUOUS_MODE (4 bytes).
pub fn promisc(vsi: u16, flags: u16) -> Vec<u8> {
    let mut m = vsi.to_le_bytes().to_vec();
    m.extend_from_slice(&flags.to_le_bytes());
    m
}

/// CONFIG_RSS_KEY / CONFIG_RSS_LUT: 4-byte header + bytes + 1 (5 + k).
pub fn rss_bytes(vsi: u16, bytes: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 5 + bytes.len()];
    m[0..2].copy_from_slice(&vsi.to_le_bytes());
    m[2..4].copy_from_slice(&(bytes.len() as u16).to_le_bytes());
    m[4..4 + bytes.len()].copy_from_slice(bytes);
    m
}

/// An Ethernet frame of `len` bytes from `src` to `dst` whose payload encodes `tag`.
pub fn frame(dst: [u8; 6], src: [u8; 6], tag: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = (tag as usize).wrapping_mul(7).wrapping_add(i) as u8;
    }
    if len >= 18 {
        f[14..18].copy_from_slice(&tag.to_be_bytes());
    }
    f
}

/// An IPv4/TCP or UDP frame (no checksums) of 64 bytes.
pub fn ipv4_l4(
    dst: [u8; 6],
    src: [u8; 6],
    proto: u8,
    sip: [u8; 4],
    dip: [u8; 4],
    sp: u16,
    dp: u16,
) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&50u16.to_be_bytes());
    f[22] = 64;
    f[23] = proto;
    f[26..30].copy_from_slice(&sip);
    f[30..34].copy_from_slice(&dip);
    f[34..36].copy_from_slice(&sp.to_be_bytes());
    f[36..38].copy_from_slice(&dp.to_be_bytes());
    f
}

/// The default VF's MAC (SimConfig's default) and a peer's.
pub const VF_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// A config with quick resets, for tests.
pub fn cfg() -> SimConfig {
    SimConfig {
        reset_timing: nicpoll_iavf::sim::ResetTiming {
            impending: Duration::from_millis(1),
            in_progress: Duration::from_millis(5),
            completed: Duration::from_millis(2),
            ..Default::default()
        },
        ..SimConfig::default()
    }
}
