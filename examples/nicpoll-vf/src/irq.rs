//! The VF's interrupts as eventfds: the client hands one eventfd per MSI-X
//! vector with DEVICE_SET_IRQS (VFIO semantics, `linux/vfio.h`
//! `VFIO_DEVICE_SET_IRQS`), and the model's interrupt logic raises a vector
//! by writing 1 to it ([`Interrupts`] is the model's `IrqSink`). The client
//! (QEMU) emulates the MSI-X table and its masking: a masked vector is the
//! client's to hold pending.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nicpoll_iavf::sim::IrqSink;

use crate::guard::irq_flags;

/// VFIO IRQ indices of a PCI device (`linux/vfio.h`).
pub mod index {
    pub const INTX: u32 = 0;
    pub const MSI: u32 = 1;
    pub const MSIX: u32 = 2;
    pub const ERR: u32 = 3;
    pub const REQ: u32 = 4;
    /// How many there are.
    pub const COUNT: usize = 5;
}

/// The eventfds of one VF, by IRQ index.
pub struct Interrupts {
    /// MSI-X vector i's eventfd.
    msix: Mutex<Vec<Option<File>>>,
    /// The error (AER) and request (device release) eventfds: kept, never
    /// signalled (the model reports no errors and never asks to be released).
    err: Mutex<Option<File>>,
    req: Mutex<Option<File>>,
    /// Interrupts written to an eventfd.
    pub delivered: AtomicU64,
    /// Interrupts of a vector the client gave no eventfd (lost, as on a
    /// device whose MSI-X is disabled).
    pub undelivered: AtomicU64,
}

impl Interrupts {
    /// A VF with `vectors` MSI-X vectors and no eventfd yet.
    pub fn new(vectors: u16) -> Interrupts {
        Interrupts {
            msix: Mutex::new((0..vectors).map(|_| None).collect()),
            err: Mutex::new(None),
            req: Mutex::new(None),
            delivered: AtomicU64::new(0),
            undelivered: AtomicU64::new(0),
        }
    }

    /// How many vectors each IRQ index has (INTx, MSI, MSI-X, ERR, REQ).
    pub fn counts(&self) -> [u32; index::COUNT] {
        let n = self.msix.lock().unwrap_or_else(|e| e.into_inner()).len() as u32;
        [0, 0, n, 1, 1]
    }

    /// Close every eventfd (the client is gone, or MSI-X was turned off).
    pub fn clear(&self) {
        for v in self
            .msix
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            *v = None;
        }
        *self.err.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.req.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Vectors that have an eventfd.
    pub fn armed(&self) -> usize {
        self.msix
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|v| v.is_some())
            .count()
    }

    /// DEVICE_SET_IRQS (flags, index and range already checked against the
    /// counts): eventfds assigned (or, without descriptors, de-assigned) for
    /// `start..start + count`; DATA_NONE with a zero count turns the whole
    /// index off; DATA_NONE with a count fires those vectors (VFIO's loopback
    /// trigger). MASK and UNMASK are not offered (no vector is maskable
    /// here: the client masks MSI-X in its emulated table).
    pub fn set(
        &self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        let einval = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        if flags & irq_flags::ACTION_TRIGGER == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let (start, count) = (start as usize, count as usize);
        match index {
            index::MSIX => {
                let mut v = self.msix.lock().unwrap_or_else(|e| e.into_inner());
                if flags & irq_flags::DATA_NONE != 0 {
                    if count == 0 {
                        v.iter_mut().for_each(|e| *e = None);
                        return Ok(());
                    }
                    for f in v.iter().skip(start).take(count).flatten() {
                        signal(f)?;
                    }
                    return Ok(());
                }
                if start + count > v.len() {
                    return Err(einval(format!(
                        "MSI-X vectors {start}..{} of {}",
                        start + count,
                        v.len()
                    )));
                }
                if fds.is_empty() {
                    v[start..start + count].iter_mut().for_each(|e| *e = None);
                } else if fds.len() == count {
                    for (slot, f) in v[start..start + count].iter_mut().zip(fds) {
                        *slot = Some(f);
                    }
                } else {
                    return Err(einval(format!(
                        "{} eventfds for {count} MSI-X vectors",
                        fds.len()
                    )));
                }
                Ok(())
            }
            index::ERR | index::REQ => {
                let slot = if index == index::ERR {
                    &self.err
                } else {
                    &self.req
                };
                let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
                if flags & irq_flags::DATA_EVENTFD != 0 {
                    *s = fds.into_iter().next();
                } else if count == 0 {
                    *s = None;
                }
                Ok(())
            }
            index::INTX | index::MSI if flags & irq_flags::DATA_NONE != 0 && count == 0 => Ok(()),
            _ => Err(einval(format!(
                "IRQ index {index}: the VF has no INTx and no MSI"
            ))),
        }
    }
}

fn signal(f: &File) -> io::Result<()> {
    let mut f = f;
    f.write_all(&1u64.to_ne_bytes())
}

impl IrqSink for Interrupts {
    fn raise(&self, vector: u16) {
        log::trace!("MSI-X vector {vector} raised");
        let v = self.msix.lock().unwrap_or_else(|e| e.into_inner());
        match v.get(usize::from(vector)).and_then(Option::as_ref) {
            Some(f) => match signal(f) {
                Ok(()) => {
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.undelivered.fetch_add(1, Ordering::Relaxed);
                    log::warn!("MSI-X vector {vector}: writing its eventfd: {e}");
                }
            },
            None => {
                self.undelivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::OwnedFd;

    fn eventfd() -> (File, File) {
        let fd: OwnedFd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        let f = File::from(fd);
        let g = f.try_clone().unwrap();
        (f, g)
    }

    #[test]
    fn vectors_go_to_their_eventfds() {
        let irqs = Interrupts::new(5);
        assert_eq!(irqs.counts(), [0, 0, 5, 1, 1]);
        let (a, mut a_read) = eventfd();
        let ev = irq_flags::DATA_EVENTFD | irq_flags::ACTION_TRIGGER;
        irqs.set(index::MSIX, ev, 1, 1, vec![a]).unwrap();
        irqs.raise(1);
        irqs.raise(1);
        irqs.raise(0);
        let mut b = [0u8; 8];
        a_read.read_exact(&mut b).unwrap();
        assert_eq!(u64::from_ne_bytes(b), 2);
        assert_eq!(irqs.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(irqs.undelivered.load(Ordering::Relaxed), 1);
        // Loopback trigger, then the vector de-assigned, then MSI-X off.
        irqs.set(
            index::MSIX,
            irq_flags::DATA_NONE | irq_flags::ACTION_TRIGGER,
            1,
            1,
            vec![],
        )
        .unwrap();
        a_read.read_exact(&mut b).unwrap();
        assert_eq!(u64::from_ne_bytes(b), 1);
        irqs.set(index::MSIX, ev, 1, 1, vec![]).unwrap();
        assert_eq!(irqs.armed(), 0);
        let (c, _) = eventfd();
        assert!(
            irqs.set(index::MSIX, ev, 4, 2, vec![c]).is_err(),
            "beyond the vectors"
        );
        assert!(irqs.set(index::INTX, ev, 0, 1, vec![]).is_err(), "no INTx");
        assert!(
            irqs.set(
                index::MSIX,
                irq_flags::DATA_NONE | irq_flags::ACTION_MASK,
                0,
                1,
                vec![]
            )
            .is_err(),
            "not maskable"
        );
    }
}
