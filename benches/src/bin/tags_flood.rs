//! Names chosen to collide in the tag index's table, against ordinary names, on one build.
//!
//! A client that controls key names (a cache keyed by URL, say) can compute the public hash
//! the index hashes names with (`opt_core::tags::name_hash`, xxh3) and keep only names whose
//! low 16 bits are zero. Placed by those bits, they all fall into one run of the index's
//! table: each insert walks the run, and a growth of the table re-places them all inside one
//! command. Since the table mixes a per-process secret into its buckets, such names spread like
//! any others. This writes N crafted names and N ordinary ones with `OPT.SET ... TAGS t`, one
//! command at a time on a fresh server each, and prints the total time and the slowest command.
//!
//! Run: `cargo build --release -p redis-opt-module && cargo run --release -p redis-opt-benches
//! --bin tags_flood [N]` (N defaults to 20,000; `OPT_MODULE=path` measures another build).

use std::time::{Duration, Instant};

use opt_harness::redis;
use opt_harness::Server;

/// Low bits of the public hash that the crafted names share.
const AIMED_BITS: u32 = 16;

/// `n` names `flood:{i}:{nonce}` whose public hash has its low `AIMED_BITS` bits zero, found
/// by trying nonces (about 65,000 hashes a name), on two threads.
fn crafted_names(n: usize) -> Vec<String> {
    let mask = (1u64 << AIMED_BITS) - 1;
    let craft = |i: usize| {
        let mut name = format!("flood:{i}:").into_bytes();
        let prefix = name.len();
        for nonce in 0u64.. {
            name.truncate(prefix);
            let (mut digits, mut at, mut x) = ([0u8; 16], 16, nonce);
            loop {
                at -= 1;
                digits[at] = b"0123456789abcdef"[(x & 15) as usize];
                x >>= 4;
                if x == 0 {
                    break;
                }
            }
            name.extend_from_slice(&digits[at..]);
            if opt_core::tags::name_hash(&name) & mask == 0 {
                break;
            }
        }
        String::from_utf8(name).unwrap_or_default()
    };
    std::thread::scope(|s| {
        let odd = s.spawn(|| (1..n).step_by(2).map(craft).collect::<Vec<_>>());
        let even: Vec<String> = (0..n).step_by(2).map(craft).collect();
        let odd = odd.join().unwrap_or_default();
        let mut all = Vec::with_capacity(n);
        for (i, name) in even.into_iter().enumerate() {
            all.push(name);
            if let Some(o) = odd.get(i) {
                all.push(o.clone());
            }
        }
        all
    })
}

/// Writes every name with one tag, one command at a time: (total, slowest command).
fn write_all(names: &[String]) -> (Duration, Duration) {
    let server = Server::start();
    let mut c = server.conn();
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    for name in names {
        let t = Instant::now();
        let _: () = redis::cmd("OPT.SET")
            .arg(name)
            .arg("v")
            .arg("TAGS")
            .arg("t")
            .query(&mut c)
            .expect("OPT.SET");
        slowest = slowest.max(t.elapsed());
    }
    (start.elapsed(), slowest)
}

fn main() {
    redis_opt_benches::use_release_module();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let t = Instant::now();
    let crafted = crafted_names(n);
    eprintln!(
        "crafted {n} names with the low {AIMED_BITS} bits of their hash zero in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let ordinary: Vec<String> = (0..n).map(|i| format!("page:{i}")).collect();
    let (o_total, o_max) = write_all(&ordinary);
    let (c_total, c_max) = write_all(&crafted);
    println!("{n} OPT.SET, one at a time, fresh server each");
    println!(
        "ordinary names: {:8.1} ms in all, slowest command {:7.2} ms",
        o_total.as_secs_f64() * 1e3,
        o_max.as_secs_f64() * 1e3
    );
    println!(
        "crafted names:  {:8.1} ms in all, slowest command {:7.2} ms ({:.2}x the ordinary total)",
        c_total.as_secs_f64() * 1e3,
        c_max.as_secs_f64() * 1e3,
        c_total.as_secs_f64() / o_total.as_secs_f64()
    );
}
