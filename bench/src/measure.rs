//! Which cells of the grid (a [`Subject`] and a [`Section`]) a run measures, and one cell
//! measured: a fresh server instance started for it, the section's phase run against it.

use crate::args::Args;
use crate::grid::{Section, Subject};
use crate::phases::{self, Figures};
use crate::servers::Env;
use crate::{burst, compression, hold, http2};

/// Whether `subject` takes part in `section` in this run.
pub fn runs(args: &Args, subject: Subject, section: Section) -> bool {
    match section {
        Section::Sweep(_) | Section::Burst => subject != Subject::UpstreamDirect,
        Section::BalanceRoundRobin
        | Section::BalanceHash
        | Section::TracesOff
        | Section::TracesOn => subject == Subject::Portcullis,
        Section::Hold => match subject {
            Subject::PortcullisEcho => args.hold_echo.is_some(),
            Subject::UpstreamDirect => false,
            _ => args.hold_relay.is_some(),
        },
        // NGINX relays compression end to end (the client and the compressing upstream agree
        // it through it); the memory of idle compressed sockets is Portcullis's figure.
        Section::Compressed | Section::Uncompressed => matches!(
            subject,
            Subject::Portcullis | Subject::PortcullisEcho | Subject::Nginx
        ),
        Section::CompressedIdle | Section::CompressedIdleNoTakeover => {
            matches!(subject, Subject::Portcullis | Subject::PortcullisEcho)
        }
        // NGINX does not serve RFC 8441; HAProxy does, but is not measured here (bench/README).
        Section::Http2 => subject.is_portcullis(),
        s if s.portcullis_only() => subject.is_portcullis(),
        _ => true,
    }
}

/// One phase on a fresh server instance.
pub fn measure(
    env: &Env,
    rt: &tokio::runtime::Runtime,
    args: &Args,
    subject: Subject,
    section: Section,
) -> Result<Figures, String> {
    let (mut proc, target) = env.start(subject, section)?;
    let figures = match section {
        Section::Load => phases::load_phase(rt, args, &proc, &target, args.size),
        Section::Sweep(size) => phases::load_phase(rt, args, &proc, &target, size),
        Section::Idle => phases::idle_phase(rt, args, &proc, &target),
        Section::Burst => burst::phase(rt, args, &mut proc, &target, args.burst.unwrap_or(1)),
        Section::Hold => {
            let n = if subject == Subject::PortcullisEcho {
                args.hold_echo
            } else {
                args.hold_relay
            };
            hold::phase(rt, args, &proc, &target, n.unwrap_or(1))
        }
        Section::Compressed => compression::load_phase(rt, args, &proc, &target, true),
        Section::Uncompressed => compression::load_phase(rt, args, &proc, &target, false),
        Section::CompressedIdle => compression::idle_phase(rt, args, &proc, &target, true),
        Section::CompressedIdleNoTakeover => {
            compression::idle_phase(rt, args, &proc, &target, false)
        }
        Section::Http2 => {
            let h2 = env.route(subject, section).http2;
            http2::phase(rt, args, &proc, &target, h2)
        }
        _ => phases::handshake_phase(rt, args, &proc, &target),
    };
    // An error of the clients is often explained by the server's death.
    proc.check_alive()?;
    figures
}
