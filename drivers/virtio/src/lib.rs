//! `net_virtio`: a poll-mode driver for modern (virtio 1.0) virtio-net PCI
//! devices over VFIO, the NIC of most virtual machines.
//!
//! The device is found through its virtio PCI capabilities ([`pci`]), its
//! registers are reached through the core's [`Bar`] trait ([`transport`]), and
//! its split virtqueues live in DMA memory ([`ring`]), programmed with IOVAs.
//! Receive buffers are fresh mbufs whose descriptor starts 12 bytes before the
//! mbuf's data, so the device's `virtio_net_hdr` lands in the headroom and the
//! frame at the data start; transmit writes an all-zero header into the headroom
//! and gives one descriptor per packet (a chain of descriptors, linked with
//! NEXT, for a multi-segment mbuf). With merged receive buffers a frame longer
//! than one buffer takes several, the first header's `num_buffers` saying how
//! many, and arrives as a chain of mbufs. Neither path takes a lock, allocates or
//! makes a system call; each burst rings the doorbell at most once, and not at
//! all while the device sets `VIRTQ_USED_F_NO_NOTIFY`. Used entries are checked
//! before they are believed ([`queue`]).
//!
//! Features taken when offered: VIRTIO_F_VERSION_1 (required),
//! VIRTIO_F_ACCESS_PLATFORM (the device goes through the IOMMU, as with a QEMU
//! vIOMMU and `iommu_platform=on`), VIRTIO_NET_F_MAC, _STATUS, _SPEED_DUPLEX,
//! _CTRL_VQ, _CTRL_RX (promiscuous mode), _MQ (several queue pairs, set with
//! VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) and _MRG_RXBUF (jumbo frames as chains).
//! No offloads, no event index, no interrupts.
//!
//! ```no_run
//! # fn main() -> nicpoll::Result<()> {
//! use std::sync::Arc;
//! use nicpoll::memory::{DmaMemory, MemoryConfig};
//! use nicpoll::port::DevArgs;
//! use nicpoll::vfio::VfioContext;
//! use nicpoll_virtio::VirtioPort;
//!
//! let addr = "0000:00:03.0".parse()?;
//! let ctx = Arc::new(VfioContext::new()?);
//! let mode = ctx.iova_mode_for(&[addr])?; // before any DMA memory exists
//! let mem = Arc::new(DmaMemory::new(MemoryConfig { iova_mode: Some(mode), ..Default::default() })?);
//! let port = VirtioPort::open(ctx, mem, &addr, &DevArgs::parse("0000:00:03.0")?, 0)?;
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod pci;
pub mod queue;
#[allow(unsafe_code)]
pub mod ring;
pub mod transport;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use nicpoll::bar::{Bar, VfioBar};
use nicpoll::mbuf::{ELEMENT_DATA_OFFSET, MbufBatch};
use nicpoll::memory::{DmaMemory, DmaRegion, IovaMode};
use nicpoll::pci::{PciAddress, Sysfs};
use nicpoll::port::{
    self, DevArgs, Link, MacAddr, PortConf, PortCounters, PortInfo, PortQueues, PortStats,
};
use nicpoll::vfio::{IommuType, VfioContext, VfioDevice};
use nicpoll::{Error, Port, Result, RxQueue, TxQueue};

pub use pci::{VIRTIO_NET_MODERN_ID, VIRTIO_NET_TRANSITIONAL_ID, VIRTIO_VENDOR_ID};
use queue::{CTRL_BUF_LEN, CtrlQueue, Home, Virtqueue, ctrl};
pub use queue::{VirtioRxQueue, VirtioTxQueue};
use ring::{Layout, MAX_QUEUE_SIZE, Vring};
use transport::{QueueAddrs, Transport, feature, netcfg};

