//! permessage-deflate (RFC 7692), terminated at the gateway: negotiated with each side on its
//! own ([`accept`] with a client, [`Offer`] and [`Offer::agreed`] with an upstream), and a codec
//! per direction ([`codec`]) that inflates to validate, with the size limit applied while
//! inflating.
//!
//! Parameters follow the RFC to the letter: an offer with an unknown or repeated parameter, or
//! a value out of range, is declined (the next offer, or none, is taken); an answer is always
//! within the offer it accepts. An upstream's answer outside the gateway's offer fails its
//! handshake (RFC 6455 section 4.1, RFC 7692 section 5).

pub(crate) mod codec;

use super::extensions::Extension;
use crate::config::compression::Compression;

/// The extension's registered name.
pub(crate) const NAME: &str = "permessage-deflate";

/// The largest window RFC 7692 defines (32 KiB); what a sender uses when nothing limits it.
const MAX_BITS: u8 = 15;

/// How one direction compresses: the sender's largest LZ77 window, and whether it resets its
/// context after each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Direction {
    pub(crate) window_bits: u8,
    pub(crate) no_context_takeover: bool,
}

impl Direction {
    /// Whether messages compressed under `self` can be passed, unchanged, to a receiver that
    /// agreed `to`: the sender's window fits the receiver's, and if the receiver may reset its
    /// context after each message, so does the sender.
    pub(crate) fn fits(self, to: Direction) -> bool {
        self.window_bits <= to.window_bits && (self.no_context_takeover || !to.no_context_takeover)
    }
}

/// What both ends of one connection agreed, by direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// What the server (on the client side: the gateway) sends.
    pub(crate) server: Direction,
    /// What the client sends.
    pub(crate) client: Direction,
}

impl Agreed {
    /// As the access log says it: the extension element of the gateway's answer.
    pub(crate) fn describe(&self) -> String {
        header(self, true)
    }
}

/// One permessage-deflate offer, parsed and range-checked (RFC 7692 section 7.1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value (the client supports any window).
    client_max_window_bits: Option<Option<u8>>,
}

impl Params {
    /// `None` for an unknown or repeated parameter, or a value out of range: such an offer is
    /// declined, and such an answer fails.
    fn parse(ext: &Extension) -> Option<Params> {
        let mut p = Params::default();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in &ext.params {
            if seen.contains(&name.as_str()) {
                return None;
            }
            seen.push(name);
            match (name.as_str(), value) {
                ("server_no_context_takeover", None) => p.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => p.client_no_context_takeover = true,
                ("server_max_window_bits", Some(v)) => p.server_max_window_bits = Some(bits(v)?),
                ("client_max_window_bits", None) => p.client_max_window_bits = Some(None),
                ("client_max_window_bits", Some(v)) => {
                    p.client_max_window_bits = Some(Some(bits(v)?))
                }
                _ => return None,
            }
        }
        Some(p)
    }
}

/// A window size: 8 to 15, decimal digits only, no leading zero (RFC 7692 section 7.1.2).
fn bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 2 {
        return None;
    }
    v.parse().ok().filter(|b| (8..=MAX_BITS).contains(b))
}

/// The server side: accept the first of the client's offers the gateway can (declining, never
/// failing, the others), within `settings`. Returns what was agreed and the answer's
/// `Sec-WebSocket-Extensions` value.
pub(crate) fn accept(offers: &[Extension], settings: &Compression) -> Option<(Agreed, String)> {
    if !settings.enabled {
        return None;
    }
    offers
        .iter()
        .filter(|e| e.name == NAME)
        .find_map(Params::parse)
        .map(|offer| {
            let server = Direction {
                window_bits: settings
                    .server_max_window_bits
                    .min(offer.server_max_window_bits.unwrap_or(MAX_BITS)),
                no_context_takeover: offer.server_no_context_takeover
                    || settings.server_no_context_takeover,
            };
            // Without the parameter in the offer the client may use any window, and the answer
            // may not name one.
            let client = Direction {
                window_bits: match offer.client_max_window_bits {
                    Some(v) => settings.client_max_window_bits.min(v.unwrap_or(MAX_BITS)),
                    None => MAX_BITS,
                },
                no_context_takeover: offer.client_no_context_takeover
                    || settings.client_no_context_takeover,
            };
            let agreed = Agreed { server, client };
            let answer = header(&agreed, offer.client_max_window_bits.is_some());
            (agreed, answer)
        })
}

