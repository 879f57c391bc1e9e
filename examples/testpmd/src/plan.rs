//! Which ports forward, the streams between them, and which lcore runs each
//! stream: testpmd's forwarding configuration, as a pure function so it can be
//! tested without ports.

use nicpoll::fwd::StreamSpec;
use nicpoll::lcore::Lcore;

use crate::cli::{PortSelect, Topology, UsageError};

/// The forwarding plan of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Ports that forward, in order.
    pub fwd_ports: Vec<u16>,
    /// Every stream.
    pub streams: Vec<StreamSpec>,
    /// Forwarding lcores and the indices of the streams each runs.
    pub lcores: Vec<(Lcore, Vec<usize>)>,
    /// Notes for the user (e.g. fewer cores used than asked).
    pub notes: Vec<String>,
}

/// Inputs of the plan.
pub struct PlanInput<'a> {
    /// Ports that exist.
    pub nb_ports: usize,
    /// `--portmask` / `--portlist` / `--nb-ports`.
    pub select: &'a PortSelect,
    /// `--port-topology`.
    pub topology: Topology,
    /// Queues per port.
    pub rxq: u16,
    /// Queues per port.
    pub txq: u16,
    /// The forwarding lcores available (all but the main one).
    pub workers: &'a [Lcore],
    /// `--nb-cores`, default 1.
    pub nb_cores: Option<usize>,
}

