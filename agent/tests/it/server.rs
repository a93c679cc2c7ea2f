//! A hand-rolled HTTP/1.1 server on 127.0.0.1 whose misbehaviour tests choose:
//! cut the connection mid-body, ignore `Range`, or answer 404/500.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How one path behaves.
#[derive(Clone, Default)]
pub struct Route {
    pub data: Arc<Vec<u8>>,
    /// Honour `Range: bytes=N-`.
    pub range: bool,
    /// Cut the body after this many bytes, for the first `cuts` requests.
    pub cut_after: Option<usize>,
    pub cuts: usize,
    /// Stop sending (without closing) after this many bytes, for the first `cuts` requests.
    pub stall_after: Option<usize>,
    /// Answer this status with an empty body instead.
    pub status: Option<u16>,
}

pub struct Server {
    pub addr: String,
    routes: Arc<Mutex<HashMap<String, (Route, usize)>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = format!("http://{}", l.local_addr().expect("addr"));
        let routes: Arc<Mutex<HashMap<String, (Route, usize)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (routes.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let r = r.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &r);
                });
            }
        });
        Server { addr, routes, stop }
    }

    pub fn add(&self, path: &str, route: Route) -> String {
        self.routes
            .lock()
            .expect("lock")
            .insert(path.to_string(), (route, 0));
        format!("{}{}", self.addr, path)
    }

    pub fn requests(&self, path: &str) -> usize {
        self.routes
            .lock()
            .expect("lock")
            .get(path)
            .map_or(0, |r| r.1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr.trim_start_matches("http://"));
    }
}

fn serve(conn: TcpStream, routes: &Mutex<HashMap<String, (Route, usize)>>) -> std::io::Result<()> {
    let mut rd = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    rd.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range_from = None;
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range_from = v.trim().trim_end_matches('-').parse::<usize>().ok();
        }
    }
    let (route, nth) = {
        let mut m = routes.lock().expect("lock");
        match m.get_mut(&path) {
            Some(e) => {
                e.1 += 1;
                (e.0.clone(), e.1)
            }
            None => (
                Route {
                    status: Some(404),
                    ..Default::default()
                },
                1,
            ),
        }
    };
    let mut w = conn;
    if let Some(st) = route.status {
        write!(
            w,
            "HTTP/1.1 {st} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    let len = route.data.len();
    let from = match range_from {
        Some(f) if route.range && f < len => {
            write!(
                w,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {f}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                len - 1,
                len - f
            )?;
            f
        }
        _ => {
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            0
        }
    };
    let mut body = &route.data[from..];
    if let Some(cut) = route.cut_after.filter(|_| nth <= route.cuts) {
        body = &body[..cut.min(body.len())];
        w.write_all(body)?;
        w.flush()?;
        return w.shutdown(std::net::Shutdown::Both);
    }
    if let Some(n) = route.stall_after.filter(|_| nth <= route.cuts) {
        w.write_all(&body[..n.min(body.len())])?;
        w.flush()?;
        std::thread::sleep(std::time::Duration::from_secs(20));
        return Ok(());
    }
    for c in body.chunks(1 << 20) {
        w.write_all(c)?;
    }
    Ok(())
}
