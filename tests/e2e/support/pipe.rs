//! A TCP pipe between the gateway and a real server (Redis), which the test controls: it adds
//! latency to what the server sends back, and it cuts the line (open connections closed, new
//! ones closed as soon as they are accepted) and restores it. It stands for the network, for
//! trouble the server itself cannot be asked to make (slow answers that still come, one
//! replica cut off while the others are not); the server behind it is real.
//!
//! The pipe runs on a thread of its own, so the test's runtime being busy never delays it; it
//! stops, closing every connection, when the handle drops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// What the test sets, shared with the pipe's thread.
struct Line {
    /// Added to every chunk the server sends back.
    delay: Mutex<Duration>,
    /// True while the line is cut: new connections are closed at once.
    down: AtomicBool,
    /// Counts the cuts: every open connection closes at the next one (even if the line is
    /// restored before the connection's task sees it).
    cuts: watch::Sender<u64>,
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
            down: AtomicBool::new(false),
            cuts: watch::channel(0).0,
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
        self.line.down.store(true, Ordering::SeqCst);
        self.line.cuts.send_modify(|n| *n += 1);
    }

    /// Restore the line: new connections reach the server again (the ones the cut closed stay
    /// closed, whether or not their ends have noticed yet).
    pub fn restore(&self) {
        self.line.down.store(false, Ordering::SeqCst);
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
        if line.down.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        tokio::spawn(serve(client, server, line.clone()));
    }
}

/// One connection: bytes both ways (the server's delayed), until either side ends or the
/// line is cut; then both sockets close.
async fn serve(client: TcpStream, server: SocketAddr, line: Arc<Line>) {
    let Ok(upstream) = TcpStream::connect(server).await else {
        return;
    };
    let (from_client, to_client) = client.into_split();
    let (from_server, to_server) = upstream.into_split();
    let mut cuts = line.cuts.subscribe();
    tokio::select! {
        _ = copy(from_client, to_server) => {}
        _ = delayed(from_server, to_client, &line) => {}
        _ = cuts.changed() => {}
    }
}

async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Forward each chunk `delay` after it arrived (latency, not a slower rate: chunks read
/// meanwhile are not held up by the ones before them).
async fn delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, line: &Line) {
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
