//! `ming-netprobe HOST:PORT`: tries one TCP connection and says how it went. Exit 0 when it
//! connected, 1 when it could not. The sandbox tests run it under the services' sandbox.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn main() {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: ming-netprobe HOST:PORT");
        std::process::exit(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ming-netprobe: bad address {addr}: {e}");
            std::process::exit(2);
        }
    };
    let sandbox = std::env::var("MING_SANDBOX").unwrap_or_default();
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => {
            println!("connected to {addr} (sandbox: {sandbox})");
        }
        Err(e) => {
            println!("refused: {e} (sandbox: {sandbox})");
            std::process::exit(1);
        }
    }
}
