//! `optctl top`: a live full-screen view of the server, refreshed every second.
//!
//! Plain ANSI escapes and raw terminal input (termios), so it works over ssh with no
//! dependency; `q` quits. When stdout is not a terminal it prints one block per refresh and
//! scrolls, so it can be logged or piped.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;
use opt_core::report::HotKeysReport;

use crate::table::{bar, human, printable};
use crate::{cluster, conn, Cli, CtlError};

/// Options of `optctl top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1)]
    pub interval: u64,
    /// Stop after this many refreshes.
    #[arg(long, value_name = "N")]
    pub times: Option<u64>,
}

/// The terminal settings to restore on exit (also from the SIGINT handler).
static mut SAVED: Option<libc::termios> = None;

extern "C" fn restore_and_exit(_: libc::c_int) {
    // SAFETY: tcsetattr and write are async-signal-safe; SAVED was set before the handler.
    unsafe {
        restore();
        libc::_exit(130);
    }
}

/// Puts the saved terminal settings back and leaves the alternate screen.
///
/// # Safety
/// Only async-signal-safe calls; reads `SAVED`, which is written once before any handler runs.
unsafe fn restore() {
    if let Some(t) = *std::ptr::addr_of!(SAVED) {
        libc::tcsetattr(0, libc::TCSANOW, &t);
    }
    let show = b"\x1b[?25h\x1b[?1049l";
    libc::write(1, show.as_ptr().cast(), show.len());
}

/// Raw input (no line buffering, no echo) on a terminal; returns whether it was set.
fn raw_mode() -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    // SAFETY: termios calls on fd 0, which is a terminal; the handler restores it on Ctrl-C.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return false;
        }
        *std::ptr::addr_of_mut!(SAVED) = Some(t);
        t.c_lflag &= !(libc::ICANON | libc::ECHO);
        t.c_cc[libc::VMIN] = 0;
        t.c_cc[libc::VTIME] = 0;
        libc::tcsetattr(0, libc::TCSANOW, &t);
    }
    true
}

/// Restores the terminal on Ctrl-C and SIGTERM, since the process then exits from the handler.
fn restore_on_signal() {
    let handler = restore_and_exit as extern "C" fn(libc::c_int);
    // SAFETY: the handler only calls async-signal-safe functions (tcsetattr, write, _exit).
    unsafe {
        libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as *const () as libc::sighandler_t);
    }
}

/// Waits up to `timeout` for a key; true if it was `q`.
fn quit_pressed(timeout: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polling and reading fd 0 into a local buffer.
    unsafe {
        if libc::poll(&mut fds, 1, timeout.as_millis() as libc::c_int) > 0 {
            let mut b = [0u8; 16];
            let n = libc::read(0, b.as_mut_ptr().cast(), b.len());
            return n > 0 && b[..n as usize].iter().any(|&c| c == b'q' || c == b'Q');
        }
    }
    false
}

struct Sample {
    at: Instant,
    info: HashMap<String, f64>,
}

fn sample(con: &mut redis::Connection, cli: &Cli) -> Result<Sample, CtlError> {
    // The default sections and the module's, for its count of its analyses' lookups.
    let text: String = redis::cmd("INFO")
        .arg("default")
        .arg("opt")
        .query(con)
        .map_err(|e| conn::command_error(cli, "INFO", &e))?;
    let info = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| v.trim().parse::<f64>().ok().map(|v| (k.to_string(), v)))
        .collect();
    Ok(Sample {
        at: Instant::now(),
        info,
    })
}