/// Driver name (`show port info`).
pub const DRIVER: &str = "net_virtio";
/// Device arguments accepted after the PCI address (`-a BDF,speed=10000`).
pub const KEYS: &[&str] = &["speed"];
/// Longest frame taken with merged receive buffers (no segmentation offload
/// is negotiated, so a device hands over at most an IP datagram's worth).
const MAX_MERGED_FRAME: u32 = 65535;
/// The PCI ids this driver takes: (vendor, device, description).
pub const PCI_IDS: &[(u16, u16, &str)] = &[
    (
        VIRTIO_VENDOR_ID,
        VIRTIO_NET_MODERN_ID,
        "virtio-net (virtio 1.0)",
    ),
    (
        VIRTIO_VENDOR_ID,
        VIRTIO_NET_TRANSITIONAL_ID,
        "virtio-net transitional (through its virtio 1.0 interface)",
    ),
];

/// Options from the device arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VirtioOptions {
    /// Link speed to report in Mbit/s when the device does not say
    /// (VIRTIO_NET_F_SPEED_DUPLEX), as DPDK's `speed=`.
    pub speed: Option<u32>,
}

impl VirtioOptions {
    /// Read `speed` from device arguments; other keys are refused.
    pub fn from_devargs(args: &DevArgs) -> Result<VirtioOptions> {
        args.check_keys(KEYS).map_err(|_| Error::DevArgs {
            device: args.spec.clone(),
            reason: format!(
                "unknown device argument for {DRIVER}; accepted keys: {}",
                KEYS.join(", ")
            ),
        })?;
        Ok(VirtioOptions {
            speed: args.get_u64("speed", 1..=800_000)?.map(|s| s as u32),
        })
    }
}

/// Whether DMA addresses of `mode` reach memory the way this device does DMA.
///
/// Without VIRTIO_F_ACCESS_PLATFORM a virtio device bypasses any IOMMU and uses
/// physical addresses; behind a type1 IOMMU that works only when IOVA = PA.
pub fn check_dma_path(
    device: &str,
    features: u64,
    iommu: Option<IommuType>,
    mode: IovaMode,
) -> Result<()> {
    let behind_iommu = matches!(iommu, Some(IommuType::Type1 | IommuType::Type1v2));
    if features & feature::ACCESS_PLATFORM == 0 && behind_iommu && mode != IovaMode::Pa {
        return Err(Error::Pci {
            device: device.to_string(),
            reason: format!(
                "the device does not offer VIRTIO_F_ACCESS_PLATFORM, so it bypasses the IOMMU \
                 and needs physical addresses, but DMA memory has IOVA mode {}: run with \
                 --iova-mode=pa, or give the device iommu_platform=on (QEMU)",
                mode.name().to_uppercase()
            ),
        });
    }
    Ok(())
}

/// What `configure` settled.
struct Configured {
    conf: PortConf,
    /// Queue pairs announced to the device.
    pairs: u16,
    region: Arc<DmaRegion>,
    /// (virtqueue index, offset in the region, layout) of each receive queue.
    rx: Vec<(u16, usize, Layout)>,
    /// Of each transmit queue.
    tx: Vec<(u16, usize, Layout)>,
    /// Of the control queue (its command buffer follows its ring).
    ctrl: Option<(u16, usize, Layout)>,
}

/// What a started port owns.
struct Running<B: Bar> {
    rx: Vec<Home<B>>,
    tx: Vec<Home<B>>,
    ctrl: Option<CtrlQueue<B>>,
}

/// A virtio-net port.
///
/// Generic over the register access: [`VfioBar`] for a device opened through
/// VFIO ([`VirtioPort::open`]), a simulated BAR in tests
/// ([`VirtioPort::with_transport`]).
pub struct VirtioPort<B: Bar = VfioBar> {
    name: String,
    port_id: u16,
    t: Transport<B>,
    offered: u64,
    features: u64,
    mac: MacAddr,
    max_pairs: u16,
    /// The device's largest size of each virtqueue, by index.
    max_sizes: Vec<u16>,
    ctrl_index: u16,
    numa_node: Option<u32>,
    opts: VirtioOptions,
    mem: Arc<DmaMemory>,
    dma: Option<Arc<VfioContext>>,
    conf: Option<Configured>,
    run: Option<Running<B>>,
    promisc: bool,
    counters: PortCounters,
    _device: Option<VfioDevice>,
}

