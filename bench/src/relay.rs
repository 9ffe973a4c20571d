//! A byte relay: every client connection gets its own upstream connection
//! and bytes are copied both ways, nothing parsed. It does the same socket
//! work per request as any HTTP proxy in front of the same upstream (a read
//! and a write on each side) and nothing else, so its CPU per request is the
//! floor the gateway's is measured against: what is above it is the
//! gateway's own work (HTTP, JSON, routing, policies, metrics).
//!
//! Run as `chaos --relay LISTEN_PORT UPSTREAM_PORT` (a child process, so
//! its CPU time is its own), one single-threaded runtime per CPU like the
//! gateway's workers.

use std::net::{Ipv4Addr, SocketAddr};
use tokio::net::{TcpListener, TcpStream};

/// Serves until killed. Errors only when it cannot listen.
pub fn run(listen_port: u16, upstream_port: u16) -> Result<(), String> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, listen_port)).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port));
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = Vec::with_capacity(workers);
    for _ in 0..workers {
        let l = listener.try_clone().map_err(|e| e.to_string())?;
        threads.push(std::thread::spawn(move || worker(l, upstream)));
    }
    for t in threads {
        t.join().map_err(|_| "a relay worker panicked".to_string())??;
    }
    Ok(())
}

fn worker(listener: std::net::TcpListener, upstream: SocketAddr) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(pipe(client, upstream));
        }
    })
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return;
    };
    // As the gateway does on both sides (no Nagle delay on small writes).
    if client.set_nodelay(true).is_err() || up.set_nodelay(true).is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_pass_both_ways_unchanged_and_the_upstream_closing_ends_the_pipe() {
        let upstream = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        let front = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let relay = tokio::spawn(async move {
            let (c, _) = front.accept().await.unwrap();
            pipe(c, up_addr).await;
        });
        let mut client = TcpStream::connect(front_addr).await.unwrap();
        client.write_all(b"POST /v1 HTTP/1.1\r\n\r\n").await.unwrap();
        let (mut server, _) = upstream.accept().await.unwrap();
        let mut got = [0u8; 21];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"POST /v1 HTTP/1.1\r\n\r\n");
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        drop(server);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"HTTP/1.1 200 OK\r\n\r\n");
        // Both directions closed: the pipe returns.
        drop(client);
        relay.await.unwrap();
    }
}