/// An extension element for `agreed`; `client_bits`: name the client's window.
fn header(agreed: &Agreed, client_bits: bool) -> String {
    let mut out = String::from(NAME);
    if agreed.server.no_context_takeover {
        out.push_str("; server_no_context_takeover");
    }
    if agreed.client.no_context_takeover {
        out.push_str("; client_no_context_takeover");
    }
    if agreed.server.window_bits < MAX_BITS {
        out.push_str(&format!(
            "; server_max_window_bits={}",
            agreed.server.window_bits
        ));
    }
    if client_bits {
        out.push_str(&format!(
            "; client_max_window_bits={}",
            agreed.client.window_bits
        ));
    }
    out
}

/// The gateway's offer to an upstream. It mirrors what the client agreed where there is a
/// client agreement, so that compressed messages can pass through unchanged; otherwise the
/// route's settings, with the roles mirrored (the gateway is the client here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offer {
    /// What the gateway asks the upstream to send with (at most).
    upstream: Direction,
    /// What the gateway itself will send with (at most).
    gateway: Direction,
}

impl Offer {
    pub(crate) fn new(settings: &Compression, client: Option<&Agreed>) -> Option<Offer> {
        if !settings.enabled {
            return None;
        }
        Some(match client {
            // Upstream → client messages must fit what the client's inflater agreed; client →
            // upstream messages are sent as the client sent them.
            Some(c) => Offer {
                upstream: c.server,
                gateway: c.client,
            },
            None => Offer {
                upstream: Direction {
                    window_bits: settings.client_max_window_bits,
                    no_context_takeover: settings.client_no_context_takeover,
                },
                gateway: Direction {
                    window_bits: settings.server_max_window_bits,
                    no_context_takeover: settings.server_no_context_takeover,
                },
            },
        })
    }

    /// The `Sec-WebSocket-Extensions` value of the upstream request.
    pub(crate) fn header(&self) -> String {
        let mut out = format!(
            "{NAME}; server_max_window_bits={}; client_max_window_bits={}",
            self.upstream.window_bits, self.gateway.window_bits
        );
        if self.upstream.no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.gateway.no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        out
    }