impl<B: Bar> std::fmt::Debug for VirtioPort<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPort")
            .field("name", &self.name)
            .field("features", &feature::names(self.features))
            .field("mac", &self.mac)
            .field("max_pairs", &self.max_pairs)
            .field("started", &self.run.is_some())
            .finish()
    }
}

impl VirtioPort<VfioBar> {
    /// Open the virtio-net device at `addr` through `ctx`, with DMA memory from
    /// `mem` (whose IOVA mode the caller chose with
    /// [`VfioContext::iova_mode_for`]), as port `port_id`. `args` carries the
    /// device arguments after the address (`speed=`).
    ///
    /// The device must be bound to vfio-pci (the error says how otherwise). Its
    /// features are negotiated once here (to learn its MAC and queue limits) and
    /// again at each start.
    pub fn open(
        ctx: Arc<VfioContext>,
        mem: Arc<DmaMemory>,
        addr: &PciAddress,
        args: &DevArgs,
        port_id: u16,
    ) -> Result<VirtioPort<VfioBar>> {
        let opts = VirtioOptions::from_devargs(args)?;
        let name = addr.to_string();
        let numa_node = Sysfs::default().device(addr).ok().and_then(|d| d.numa_node);
        let dev = ctx.open_device(addr)?;
        let (vendor, device) = (dev.vendor_id(), dev.device_id());
        if vendor != VIRTIO_VENDOR_ID
            || !(device == VIRTIO_NET_MODERN_ID || device == VIRTIO_NET_TRANSITIONAL_ID)
        {
            let kind = match device {
                0x1040..=0x107f => format!("a virtio device of type {}", device - 0x1040),
                0x1000..=0x103f => {
                    "a transitional virtio device that is not a network device".into()
                }
                _ => "not a virtio device".into(),
            };
            return Err(Error::Pci {
                device: name,
                reason: format!(
                    "{vendor:04x}:{device:04x} is {kind}; {DRIVER} takes {}",
                    supported_ids()
                ),
            });
        }
        let caps = pci::parse_caps(&dev, &name)?;
        let mut bars: Vec<(u8, Arc<VfioBar>)> = Vec::new();
        let t = Transport::new(&name, &caps, |i| {
            if let Some((_, b)) = bars.iter().find(|(n, _)| *n == i) {
                return Ok(b.clone());
            }
            let b = Arc::new(dev.map_bar(i as u32)?);
            bars.push((i, b.clone()));
            Ok(b)
        })?;
        let iommu = ctx.iommu_type();
        let port = VirtioPort::with_transport(
            &name,
            t,
            mem,
            Some(ctx),
            opts,
            port_id,
            Some(dev),
            numa_node,
        )?;
        check_dma_path(&name, port.features, iommu, port.mem.iova_mode())?;
        Ok(port)
    }
}

