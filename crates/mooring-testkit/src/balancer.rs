//! A TCP load balancer in front of several nodes, as a client would reach a deployment: each
//! new connection goes to the first node in its list that accepts one, so when a node dies,
//! its connections close and the clients' reconnections reach the next node. It reads nothing
//! of what it carries.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The balancer; it stops accepting when dropped (connections it carries run to their end).
#[derive(Debug)]
pub struct Balancer {
    addr: SocketAddr,
    accepting: JoinHandle<()>,
}

impl Balancer {
    /// Listens on a free local port in front of `nodes`, tried in this order.
    pub async fn start(nodes: Vec<SocketAddr>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let nodes = nodes.clone();
                tokio::spawn(async move {
                    for node in nodes {
                        if let Ok(mut outbound) = TcpStream::connect(node).await {
                            let _ = outbound.set_nodelay(true);
                            let _ = inbound.set_nodelay(true);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                    // No node accepts: the client sees its connection close.
                });
            }
        });
        Ok(Self { addr, accepting })
    }

    /// The realtime URL through the balancer.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
