//! A TCP proxy for fault injection: cutting it off looks to the services like their
//! database server going away, without touching the real server other tests use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct TcpProxy {
    pub addr: SocketAddr,
    pub target: SocketAddr,
    up: Arc<AtomicBool>,
    /// Cancelled to sever every open connection; replaced on restore.
    cut: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (up_, cut_, stop_) = (up.clone(), cut.clone(), stop.clone());
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
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
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
        }
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
