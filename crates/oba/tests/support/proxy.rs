//! A TCP proxy for fault injection: cutting it off looks to the services like their
//! database server going away, without touching the real server other tests use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct TcpProxy {
    pub addr: SocketAddr,
    pub target: SocketAddr,
    up: Arc<AtomicBool>,
    /// Cancelled to sever every open connection; replaced on restore.
    cut: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
    /// Client writes counted by [`TcpProxy::watch`], and how many were seen.
    watched: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    seen: Arc<AtomicUsize>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let watched = Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
        let seen = Arc::new(AtomicUsize::new(0));
        let (up_, cut_, stop_) = (up.clone(), cut.clone(), stop.clone());
        let (watched_, seen_) = (watched.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                    () = stop_.cancelled() => return,
                };
                if !up_.load(Ordering::SeqCst) {
                    // Down: accept and close at once, like a server that is not there.
                    continue;
                }
                let severed = cut_.lock().expect("lock").clone();
                let (watched, seen) = (watched_.clone(), seen_.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_server, mut to_server) = server.into_split();
                    let (mut from_client, mut to_client) = client.split();
                    let upstream = async {
                        let mut buf = vec![0; 64 * 1024];
                        loop {
                            let n = match from_client.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if watched.lock().expect("lock").as_deref() == Some(&buf[..n]) {
                                seen.fetch_add(1, Ordering::SeqCst);
                            }
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        () = upstream => {}
                        _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
                        () = severed.cancelled() => {}
                    }
                });
            }
        });
        Self {
            addr,
            target,
            up,
            cut,
            stop,
            watched,
            seen,
        }
    }

    /// From now on, counts the client's writes that are exactly `chunk` (a message that a
    /// client sends alone, such as PostgreSQL's Sync that a ping is).
    pub fn watch(&self, chunk: &[u8]) {
        *self.watched.lock().expect("lock") = Some(chunk.to_vec());
        self.seen.store(0, Ordering::SeqCst);
    }

    /// How many writes matched [`TcpProxy::watch`]'s chunk since it was called.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// The database goes away: open connections are severed, new ones refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.lock().expect("lock").cancel();
    }

    /// The database is back.
    pub fn restore(&self) {
        *self.cut.lock().expect("lock") = CancellationToken::new();
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
