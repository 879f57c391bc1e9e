//! The device's asynchronous events, watched by a thread per port: a device
//! removed or in a fatal error is reported once and marks the port dead, as
//! DPDK's mlx5 turns it into a removal event (`linux/mlx5_ethdev_os.c`
//! mlx5_dev_interrupt_handler). Other events are logged. The library is
//! loaded with RDMAV_ALLOW_DISASSOC_DESTROY=1, so the queues of a removed
//! device are torn down without leaking.
//!
//! The kernel says a device is gone in three ways (Linux
//! `drivers/infiniband/core/`, lines of 6.12): IBV_EVENT_DEVICE_FATAL, queued
//! on removal (`uverbs_std_types_async_fd.c:30-31`); on kernels that also
//! close the event queue then (before 5.6: 4.19, 5.4), a read of the closed,
//! empty queue failing with EIO (`uverbs_main.c:237-241`), and `poll`
//! reporting POLLERR (`uverbs_main.c:311-314`). Kernels without commit 62fab312fa16 (June 2023)
//! check O_NONBLOCK before the closed queue and fail that read with EAGAIN,
//! as if no event had come: on those only POLLERR tells, so POLLERR or POLLHUP
//! on the descriptor ends the watch as a removal does. Reading on would spin
//! a core, poll and read returning at once forever, and if the DEVICE_FATAL
//! event was lost (its allocation can fail, `uverbs_main.c:420-424`) the port
//! would never learn that its device went.
#![deny(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::verbs::{
    Context, IBV_EVENT_CQ_ERR, IBV_EVENT_DEVICE_FATAL, IBV_EVENT_PORT_ACTIVE, IBV_EVENT_PORT_ERR,
    IBV_EVENT_QP_FATAL, IBV_EVENT_WQ_FATAL,
};

/// How often the watcher looks at its stop flag.
const TICK: Duration = Duration::from_millis(100);

/// The watcher of one port's device.
pub struct EventWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EventWatcher {
    /// Watch `ctx`'s events for the port `name`; `fatal` is set once the
    /// device is gone.
    pub fn start(ctx: Arc<Context>, name: String, fatal: Arc<AtomicBool>) -> std::io::Result<Self> {
        // get_async_event must not block: the watcher polls, then drains.
        let fd = ctx.async_fd();
        let flags = rustix::fs::fcntl_getfl(fd)?;
        rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(format!("mlx5-events-{}", ctx.name))
            .spawn({
                let stop = stop.clone();
                move || watch(&ctx, &name, &fatal, &stop)
            })?;
        Ok(EventWatcher {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EventWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(ctx: &Context, name: &str, fatal: &AtomicBool, stop: &AtomicBool) {
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: TICK.as_nanos() as _,
    };
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::from_borrowed_fd(ctx.async_fd(), PollFlags::IN)];
        match poll(&mut fds, Some(&tick)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                log::error!(
                    "{name}: cannot watch the device's events ({e}); device removal will go unnoticed"
                );
                return;
            }
        }
        // The events first: the kernel reports POLLERR only once the closed
        // queue is empty, and DEVICE_FATAL says more than POLLERR.
        loop {
            match ctx.next_async_event() {
                Ok(None) => break,
                Ok(Some(ev)) => report(name, ev.kind, ev.port, fatal),
                Err(e) => return gone(name, &format!("its event queue closed: {e}"), fatal),
            }
        }
        let revents = fds[0].revents();
        if revents.intersects(PollFlags::ERR | PollFlags::HUP) {
            return gone(
                name,
                &format!("its event queue closed: poll says {revents:?}"),
                fatal,
            );
        }
    }
}

/// The event queue closed: the device is gone. Said once (DEVICE_FATAL may
/// have said it already); the watch ends, there is nothing more to read.
fn gone(name: &str, how: &str, fatal: &AtomicBool) {
    if !fatal.swap(true, Ordering::Relaxed) {
        log::error!(
            "{name}: the RDMA device went away ({how}); the port's queues are dead: stop the \
             port and open it again once the device is back"
        );
    }
}

fn report(name: &str, kind: u32, port: u32, fatal: &AtomicBool) {
    match kind {
        IBV_EVENT_DEVICE_FATAL => {
            // The kernel may send it twice (mlx5 and uverbs): said once.
            if !fatal.swap(true, Ordering::Relaxed) {
                log::error!(
                    "{name}: the device was removed or hit a fatal error (IBV_EVENT_DEVICE_FATAL: \
                     hot unplug, live migration, firmware reset); its queues are dead: stop the \
                     port and open it again once the device is back"
                );
            }
        }
        IBV_EVENT_PORT_ERR => log::warn!("{name}: IB port {port} went down"),
        IBV_EVENT_PORT_ACTIVE => log::info!("{name}: IB port {port} is up"),
        IBV_EVENT_CQ_ERR | IBV_EVENT_QP_FATAL | IBV_EVENT_WQ_FATAL => log::error!(
            "{name}: a queue of the port hit a fatal error (async event {kind}); its error \
             completions reset it"
        ),
        other => log::debug!("{name}: async event {other}"),
    }
}
