//! A TCP pipe between the gateway and a real server (Redis), which the test controls: it adds
//! latency to what the server sends back, and it breaks the line three ways until it is
//! restored: a cut (open connections closed with FIN, new ones closed as soon as they are
//! accepted), a reset (the same with RST), and a blackhole (nothing forwarded any more, and
//! nothing closed: the sockets stay open and silent, as when a NAT or a load balancer forgets a
//! flow). It stands for the network, for trouble the server itself cannot be asked to make
//! (slow answers that still come, one replica cut off while the others are not); the server
//! behind it is real.
//!
//! The pipe runs on a thread of its own, so the test's runtime being busy never delays it; it
//! stops, closing every connection, when the handle drops.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// How the line breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Connections closed (FIN).
    Cut,
    /// Connections reset (RST).
    Reset,
    /// Nothing forwarded, nothing closed.
    Blackhole,
}

/// What the test sets, shared with the pipe's thread.
struct Line {
    /// Added to every chunk the server sends back.
    delay: Mutex<Duration>,
    /// While the line is broken, how (new connections meet it at once).
    down: Mutex<Option<Fault>>,
    /// Counts the breaks, with the last one's kind: every open connection meets the next one
    /// (even if the line is restored before the connection's task sees it).
    breaks: watch::Sender<(u64, Fault)>,
}

/// A running pipe to one server; stopped on drop.
pub struct Pipe {
    /// The loopback port the gateway connects to instead of the server's.
    pub port: u16,
    line: Arc<Line>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pipe {
    /// A pipe to the server on `127.0.0.1:server_port`, on a free loopback port.
    pub fn to(server_port: u16) -> Pipe {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let line = Arc::new(Line {
            delay: Mutex::new(Duration::ZERO),
            down: Mutex::new(None),
            breaks: watch::channel((0, Fault::Cut)).0,
        });
        let (stop, stopped) = oneshot::channel();
        let server: SocketAddr = ([127, 0, 0, 1], server_port).into();
        let shared = line.clone();
        let thread = std::thread::Builder::new()
            .name("test pipe".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept(listener, server, shared) => {}
                    }
                });
            })
            .unwrap();
        Pipe {
            port,
            line,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `redis://127.0.0.1:PORT` through the pipe.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Delay everything the server sends from now on by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self.line.delay.lock().unwrap() = delay;
    }

    /// Cut the line: close every connection, and every new one as soon as it is accepted.
    pub fn cut(&self) {
        self.break_line(Fault::Cut);
    }

    /// Reset the line: reset (RST) every connection, and every new one as soon as it is
    /// accepted.
    pub fn reset(&self) {
        self.break_line(Fault::Reset);
    }

    /// Blackhole the line: every connection, and every new one, stays open but nothing is
    /// forwarded either way any more, and nothing says so (no FIN, no RST).
    pub fn blackhole(&self) {
        self.break_line(Fault::Blackhole);
    }

    /// Forget the open connections, as a NAT or a load balancer forgets idle flows: they stay
    /// open but silent (no FIN, no RST), while new connections reach the server as before.
    pub fn forget(&self) {
        self.line.breaks.send_modify(|(n, kind)| {
            *n += 1;
            *kind = Fault::Blackhole;
        });
    }

    fn break_line(&self, fault: Fault) {
        *self.line.down.lock().unwrap() = Some(fault);
        self.line.breaks.send_modify(|(n, kind)| {
            *n += 1;
            *kind = fault;
        });
    }

    /// Restore the line: new connections reach the server again (the ones the break closed or
    /// silenced stay so, whether or not their ends have noticed yet).
    pub fn restore(&self) {
        *self.line.down.lock().unwrap() = None;
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(listener: TcpListener, server: SocketAddr, line: Arc<Line>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let down = *line.down.lock().unwrap();
        match down {
            None => {
                tokio::spawn(serve(client, server, line.clone()));
            }
            Some(Fault::Cut) => drop(client),
            Some(Fault::Reset) => reset(client),
            // Held open, silent, until the pipe stops.
            Some(Fault::Blackhole) => {
                tokio::spawn(async move {
                    let _held = client;
                    std::future::pending::<()>().await
                });
            }
        }
    }
}

/// Close with RST instead of FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// One connection: bytes both ways (the server's delayed), until either side ends or the
/// line breaks; then both sockets close (or are reset, or are held open and silent).
async fn serve(client: TcpStream, server: SocketAddr, line: Arc<Line>) {
    let Ok(upstream) = TcpStream::connect(server).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = upstream.into_split();
    let mut breaks = line.breaks.subscribe();
    let fault = tokio::select! {
        _ = copy(&mut from_client, &mut to_server) => None,
        _ = delayed(&mut from_server, &mut to_client, &line) => None,
        _ = breaks.changed() => Some(breaks.borrow().1),
    };
    let (Ok(client), Ok(upstream)) = (
        from_client.reunite(to_client),
        from_server.reunite(to_server),
    ) else {
        return;
    };
    match fault {
        None | Some(Fault::Cut) => {}
        Some(Fault::Reset) => {
            reset(client);
            reset(upstream);
        }
        Some(Fault::Blackhole) => {
            let _held = (client, upstream);
            std::future::pending::<()>().await
        }
    }
}

async fn copy(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Forward each chunk `delay` after it arrived (latency, not a slower rate: chunks read
/// meanwhile are not held up by the ones before them).
async fn delayed(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf, line: &Line) {
    let (queue, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let delay = *line.delay.lock().unwrap();
            if queue
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                return;
            }
        }
    };
    let write = async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(read, write);
}
