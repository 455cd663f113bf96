//! A multiqueue guest's own view of its queues: how many queue pairs its virtio-net driver
//! uses (`ethtool -l`) and how many packets and bytes each queue carried (`ethtool -S`),
//! printed by a guest script and parsed here.

use crate::GuestRun;

/// Guest script lines that print `queue.combined=N` (the queue pairs in use) and one
/// `queue.rx_queue_I_packets=N` / `queue.tx_queue_I_packets=N` (and `_bytes`) line per queue.
pub const QUEUE_STATS_SCRIPT: &str = "\
ethtool -l eth0 | awk '/^Combined:/ { c = $2 } END { print \"queue.combined=\" c }'
ethtool -S eth0 | sed -nE 's/^[[:space:]]*((rx|tx)_queue_[0-9]+_(packets|bytes)):[[:space:]]*/queue.\\1=/p'
";

/// Packets and bytes per queue, by queue index, as the guest's driver counted them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// The queue pairs the driver uses (`ethtool -l`, current combined channels).
    pub combined: Option<u32>,
    pub rx: Vec<u64>,
    pub tx: Vec<u64>,
    pub rx_bytes: Vec<u64>,
    pub tx_bytes: Vec<u64>,
}

/// What [`QueueCounters::below_share`] compares: packets count every frame alike, so they
/// depend on how the traffic was batched (one 64 KiB TSO frame or 45 MSS-sized ones, one
/// ACK per frame or per batch); bytes are the traffic itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Packets,
    Bytes,
}

impl QueueCounters {
    /// Parses what [`QUEUE_STATS_SCRIPT`] printed (the last value of each key wins, so a
    /// script may print the counters more than once).
    pub fn parse(run: &GuestRun) -> QueueCounters {
        let mut counters = QueueCounters::default();
        for line in &run.run {
            let Some((key, value)) = line
                .strip_prefix("queue.")
                .and_then(|rest| rest.split_once('='))
            else {
                continue;
            };
            if key == "combined" {
                counters.combined = value.parse().ok();
                continue;
            }
            let Some((dir, rest)) = key.split_once("_queue_") else {
                continue;
            };
            let (index, measure) = if let Some(i) = rest.strip_suffix("_packets") {
                (i, Measure::Packets)
            } else if let Some(i) = rest.strip_suffix("_bytes") {
                (i, Measure::Bytes)
            } else {
                continue;
            };
            let (Ok(index), Ok(count)) = (index.parse::<usize>(), value.parse::<u64>()) else {
                continue;
            };
            let queues = match (dir, measure) {
                ("rx", Measure::Packets) => &mut counters.rx,
                ("tx", Measure::Packets) => &mut counters.tx,
                ("rx", Measure::Bytes) => &mut counters.rx_bytes,
                ("tx", Measure::Bytes) => &mut counters.tx_bytes,
                _ => continue,
            };
            if queues.len() <= index {
                queues.resize(index + 1, 0);
            }
            queues[index] = count;
        }
        counters
    }

    /// The queues that carried less than `min_share` of their direction's packets or bytes,
    /// as `rx_queue_1: 12 of 3456 packets` lines (none when every queue had its share).
    pub fn below_share(&self, min_share: f64, measure: Measure) -> Vec<String> {
        let (rx, tx, unit) = match measure {
            Measure::Packets => (&self.rx, &self.tx, "packets"),
            Measure::Bytes => (&self.rx_bytes, &self.tx_bytes, "bytes"),
        };
        let mut short = Vec::new();
        for (dir, queues) in [("rx", rx), ("tx", tx)] {
            let total: u64 = queues.iter().sum();
            for (i, &count) in queues.iter().enumerate() {
                if (count as f64) < min_share * total as f64 || total == 0 {
                    short.push(format!("{dir}_queue_{i}: {count} of {total} {unit}"));
                }
            }
        }
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(lines: &str) -> GuestRun {
        let console: String = std::iter::once("=== VNU-GUEST BEGIN".to_owned())
            .chain(lines.lines().map(|l| format!("run: {l}")))
            .chain(std::iter::once("=== VNU-GUEST END".to_owned()))
            .collect::<Vec<_>>()
            .join("\n");
        GuestRun::parse("t", &console, "", Duration::ZERO)
    }

    #[test]
    fn parses_the_counters_and_finds_the_short_queues() {
        let c = QueueCounters::parse(&run("queue.combined=2\n\
             queue.rx_queue_0_packets=900\n\
             queue.tx_queue_0_packets=10\n\
             queue.rx_queue_1_packets=100\n\
             queue.tx_queue_1_packets=5\n\
             queue.tx_queue_1_packets=90\n\
             queue.rx_queue_x_packets=7\n\
             queue.rx_queue_0_bytes=5000\n\
             queue.rx_queue_1_bytes=4000\n\
             queue.tx_queue_0_bytes=300\n\
             queue.tx_queue_1_bytes=7000\n\
             queue.tx_queue_1_frames=7\n\
             other=1"));
        assert_eq!(
            c,
            QueueCounters {
                combined: Some(2),
                rx: vec![900, 100],
                tx: vec![10, 90],
                rx_bytes: vec![5000, 4000],
                tx_bytes: vec![300, 7000],
            }
        );
        let packets = Measure::Packets;
        assert!(
            c.below_share(0.10, packets).is_empty(),
            "{:?}",
            c.below_share(0.10, packets)
        );
        assert_eq!(
            c.below_share(0.11, packets),
            vec![
                "rx_queue_1: 100 of 1000 packets",
                "tx_queue_0: 10 of 100 packets"
            ]
        );
        assert_eq!(
            c.below_share(0.10, Measure::Bytes),
            vec!["tx_queue_0: 300 of 7300 bytes"]
        );
        let idle = QueueCounters::parse(&run("queue.rx_queue_0_packets=0"));
        assert_eq!(
            idle.below_share(0.1, packets),
            vec!["rx_queue_0: 0 of 0 packets"]
        );
    }
}
