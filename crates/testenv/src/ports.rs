use std::net::TcpListener;

/// A loopback port that was free a moment ago. The kernel hands out ephemeral ports in sequence, so two
/// parallel tests asking at once get different ports.
pub(crate) fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