fn supported_ids() -> String {
    PCI_IDS
        .iter()
        .map(|(v, d, what)| format!("{v:04x}:{d:04x} ({what})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The largest power of two not above `n` (n >= 1).
fn pow2_floor(n: u16) -> u16 {
    1 << (15 - n.max(1).leading_zeros())
}

impl<B: Bar + 'static> VirtioPort<B> {
    /// A port on the device whose registers `t` reaches. Negotiates features to
    /// learn the MAC address, link and queue limits, then leaves the device reset.
    /// `dma` (if any) maps the rings' memory for the device; `device` keeps a
    /// VFIO device open as long as the port.
    #[allow(clippy::too_many_arguments)]
    pub fn with_transport(
        name: &str,
        t: Transport<B>,
        mem: Arc<DmaMemory>,
        dma: Option<Arc<VfioContext>>,
        opts: VirtioOptions,
        port_id: u16,
        device: Option<VfioDevice>,
        numa_node: Option<u32>,
    ) -> Result<VirtioPort<B>> {
        let (offered, features) = t.negotiate(feature::WANTED)?;
        log::info!(
            "{name}: virtio features offered {}, accepted {}",
            feature::names(offered),
            feature::names(features)
        );
        let mac = if features & feature::NET_MAC != 0 {
            t.read_device_config(6, |d| {
                let mut m = [0u8; 6];
                for (i, b) in m.iter_mut().enumerate() {
                    *b = d.r8(netcfg::MAC + i);
                }
                m
            })
            .map(MacAddr)
        } else {
            None
        }
        .unwrap_or(MacAddr([
            0x02,
            0x76,
            0x69,
            0x72,
            (port_id >> 8) as u8,
            port_id as u8,
        ]));
        let num_queues = t.num_queues();
        let max_pairs = if features & feature::NET_MQ != 0 {
            t.read_device_config(10, |d| d.r16(netcfg::MAX_VIRTQUEUE_PAIRS))
                .unwrap_or(1)
                .clamp(1, 0x8000)
                .min(num_queues.saturating_sub(1) / 2)
                .max(1)
        } else {
            1
        };
        let ctrl_index = if features & feature::NET_MQ != 0 {
            2 * max_pairs
        } else {
            2
        };
        let top = if features & feature::NET_CTRL_VQ != 0 {
            ctrl_index
        } else {
            2 * max_pairs - 1
        };
        let max_sizes: Vec<u16> = (0..=top).map(|q| t.max_queue_size(q)).collect();
        if max_sizes[0] == 0 || max_sizes.get(1).copied().unwrap_or(0) == 0 {
            t.fail();
            return Err(Error::Pci {
                device: name.to_string(),
                reason: format!(
                    "the device has no receive or transmit queue ({num_queues} queues, sizes {max_sizes:?})"
                ),
            });
        }
        t.reset()?;
        log::info!(
            "{name}: MAC {mac}, {max_pairs} queue pair(s), queue size {}, control queue {}",
            max_sizes[0],
            if features & feature::NET_CTRL_VQ != 0 {
                "yes"
            } else {
                "no"
            }
        );
        Ok(VirtioPort {
            name: name.to_string(),
            port_id,
            t,
            offered,
            features,
            mac,
            max_pairs,
            max_sizes,
            ctrl_index,
            numa_node,
            opts,
            mem,
            dma,
            conf: None,
            run: None,
            promisc: true,
            counters: PortCounters::default(),
            _device: device,
        })
    }

    /// Feature bits the device offered.
    pub fn offered_features(&self) -> u64 {
        self.offered
    }

    /// Feature bits negotiated.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The memory of the rings, once configured (for tests and diagnostics).
    pub fn ring_region(&self) -> Option<&DmaRegion> {
        self.conf.as_ref().map(|c| &*c.region)
    }

    fn err(&self, op: &'static str, reason: String) -> Error {
        Error::port(self.port_id, &self.name, op, reason)
    }

    /// The size of virtqueue `q` for a request of `want` (0: the device's).
    fn queue_size(&self, q: u16, want: u16, what: &str) -> u16 {
        let max = self.max_sizes[q as usize].min(MAX_QUEUE_SIZE);
        let size = pow2_floor(if want == 0 { max } else { want.min(max) });
        if want != 0 && size != want {
            log::info!(
                "{}: {what} ring of {want} descriptors: using {size} (the device's largest is {max}; \
                 split rings are a power of two)",
                self.name
            );
        }
        size
    }

    /// Reset the device and free what the queues hold. Queues still held by
    /// someone keep their state (and free it when dropped).
    fn halt(&mut self) {
        if let Err(e) = self.t.reset() {
            log::warn!("{e}");
        }
        if let Some(run) = self.run.take() {
            for h in run.rx.iter().chain(run.tx.iter()) {
                h.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
        }
    }

    fn release_region(&mut self) {
        if let Some(c) = self.conf.take()
            && let Some(ctx) = &self.dma
            && let Err(e) = ctx.unmap_dma(&c.region)
        {
            log::warn!("{}: {e}", self.name);
        }
    }

    /// Steps 7-8 of initialisation: negotiate again, program the queues, fill
    /// the receive rings, DRIVER_OK, control commands. The queues are built into
    /// `rxq`/`txq`, owned by the caller, so that on an error the caller resets
    /// the device before their mbufs go back to the pool.
    fn start_inner(
        &mut self,
        rxq: &mut Vec<Virtqueue<B>>,
        txq: &mut Vec<Virtqueue<B>>,
    ) -> Result<Option<CtrlQueue<B>>> {
        let c = self.conf.as_ref().expect("checked by start");
        let (offered, features) = self.t.negotiate(feature::WANTED)?;
        if features != self.features {
            log::warn!(
                "{}: the device now offers {} (was {})",
                self.name,
                feature::names(offered),
                feature::names(self.offered)
            );
        }
        self.t.disable_config_interrupt();
        let make = |(q, off, layout): (u16, usize, Layout)| -> Result<(Vring, _)> {
            let ring = Vring::new(c.region.clone(), off, layout)?;
            let n = self.t.setup_queue(
                q,
                &QueueAddrs {
                    size: layout.size,
                    desc: ring.desc_iova(),
                    avail: ring.avail_iova(),
                    used: ring.used_iova(),
                },
            )?;
            Ok((ring, n))
        };
        for &p in &c.rx {
            let (ring, n) = make(p)?;
            rxq.push(Virtqueue::new(ring, n));
        }
        for &p in &c.tx {
            let (ring, n) = make(p)?;
            txq.push(Virtqueue::new(ring, n));
        }
        let mut ctrlq = match c.ctrl {
            Some((q, off, layout)) => {
                let buf = layout.bytes - CTRL_BUF_LEN;
                let (ring, n) = make((q, off, layout))?;
                Some(CtrlQueue::new(ring, buf, n, &self.name))
            }
            None => None,
        };
        // Receive buffers go in before DRIVER_OK, without a doorbell (§3.1.1).
        let pool = &c.conf.mempool;
        let mut scratch = MbufBatch::new();
        for (i, vq) in rxq.iter_mut().enumerate() {
            let (_, missing) = vq.refill_rx(pool, &mut scratch, false);
            if missing > 0 {
                return Err(self.err(
                    "start",
                    format!(
                        "receive queue {i}: mempool {} has no mbufs for {missing} of its {} \
                         descriptors ({} free); raise --total-num-mbufs",
                        pool.name(),
                        vq.ring.size(),
                        pool.available()
                    ),
                ));
            }
        }
        self.t.driver_ok()?;
        // Tell the device about the buffers posted before DRIVER_OK.
        for vq in rxq.iter_mut() {
            vq.notify_if_wanted();
        }
        if let Some(cq) = ctrlq.as_mut() {
            if c.pairs > 1 {
                cq.command(
                    ctrl::CLASS_MQ,
                    ctrl::MQ_VQ_PAIRS_SET,
                    &c.pairs.to_le_bytes(),
                )?;
            }
            if self.features & feature::NET_CTRL_RX != 0 {
                cq.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, &[u8::from(self.promisc)])?;
            }
        }
        Ok(ctrlq)
    }
}

impl<B: Bar + 'static> Port for VirtioPort<B> {
    fn info(&self) -> PortInfo {
        let pairs = if self.features & feature::NET_MQ != 0 {
            self.max_pairs
        } else {
            1
        };
        PortInfo {
            driver: DRIVER,
            name: self.name.clone(),
            max_rx_queues: pairs,
            max_tx_queues: pairs,
            default_rxd: self.max_sizes[0].min(MAX_QUEUE_SIZE),
            default_txd: self.max_sizes[1].min(MAX_QUEUE_SIZE),
            min_rxd: 1,
            max_rxd: MAX_QUEUE_SIZE,
            min_txd: 1,
            max_txd: MAX_QUEUE_SIZE,
            desc_align: 1,
            // With merged receive buffers a frame may take several mbufs: what
            // a device delivers without segmentation offloads (a 64 KiB frame).
            max_rx_pktlen: if self.features & feature::NET_MRG_RXBUF != 0 {
                MAX_MERGED_FRAME
            } else {
                self.conf
                    .as_ref()
                    .map_or(2048 - ELEMENT_DATA_OFFSET, |c| c.conf.mempool.data_room())
                    as u32
            },
            rx_scatter: self.features & feature::NET_MRG_RXBUF != 0,
            // Descriptor chains: every virtio device takes them (§2.4.5).
            tx_multi_seg: true,
            numa_node: self.numa_node,
        }
    }

    fn configure(&mut self, conf: &PortConf) -> Result<()> {
        nicpoll::port::ensure_stopped(self.run.is_some(), self.port_id, &self.name)?;
        let (rxd, txd) = port::check_conf(conf.port_id, &self.info(), conf)?;
        port::rx_frame_limit(conf.port_id, &self.info(), conf)?;
        let pairs = conf.nb_rxq.max(conf.nb_txq);
        let page = self.mem.page_size();
        let mut cursor = 0usize;
        // Each queue in IOVA-contiguous memory: none straddles a page it could
        // have fitted in.
        let mut place = |layout: Layout| {
            let bytes = layout.bytes.next_multiple_of(64);
            if bytes <= page && cursor % page + bytes > page {
                cursor = cursor.next_multiple_of(page);
            }
            let at = cursor;
            cursor = (cursor + bytes).next_multiple_of(4096);
            at
        };
        let mut rx = Vec::new();
        for i in 0..conf.nb_rxq {
            let q = 2 * i;
            let l = Layout::new(self.queue_size(q, rxd, "receive"));
            rx.push((q, place(l), l));
        }
        let mut tx = Vec::new();
        for i in 0..conf.nb_txq {
            let q = 2 * i + 1;
            let l = Layout::new(self.queue_size(q, txd, "transmit"));
            tx.push((q, place(l), l));
        }
        let ctrl = (self.features & feature::NET_CTRL_VQ != 0).then(|| {
            let q = self.ctrl_index;
            let l = Layout::new(self.queue_size(q, 0, "control").min(64));
            let l = Layout {
                bytes: l.bytes + CTRL_BUF_LEN,
                ..l
            };
            (q, place(l), l)
        });
        // The old rings go first (the device is reset while stopped).
        self.release_region();
        let region = Arc::new(
            self.mem
                .alloc(&format!("virtio {} rings", self.name), cursor.max(1))?,
        );
        if let Some(ctx) = &self.dma {
            ctx.map_dma(&region)?;
        }
        self.counters
            .reconfigure(conf.nb_rxq as usize, conf.nb_txq as usize);
        self.port_id = conf.port_id;
        self.conf = Some(Configured {
            conf: conf.clone(),
            pairs,
            region,
            rx,
            tx,
            ctrl,
        });
        Ok(())
    }

    fn start(&mut self) -> Result<PortQueues> {
        if self.conf.is_none() {
            return Err(self.err("start", "the port is not configured".into()));
        }
        if self.run.is_some() {
            return Err(self.err("start", "the port is already started".into()));
        }
        let mut rxq = Vec::new();
        let mut txq = Vec::new();
        let ctrlq = match self.start_inner(&mut rxq, &mut txq) {
            Ok(c) => c,
            Err(e) => {
                // Nothing was handed out: stop the device, then the queues built
                // so far (and their mbufs) go.
                self.t.fail();
                if let Err(r) = self.t.reset() {
                    log::warn!("{r}");
                }
                drop((rxq, txq));
                return Err(e);
            }
        };
        let c = self.conf.as_ref().expect("checked above");
        let (port_id, pool) = (c.conf.port_id, c.conf.mempool.clone());
        let mrg = self.features & feature::NET_MRG_RXBUF != 0;
        let max_len = match c.conf.max_rx_pktlen {
            0 => self.info().max_rx_pktlen as usize,
            l => l as usize,
        };
        let mut run = Running {
            rx: Vec::new(),
            tx: Vec::new(),
            ctrl: ctrlq,
        };
        let mut queues = PortQueues::default();
        for (i, vq) in rxq.into_iter().enumerate() {
            let home: Home<B> = Arc::new(Mutex::new(None));
            run.rx.push(home.clone());
            queues.rx.push(Box::new(VirtioRxQueue::new(
                vq,
                home,
                pool.clone(),
                port_id,
                i as u16,
                self.counters.rx(i),
                mrg,
                max_len,
            )) as Box<dyn RxQueue>);
        }
        for (i, vq) in txq.into_iter().enumerate() {
            let home: Home<B> = Arc::new(Mutex::new(None));
            run.tx.push(home.clone());
            queues.tx.push(
                Box::new(VirtioTxQueue::new(vq, home, self.counters.tx(i))) as Box<dyn TxQueue>
            );
        }
        self.run = Some(run);
        Ok(queues)
    }

    fn stop(&mut self) -> Result<()> {
        let Some(run) = &self.run else { return Ok(()) };
        let held = run
            .rx
            .iter()
            .chain(run.tx.iter())
            .filter(|h| h.lock().unwrap_or_else(|e| e.into_inner()).is_none())
            .count();
        if held > 0 {
            return Err(self.err(
                "stop",
                format!("{held} queue(s) are still in use; drop them before stopping the port"),
            ));
        }
        self.halt();
        Ok(())
    }

    fn is_started(&self) -> bool {
        self.run.is_some()
    }

    fn link(&self) -> Link {
        let up = if self.features & feature::NET_STATUS != 0 {
            self.t
                .read_device_config(8, |d| d.r16(netcfg::STATUS) & netcfg::S_LINK_UP != 0)
                .unwrap_or(true)
        } else {
            true // §5.1.4: without VIRTIO_NET_F_STATUS the link is assumed up
        };
        let (mut speed, mut full) = (self.opts.speed.unwrap_or(0), true);
        if self.features & feature::NET_SPEED_DUPLEX != 0
            && let Some((s, d)) = self
                .t
                .read_device_config(17, |d| (d.r32(netcfg::SPEED), d.r8(netcfg::DUPLEX)))
        {
            if s != 0 && s != u32::MAX {
                speed = s;
            }
            full = d != 0;
        }
        Link {
            up,
            speed_mbps: speed,
            full_duplex: full,
        }
    }

    fn mac_addr(&self) -> MacAddr {
        self.mac
    }

    fn promiscuous(&self) -> bool {
        self.promisc
    }

    fn set_promiscuous(&mut self, on: bool) -> Result<()> {
        if self.features & feature::NET_CTRL_RX == 0 {
            return Err(self.err(
                "promiscuous",
                "the device does not offer VIRTIO_NET_F_CTRL_RX, so its receive filter cannot \
                 be changed (QEMU's virtio-net without it receives every frame)"
                    .into(),
            ));
        }
        if let Some(cq) = self.run.as_mut().and_then(|r| r.ctrl.as_mut()) {
            cq.command(ctrl::CLASS_RX, ctrl::RX_PROMISC, &[u8::from(on)])?;
        }
        self.promisc = on;
        Ok(())
    }

    fn stats(&self) -> PortStats {
        self.counters.stats()
    }

    fn reset_stats(&mut self) {
        self.counters.reset();
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        self.counters.xstats()
    }
}

impl<B: Bar> Drop for VirtioPort<B> {
    fn drop(&mut self) {
        // Stop the device before anything it may DMA to goes away.
        if let Err(e) = self.t.reset() {
            log::warn!("{e}");
        }
        if let Some(run) = self.run.take() {
            for h in run.rx.iter().chain(run.tx.iter()) {
                h.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
        }
        if let Some(c) = self.conf.take()
            && let Some(ctx) = &self.dma
            && let Err(e) = ctx.unmap_dma(&c.region)
        {
            log::warn!("{}: {e}", self.name);
        }
    }
}