/// Build the plan.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, UsageError> {
    let u = |m: String| UsageError(m);
    let mut notes = Vec::new();
    let fwd_ports: Vec<u16> = match input.select {
        PortSelect::All => (0..input.nb_ports as u16).collect(),
        PortSelect::First(n) => {
            if *n > input.nb_ports {
                return Err(u(format!(
                    "--nb-ports {n}: only {} ports exist",
                    input.nb_ports
                )));
            }
            (0..*n as u16).collect()
        }
        PortSelect::List(l) => {
            if let Some(bad) = l.iter().find(|&&p| p as usize >= input.nb_ports) {
                return Err(u(format!(
                    "--portmask/--portlist names port {bad}, but only ports 0 to {} exist",
                    input.nb_ports.saturating_sub(1)
                )));
            }
            l.clone()
        }
    };
    if fwd_ports.is_empty() {
        return Err(u(
            "no forwarding port: give at least one device with --vdev".into(),
        ));
    }
    let n = fwd_ports.len();
    let peer_of = |i: usize| -> usize {
        match input.topology {
            Topology::Paired => {
                if i.is_multiple_of(2) {
                    if i + 1 < n { i + 1 } else { i }
                } else {
                    i - 1
                }
            }
            Topology::Chained => (i + 1) % n,
            Topology::Loop => i,
        }
    };
    if input.topology == Topology::Paired && !n.is_multiple_of(2) {
        notes.push(format!(
            "port-topology=paired with an odd number of ports: port {} is paired with itself",
            fwd_ports[n - 1]
        ));
    }
    let nb_q = input.rxq.max(input.txq).max(1);
    let mut streams = Vec::new();
    for i in 0..n {
        for q in 0..nb_q {
            streams.push(StreamSpec {
                rx_port: fwd_ports[i],
                rx_queue: if input.rxq == 0 { 0 } else { q % input.rxq },
                tx_port: fwd_ports[peer_of(i)],
                tx_queue: if input.txq == 0 { 0 } else { q % input.txq },
            });
        }
    }
    if input.workers.is_empty() {
        return Err(u(
            "no forwarding lcore: the first lcore of -l/-c/--lcores is the main lcore, so give at least two, e.g. -l 0,1 \
             (they may share a CPU: --lcores 0@0,1@0)"
                .into(),
        ));
    }
    let want = input.nb_cores.unwrap_or(1);
    if want > input.workers.len() {
        return Err(u(format!(
            "--nb-cores {want}: only {} forwarding lcore(s) given (the first lcore of -l/-c/--lcores is the main lcore)",
            input.workers.len()
        )));
    }
    let cores = want.min(streams.len());
    if cores < want {
        notes.push(format!(
            "{want} forwarding cores asked for but only {} streams exist: using {cores}",
            streams.len()
        ));
    }
    // Contiguous blocks of streams per lcore, the first lcores taking one more
    // when the division is not even (testpmd's layout).
    let mut lcores = Vec::new();
    let (base, extra) = (streams.len() / cores, streams.len() % cores);
    let mut next = 0;
    for (c, lc) in input.workers.iter().take(cores).enumerate() {
        let k = base + usize::from(c < extra);
        lcores.push((lc.clone(), (next..next + k).collect::<Vec<_>>()));
        next += k;
    }
    // A queue may serve several streams only if one lcore runs them all.
    let owner = |key: (u16, u16, bool)| -> Vec<usize> {
        let mut v: Vec<usize> = lcores
            .iter()
            .enumerate()
            .filter(|(_, (_, ss))| {
                ss.iter().any(|&s| {
                    let st: &StreamSpec = &streams[s];
                    if key.2 {
                        (st.rx_port, st.rx_queue) == (key.0, key.1)
                    } else {
                        (st.tx_port, st.tx_queue) == (key.0, key.1)
                    }
                })
            })
            .map(|(i, _)| i)
            .collect();
        v.dedup();
        v
    };
    for st in &streams {
        for (key, what, opt) in [
            ((st.rx_port, st.rx_queue, true), "receive", "--rxq"),
            ((st.tx_port, st.tx_queue, false), "transmit", "--txq"),
        ] {
            if owner(key).len() > 1 {
                return Err(u(format!(
                    "{what} queue {} of port {} would be shared by streams on different lcores; \
                     give --rxq and --txq the same value or use fewer --nb-cores ({opt})",
                    key.1, key.0
                )));
            }
        }
    }
    Ok(Plan {
        fwd_ports,
        streams,
        lcores,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize) -> Vec<Lcore> {
        (1..=n)
            .map(|i| Lcore {
                id: i as u32,
                cpus: vec![i],
            })
            .collect()
    }

    fn input<'a>(
        nb_ports: usize,
        sel: &'a PortSelect,
        topo: Topology,
        q: (u16, u16),
        w: &'a [Lcore],
        cores: Option<usize>,
    ) -> PlanInput<'a> {
        PlanInput {
            nb_ports,
            select: sel,
            topology: topo,
            rxq: q.0,
            txq: q.1,
            workers: w,
            nb_cores: cores,
        }
    }

    /// The plan for all of `nb_ports` ports (no --portlist or --nb-ports).
    fn plan_all(
        nb_ports: usize,
        topo: Topology,
        q: (u16, u16),
        w: &[Lcore],
        cores: Option<usize>,
    ) -> Result<Plan, UsageError> {
        plan(&input(nb_ports, &PortSelect::All, topo, q, w, cores))
    }

    fn s(rp: u16, rq: u16, tp: u16, tq: u16) -> StreamSpec {
        StreamSpec {
            rx_port: rp,
            rx_queue: rq,
            tx_port: tp,
            tx_queue: tq,
        }
    }

    #[test]
    fn paired_two_ports_one_core() {
        let w = workers(1);
        let p = plan_all(2, Topology::Paired, (1, 1), &w, None).unwrap();
        assert_eq!(p.streams, vec![s(0, 0, 1, 0), s(1, 0, 0, 0)]);
        assert_eq!(p.lcores.len(), 1);
        assert_eq!(p.lcores[0].1, vec![0, 1]);
    }

    #[test]
    fn chained_loop_and_odd_paired() {
        let w = workers(1);
        let p = plan_all(3, Topology::Chained, (1, 1), &w, None).unwrap();
        assert_eq!(
            p.streams.iter().map(|x| x.tx_port).collect::<Vec<_>>(),
            vec![1, 2, 0]
        );
        let p = plan_all(2, Topology::Loop, (1, 1), &w, None).unwrap();
        assert_eq!(p.streams, vec![s(0, 0, 0, 0), s(1, 0, 1, 0)]);
        let p = plan_all(3, Topology::Paired, (1, 1), &w, None).unwrap();
        assert_eq!(p.streams[2], s(2, 0, 2, 0));
        assert!(p.notes[0].contains("paired with itself"));
    }

    #[test]
    fn queues_spread_over_cores_in_blocks() {
        let w = workers(3);
        let p = plan_all(2, Topology::Paired, (2, 2), &w, Some(3)).unwrap();
        assert_eq!(p.streams.len(), 4);
        let sizes: Vec<usize> = p.lcores.iter().map(|(_, v)| v.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1]);
        // More cores than streams: capped, with a note.
        let p = plan_all(1, Topology::Loop, (1, 1), &w, Some(3)).unwrap();
        assert_eq!(p.lcores.len(), 1);
        assert!(p.notes.iter().any(|n| n.contains("only 1 streams")));
    }

    #[test]
    fn errors_name_the_option() {
        let (one, two) = (workers(1), workers(2));
        let paired = |select, w, cores| input(2, select, Topology::Paired, (1, 1), w, cores);
        let (all, list, first) = (
            PortSelect::All,
            PortSelect::List(vec![0, 5]),
            PortSelect::First(3),
        );
        for (case, option) in [
            (paired(&all, &one, Some(2)), "--nb-cores 2"),
            (paired(&list, &one, None), "port 5"),
            (paired(&first, &one, None), "--nb-ports 3"),
            (paired(&all, &[], None), "main lcore"),
            (
                input(1, &all, Topology::Loop, (1, 2), &two, Some(2)),
                "shared by streams on different lcores",
            ),
        ] {
            let e = plan(&case).unwrap_err().0;
            assert!(e.contains(option), "want {option:?} in: {e}");
        }
        // The same queues on one lcore are not shared across lcores.
        let p = plan_all(1, Topology::Loop, (1, 2), &two, Some(1)).unwrap();
        assert_eq!(p.streams, vec![s(0, 0, 0, 0), s(0, 0, 0, 1)]);
    }
}
