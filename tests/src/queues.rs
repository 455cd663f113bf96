//! A multiqueue guest's own view of its queues: how many queue pairs its virtio-net driver
//! uses (`ethtool -l`) and how many packets each queue carried (`ethtool -S`), printed by a
//! guest script and parsed here.

use crate::GuestRun;

/// Guest script lines that print `queue.combined=N` (the queue pairs in use) and one
/// `queue.rx_queue_I_packets=N` / `queue.tx_queue_I_packets=N` line per queue.
pub const QUEUE_STATS_SCRIPT: &str = "\
ethtool -l eth0 | awk '/^Combined:/ { c = $2 } END { print \"queue.combined=\" c }'
ethtool -S eth0 | sed -nE 's/^[[:space:]]*((rx|tx)_queue_[0-9]+_packets):[[:space:]]*/queue.\\1=/p'
";

/// Packets per queue, by queue index, as the guest's driver counted them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// The queue pairs the driver uses (`ethtool -l`, current combined channels).
    pub combined: Option<u32>,
    pub rx: Vec<u64>,
    pub tx: Vec<u64>,
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
            let (Some(index), Ok(packets)) = (
                rest.strip_suffix("_packets")
                    .and_then(|i| i.parse::<usize>().ok()),
                value.parse::<u64>(),
            ) else {
                continue;
            };
            let queues = match dir {
                "rx" => &mut counters.rx,
                "tx" => &mut counters.tx,
                _ => continue,
            };
            if queues.len() <= index {
                queues.resize(index + 1, 0);
            }
            queues[index] = packets;
        }
        counters
    }

    /// The queues that carried less than `min_share` of their direction's packets, as
    /// `rx_queue_1: 12 of 3456` lines (none when every queue had its share).
    pub fn below_share(&self, min_share: f64) -> Vec<String> {
        let mut short = Vec::new();
        for (dir, queues) in [("rx", &self.rx), ("tx", &self.tx)] {
            let total: u64 = queues.iter().sum();
            for (i, &packets) in queues.iter().enumerate() {
                if (packets as f64) < min_share * total as f64 || total == 0 {
                    short.push(format!("{dir}_queue_{i}: {packets} of {total}"));
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
             other=1"));
        assert_eq!(
            c,
            QueueCounters {
                combined: Some(2),
                rx: vec![900, 100],
                tx: vec![10, 90],
            }
        );
        assert!(c.below_share(0.10).is_empty(), "{:?}", c.below_share(0.10));
        assert_eq!(
            c.below_share(0.11),
            vec!["rx_queue_1: 100 of 1000", "tx_queue_0: 10 of 100"]
        );
        let idle = QueueCounters::parse(&run("queue.rx_queue_0_packets=0"));
        assert_eq!(idle.below_share(0.1), vec!["rx_queue_0: 0 of 0"]);
    }
}
