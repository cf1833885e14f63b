//! The message-size sweep (`--sizes`): the closed-loop load phase once per size, for every
//! relay and Portcullis's echo route, each size a section of its own in the results
//! ([`Section::Sweep`]); the issue found the small-message gap to be user-space work per
//! message and large messages already cheaper than the peers, which one size cannot show.
//! This file draws the sweep; the measuring is [`crate::phases::load_phase`].

use crate::chart::{self, Axis, Panel, Scale, Series};
use crate::grid::{Section, Subject};
use crate::report::{human_size, short_name, Results, RunInfo};

/// The subjects drawn, with their colours: the echo route in Portcullis's colour, dashed.
const LINES: [(Subject, &str, bool); 5] = [
    (Subject::Portcullis, chart::PALETTE[0], false),
    (Subject::Baseline, chart::PALETTE[3], false),
    (Subject::Nginx, chart::PALETTE[2], false),
    (Subject::Haproxy, chart::PALETTE[1], false),
    (Subject::PortcullisEcho, chart::PALETTE[0], true),
];

/// CPU per message and messages per second by message size (log-log), one line per server.
pub fn svg(results: &Results, info: &RunInfo) -> String {
    let sizes = info.sizes();
    let panel = |title: &str, figure: &str, label: &str| Panel {
        title: title.into(),
        x: Axis {
            label: "message size (bytes, log scale)".into(),
            scale: Scale::Log,
            ticks: Some(sizes.iter().map(|&s| (s as f64, human_size(s))).collect()),
        },
        y: Axis {
            label: label.into(),
            scale: Scale::Log,
            ticks: None,
        },
        series: LINES
            .iter()
            .filter(|(s, _, _)| info.subjects.contains(s))
            .map(|&(subject, color, dashed)| Series {
                name: match subject {
                    Subject::PortcullisEcho => "Portcullis echo route".into(),
                    Subject::Portcullis => "Portcullis (relay)".into(),
                    s => short_name(s).into(),
                },
                points: sizes
                    .iter()
                    .filter_map(|&size| {
                        let v = results.median(subject, Section::Sweep(size), figure)?;
                        Some((size as f64, v))
                    })
                    .collect(),
                color,
                dashed,
            })
            .collect(),
    };
    let s = &info.settings;
    chart::svg(
        &format!(
            "wss relay by message size: {} connections, closed loop, {} worker(s) each ({})",
            s["conns"], s["workers"], info.date
        ),
        &[
            panel(
                "CPU per message round trip (lower is better)",
                "cpu_us_per_message",
                "server CPU per message (µs, log scale)",
            ),
            panel(
                "Messages per second (higher is better)",
                "messages_per_second",
                "round trips per second (log scale)",
            ),
        ],
    )
}