/// One screen.
fn screen(
    prev: &Sample,
    now: &Sample,
    keys: Option<&HotKeysReport>,
    patterns: Option<&HotKeysReport>,
    url: &str,
) -> String {
    let g = |s: &Sample, k: &str| s.info.get(k).copied().unwrap_or(0.0);
    let secs = now.at.duration_since(prev.at).as_secs_f64().max(0.001);
    let rate = |k: &str| (g(now, k) - g(prev, k)).max(0.0) / secs;
    // Clients' hits and misses: the module's analyses count lookups too (INFO opt).
    let (dh, dm) = (
        (rate("keyspace_hits") - rate("opt_keyspace_lookup_hits")).max(0.0),
        (rate("keyspace_misses") - rate("opt_keyspace_lookup_misses")).max(0.0),
    );
    let hit = if dh + dm > 0.0 { dh / (dh + dm) } else { 1.0 };
    let used = g(now, "used_memory");
    let max = g(now, "maxmemory");
    let mut out = format!(
        "optctl top  {url}   (q to quit)\n\n\
         ops/s {:>10}   hit ratio {:>5.1}%   clients {:>6}\n\
         memory {:>9}{}\n\
         evictions/s {:>6}   expirations/s {:>6}\n",
        human(g(now, "instantaneous_ops_per_sec")),
        hit * 100.0,
        g(now, "connected_clients"),
        human(used),
        if max > 0.0 {
            format!(
                " of {} {} {:.0}%",
                human(max),
                bar(used / max, 20),
                used / max * 100.0
            )
        } else {
            " (no maxmemory)".to_string()
        },
        human(rate("evicted_keys")),
        human(rate("expired_keys")),
    );
    for (title, r) in [
        ("hottest keys now", keys),
        ("hottest patterns now", patterns),
    ] {
        out.push_str(&format!("\n{title}\n"));
        // Only entries whose guaranteed count (count - error) is above the detection floor,
        // i.e. certainly hotter than any key not tracked. The others are Space-Saving's
        // overestimates of cold keys under uniform traffic and would list noise as hot.
        let sure: Vec<_> = r
            .map(|r| {
                r.entries
                    .iter()
                    .filter(|e| e.count.saturating_sub(e.error) > r.detection_floor)
                    .take(8)
                    .collect()
            })
            .unwrap_or_default();
        match r {
            Some(_) if !sure.is_empty() => {
                for e in sure {
                    out.push_str(&format!(
                        "  {:>8} ops/s  {} {:>5.1}%  {}{}\n",
                        human(e.ops_per_sec),
                        bar(e.share, 15),
                        e.share * 100.0,
                        printable(&e.name),
                        e.node
                            .as_ref()
                            .map_or(String::new(), |n| format!("  ({n})"))
                    ));
                }
            }
            _ => out.push_str("  (no key stands out yet)\n"),
        }
    }
    out
}

/// Runs `optctl top`.
pub fn run(cli: &Cli, args: &TopArgs) -> Result<(), CtlError> {
    let mut con = conn::connect(cli)?;
    let tty = std::io::stdout().is_terminal();
    let raw = tty && raw_mode();
    if tty {
        restore_on_signal();
        // Alternate screen, hidden cursor.
        print!("\x1b[?1049h\x1b[?25l");
    }
    let url = conn::redacted(&cli.url);
    let recent = |ns: bool| {
        let mut a = vec![
            "COUNT".to_string(),
            "8".to_string(),
            "WINDOW".into(),
            "recent".into(),
        ];
        if ns {
            a.push("NAMESPACES".into());
        }
        a
    };
    let nodes = cluster::primaries(cli, &mut con)?;
    let url = match &nodes {
        Some(n) => format!("cluster of {} primaries via {url}", n.len()),
        None => url,
    };
    // One sample: of the server, or the sum over the primaries (rates, memory, clients add
    // up; the hit ratio comes from the summed hits and misses).
    let take = |con: &mut redis::Connection| -> Result<Sample, CtlError> {
        let Some(nodes) = &nodes else {
            return sample(con, cli);
        };
        let (samples, _) = cluster::answered(cluster::ask_each(cli, nodes, |c| sample(c, cli)))?;
        let mut info: HashMap<String, f64> = HashMap::new();
        for (_, s) in samples {
            for (k, v) in s.info {
                *info.entry(k).or_default() += v;
            }
        }
        Ok(Sample {
            at: Instant::now(),
            info,
        })
    };
    // The hottest keys of the primaries and their replicas (the reads clients send those).
    let replicas = match &nodes {
        Some(n) => cluster::replicas(cli, &mut con, n).unwrap_or_default(),
        None => Vec::new(),
    };
    let hot = |con: &mut redis::Connection, ns: bool| -> Option<HotKeysReport> {
        crate::hotkeys::fetch(cli, con, nodes.as_deref(), &replicas, &recent(ns), 8)
            .ok()
            .map(|(r, _)| r)
    };
    let mut prev = take(&mut con)?;
    let interval = Duration::from_secs(args.interval.max(1));
    let mut shown = 0u64;
    let result = loop {
        let quit = if raw {
            quit_pressed(interval)
        } else {
            std::thread::sleep(interval);
            false
        };
        if quit {
            break Ok(());
        }
        let now = match take(&mut con) {
            Ok(s) => s,
            Err(e) => break Err(e),
        };
        let keys = hot(&mut con, false);
        let patterns = hot(&mut con, true);
        let page = screen(&prev, &now, keys.as_ref(), patterns.as_ref(), &url);
        if tty {
            print!("\x1b[H\x1b[2J{page}");
        } else {
            println!("{page}");
        }
        let _ = std::io::stdout().flush();
        prev = now;
        shown += 1;
        if args.times.is_some_and(|t| shown >= t) {
            break Ok(());
        }
    };
    if tty {
        // SAFETY: restores the terminal saved by raw_mode (if any) and the normal screen.
        unsafe { restore() };
    }
    result
}