    /// Check the upstream's answer as a client must: nothing but one permessage-deflate
    /// element, within this offer. `Ok(None)`: the upstream declined (no extension).
    pub(crate) fn agreed(
        offer: Option<&Offer>,
        answer: &[Extension],
    ) -> Result<Option<Agreed>, String> {
        let (ext, offer) = match (answer, offer) {
            ([], _) => return Ok(None),
            ([ext], Some(offer)) if ext.name == NAME => (ext, offer),
            _ => {
                let names: Vec<&str> = answer.iter().map(|e| e.name.as_str()).collect();
                return Err(format!(
                    "answered with an extension not offered: {}",
                    names.join(", ")
                ));
            }
        };
        let p = Params::parse(ext).ok_or("answered with invalid permessage-deflate parameters")?;
        let server_bits = p
            .server_max_window_bits
            .ok_or("accepted permessage-deflate without server_max_window_bits")?;
        if server_bits > offer.upstream.window_bits {
            return Err(format!(
                "answered server_max_window_bits={server_bits}, above the {} offered",
                offer.upstream.window_bits
            ));
        }
        if offer.upstream.no_context_takeover && !p.server_no_context_takeover {
            return Err("accepted permessage-deflate without server_no_context_takeover".into());
        }
        let client_bits = match p.client_max_window_bits {
            None => offer.gateway.window_bits,
            Some(Some(b)) if b <= offer.gateway.window_bits => b,
            Some(_) => return Err("answered an invalid client_max_window_bits".into()),
        };
        Ok(Some(Agreed {
            server: Direction {
                window_bits: server_bits,
                no_context_takeover: p.server_no_context_takeover,
            },
            client: Direction {
                window_bits: client_bits,
                no_context_takeover: p.client_no_context_takeover
                    || offer.gateway.no_context_takeover,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::extensions::parse;
    use super::*;

    fn offers(v: &str) -> Vec<Extension> {
        parse([v.as_bytes()]).unwrap()
    }

    fn settings() -> Compression {
        Compression::default()
    }

    #[test]
    fn a_browser_offer_gets_the_routes_windows() {
        let (agreed, answer) = accept(
            &offers("permessage-deflate; client_max_window_bits"),
            &settings(),
        )
        .unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        );
        assert_eq!(agreed.client.window_bits, 12);
        assert!(!agreed.client.no_context_takeover);
    }

    #[test]
    fn answers_stay_within_the_offer() {
        let (a, answer) = accept(
            &offers("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9; server_no_context_takeover"),
            &settings(),
        )
        .unwrap();
        assert_eq!(answer, "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9");
        assert_eq!(
            a.server,
            Direction {
                window_bits: 10,
                no_context_takeover: true
            }
        );
        // No client_max_window_bits offered: the client may use 15, and the answer names none.
        let (a, answer) = accept(&offers("permessage-deflate"), &settings()).unwrap();
        assert_eq!(a.client.window_bits, 15);
        assert_eq!(answer, "permessage-deflate; server_max_window_bits=12");
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=1a",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(accept(&offers(bad), &settings()), None, "{bad}");
            let two = format!("{bad}, permessage-deflate; client_no_context_takeover");
            let (a, _) = accept(&offers(&two), &settings()).unwrap();
            assert!(a.client.no_context_takeover, "{two}");
        }
        let off = Compression {
            enabled: false,
            ..settings()
        };
        assert_eq!(accept(&offers("permessage-deflate"), &off), None);
    }

    #[test]
    fn upstream_answers_are_checked() {
        let (client, _) = accept(
            &offers("permessage-deflate; client_max_window_bits"),
            &settings(),
        )
        .unwrap();
        let offer = Offer::new(&settings(), Some(&client)).unwrap();
        assert_eq!(
            offer.header(),
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        );
        let check = |v: &str| Offer::agreed(Some(&offer), &offers(v));
        let ok = check("permessage-deflate; server_max_window_bits=12")
            .unwrap()
            .unwrap();
        assert!(client.client.fits(ok.client) && ok.server.fits(client.server));
        let smaller =
            check("permessage-deflate; server_max_window_bits=9; client_max_window_bits=10")
                .unwrap()
                .unwrap();
        assert!(
            !client.client.fits(smaller.client),
            "transcoded: the client uses 12 bits"
        );
        assert!(smaller.server.fits(client.server));
        assert_eq!(check("").unwrap(), None);
        for bad in [
            "permessage-deflate; server_max_window_bits=13",
            "permessage-deflate",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=13",
            "permessage-deflate; server_max_window_bits=12; bogus",
            "permessage-deflate; server_max_window_bits=12, permessage-deflate; server_max_window_bits=12",
            "x-custom",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        assert!(Offer::agreed(None, &offers("permessage-deflate")).is_err());
    }

    #[test]
    fn context_takeover_decides_pass_through() {
        let keeps = Direction {
            window_bits: 12,
            no_context_takeover: false,
        };
        let resets = Direction {
            no_context_takeover: true,
            ..keeps
        };
        assert!(keeps.fits(keeps) && resets.fits(keeps) && resets.fits(resets));
        assert!(
            !keeps.fits(resets),
            "a receiver that resets cannot read a sender that keeps"
        );
    }
}
