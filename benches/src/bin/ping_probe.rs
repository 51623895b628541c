//! One client that sends PING after PING to `127.0.0.1:PORT` until the file STOP exists, then
//! prints the p99 and the largest round trip in milliseconds ("p99 max"). Used by
//! `benches/slot_migration_stall.sh` to see what a slot migration costs a node's clients.
//!
//!     ping_probe PORT STOP

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(stop)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: ping_probe PORT STOP");
        std::process::exit(2);
    };
    let client = match opt_harness::redis::Client::open(format!("redis://127.0.0.1:{port}/")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ping_probe: {e}");
            std::process::exit(1);
        }
    };
    let mut con = match client.get_connection() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ping_probe: {e}");
            std::process::exit(1);
        }
    };
    let mut rtts: Vec<Duration> = Vec::new();
    while !std::path::Path::new(stop).exists() {
        let t = Instant::now();
        if opt_harness::redis::cmd("PING")
            .query::<String>(&mut con)
            .is_err()
        {
            break;
        }
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = rtts.get(rtts.len() * 99 / 100).copied().unwrap_or_default();
    let max = rtts.last().copied().unwrap_or_default();
    println!("{:.2} {:.2}", ms(p99), ms(max));
}
