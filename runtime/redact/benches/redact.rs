//! Throughput of the streaming redactor against a naive per-chunk
//! find-and-replace, on generated log text with 20 secrets in every encoding.
//!
//! `cargo bench -p phasebox-redact` runs it on ~64 MiB and prints a markdown
//! table. Under `cargo test` (no `--bench` argument) it runs a small smoke
//! version so the test suite stays fast.

use std::hint::black_box;
use std::time::{Duration, Instant};

use phasebox_redact::{Redactor, Secret, encode, encoded_forms, mask_token};

const CHUNK: usize = 64 * 1024;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn secrets() -> Vec<(String, Secret)> {
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_!@#%^&*/+= ";
    let mut out = Vec::new();
    for i in 0..19 {
        let len = 12 + rng.below(36);
        let value: String = (0..len).map(|_| char::from(*rng.pick(alphabet))).collect();
        out.push((format!("SECRET_{i}"), Secret::new(value)));
    }
    // One multi-line value, like an SSH key or a kubeconfig fragment.
    let mut key = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for _ in 0..4 {
        let line: String = (0..64).map(|_| char::from(*rng.pick(&alphabet[..64]))).collect();
        key.push_str(&line);
        key.push('\n');
    }
    key.push_str("-----END OPENSSH PRIVATE KEY-----");
    out.push(("SSH_KEY".to_owned(), Secret::new(key)));
    out
}

/// Log text of about `size` bytes: timestamps, levels, modules, ids, JSON and
/// URLs, with a secret in some encoding on roughly one line in 500. Returns
/// the text and how many secrets were embedded.
fn log_text(size: usize, secrets: &[(String, Secret)]) -> (Vec<u8>, usize) {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let levels = ["INFO", "DEBUG", "WARN", "INFO", "TRACE", "ERROR"];
    let modules =
        ["phasebox::engine", "phasebox::serial", "dut::provision", "net::dhcp", "phase::flash", "phase::boot_test"];
    let messages = [
        "waiting for DUT to reach login prompt",
        "uploaded artifact to https://artifacts.lab.example/jobs/",
        "response {\"status\":\"ok\",\"elapsed_ms\":",
        "kernel: [    3.141592] usb 1-1: new high-speed USB device number",
        "ssh: connected to 10.0.4.17:22 as ubuntu, channel",
        "checksum sha256=",
        "GET /api/v1/devices?id=",
        "phase finished with exit code 0 after",
    ];
    let encodings = phasebox_redact::all_encodings();
    let mut out = Vec::with_capacity(size + 4096);
    let mut embedded = 0;
    let mut seconds = 0u64;
    while out.len() < size {
        seconds += rng.below(3) as u64;
        out.extend_from_slice(
            format!(
                "2025-06-01T12:{:02}:{:02}.{:06}Z {:5} {}: {} {:016x}",
                seconds / 60 % 60,
                seconds % 60,
                rng.below(1_000_000),
                rng.pick(&levels),
                rng.pick(&modules),
                rng.pick(&messages),
                rng.next()
            )
            .as_bytes(),
        );
        if rng.below(500) == 0 {
            let (_, secret) = rng.pick(secrets);
            let encoding = *rng.pick(&encodings);
            let form = encode(secret.expose(), encoding);
            if !form.is_empty() {
                out.extend_from_slice(b" token=");
                out.extend_from_slice(&form);
                embedded += 1;
            }
        }
        out.push(b'\n');
    }
    (out, embedded)
}

/// Wall-clock and on-CPU time of this thread. The CPU time (from
/// `/proc/thread-self/schedstat`, Linux) is what "per core" means when the
/// machine is shared; elsewhere it falls back to wall-clock time.
#[derive(Clone, Copy)]
struct Timer {
    wall: Instant,
    cpu: Option<Duration>,
}

#[derive(Clone, Copy)]
struct Elapsed {
    wall: Duration,
    cpu: Duration,
}

fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

impl Timer {
    fn start() -> Self {
        Self { wall: Instant::now(), cpu: thread_cpu_time() }
    }

    fn elapsed(self) -> Elapsed {
        let wall = self.wall.elapsed();
        let cpu = match (self.cpu, thread_cpu_time()) {
            (Some(start), Some(end)) => end.saturating_sub(start),
            _ => wall,
        };
        Elapsed { wall, cpu }
    }
}

/// Text the skip filter likes least: hex dumps and base64 blobs, in the same
/// alphabets as most encoded forms, with an encoded secret now and then.
fn encoded_text(size: usize, secrets: &[(String, Secret)]) -> Vec<u8> {
    let mut rng = Rng(0x0bad_5eed_0000_0001);
    let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let encodings = phasebox_redact::all_encodings();
    let mut out = Vec::with_capacity(size + 4096);
    while out.len() < size {
        if rng.below(2) == 0 {
            out.extend_from_slice(format!("{:08x}: ", out.len()).as_bytes());
            for _ in 0..16 {
                out.extend_from_slice(format!("{:02x} ", rng.below(256)).as_bytes());
            }
        } else {
            for _ in 0..76 {
                out.push(*rng.pick(b64));
            }
        }
        if rng.below(200) == 0 {
            let (_, secret) = rng.pick(secrets);
            out.extend(encode(secret.expose(), *rng.pick(&encodings)));
        }
        out.push(b'\n');
    }
    out
}

/// Adversarial text: every piece is a secret's encoded form minus its last
/// byte, so the skip filter proposes a candidate nearly everywhere and every
/// check fails late. This is where the automaton takes over.
fn near_miss_text(size: usize, patterns: &[(String, String)]) -> Vec<u8> {
    let mut rng = Rng(0x0dd_ba11_0000_0002);
    let mut out = Vec::with_capacity(size + 4096);
    while out.len() < size {
        let (pattern, _) = rng.pick(patterns);
        out.extend_from_slice(&pattern.as_bytes()[..pattern.len() - 1]);
    }
    out
}

fn streaming(redactor: &Redactor, text: &[u8], chunk: usize) -> (Elapsed, Vec<u8>) {
    let mut out = Vec::with_capacity(text.len());
    let start = Timer::start();
    let mut stream = redactor.stream();
    let mut buf = Vec::with_capacity(chunk * 2);
    for piece in text.chunks(chunk) {
        buf.clear();
        stream.push_into(black_box(piece), &mut buf);
        out.extend_from_slice(&buf);
    }
    stream.finish_into(&mut out);
    (start.elapsed(), out)
}

fn naive(patterns: &[(String, String)], text: &[u8], chunk: usize) -> (Elapsed, Vec<u8>) {
    let mut out = Vec::with_capacity(text.len());
    let start = Timer::start();
    for piece in text.chunks(chunk) {
        let mut s = String::from_utf8_lossy(black_box(piece)).into_owned();
        for (pattern, token) in patterns {
            if s.contains(pattern.as_str()) {
                s = s.replace(pattern.as_str(), token);
            }
        }
        out.extend_from_slice(s.as_bytes());
    }
    (start.elapsed(), out)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full { 64 << 20 } else { 1 << 20 };

    let secrets = secrets();
    let redactor = Redactor::new(secrets.iter().map(|(n, s)| (n.as_str(), s))).expect("secrets");
    let (text, embedded) = log_text(size, &secrets);
    let tokens: Vec<String> = secrets.iter().map(|(_, s)| mask_token(s)).collect();
    // Longest first, as a careful naive implementation would do.
    let mut patterns: Vec<(String, String)> = Vec::new();
    for ((_, secret), token) in secrets.iter().zip(&tokens) {
        for form in &encoded_forms(secret) {
            let p = String::from_utf8(form.bytes().to_vec()).expect("patterns are UTF-8");
            patterns.push((p, token.clone()));
        }
    }
    patterns.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));

    let rate = |bytes: usize, d: Duration| {
        if d.is_zero() { "-".to_owned() } else { format!("{:.0}", bytes as f64 / 1e6 / d.as_secs_f64()) }
    };
    let mb = |d: Duration| rate(text.len(), d);

    // The mean of a few runs after a warm-up (one run under `cargo test`):
    // the CPU-time clock ticks coarsely, so short runs are summed.
    let runs: u32 = if full { 5 } else { 1 };
    let best = |f: &dyn Fn() -> (Elapsed, Vec<u8>)| {
        let (first, out) = f();
        if runs == 1 {
            return (first, out);
        }
        let mut total = Elapsed { wall: Duration::ZERO, cpu: Duration::ZERO };
        for _ in 0..runs {
            let (e, _) = f();
            total.wall += e.wall;
            total.cpu += e.cpu;
        }
        (Elapsed { wall: total.wall / runs, cpu: total.cpu / runs }, out)
    };
    let (t64k, out64k) = best(&|| streaming(&redactor, &text, CHUNK));
    let (t4k, out4k) = best(&|| streaming(&redactor, &text, 4096));
    let (tone, outone) = best(&|| {
        let start = Timer::start();
        let out = redactor.redact_bytes(black_box(&text));
        (start.elapsed(), out)
    });
    assert_eq!(out64k, outone, "streaming differs from one-shot");
    assert_eq!(out4k, outone, "streaming differs from one-shot");
    let (tnaive, outnaive) = naive(&patterns, &text, CHUNK);
    let dense = encoded_text(text.len() / 4, &secrets);
    let (tdense, outdense) = best(&|| streaming(&redactor, &dense, CHUNK));
    assert_eq!(outdense, redactor.redact_bytes(&dense));
    let adversarial = near_miss_text(text.len() / 4, &patterns);
    let (tadv, outadv) = best(&|| streaming(&redactor, &adversarial, CHUNK));
    assert_eq!(outadv, redactor.redact_bytes(&adversarial));

    // Tokens written, and secret forms the redactor still finds in the output
    // (should be 0; the naive version misses secrets cut by a chunk boundary).
    let tally = |out: &[u8]| {
        let tokens_in = |b: &[u8]| -> usize { tokens.iter().map(|t| count(b, t.as_bytes())).sum() };
        let written = tokens_in(out);
        let left = tokens_in(&redactor.redact_bytes(out)) - written;
        (written, left)
    };

    println!(
        "{} secrets, {} patterns (longest {} bytes), {:.1} MiB of log text in {} lines, \
         {} secrets embedded\n",
        redactor.secret_count(),
        redactor.pattern_count(),
        redactor.hold_back() + 1,
        text.len() as f64 / f64::from(1 << 20),
        count(&text, b"\n"),
        embedded
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cores} cores, load average {}; times are the mean of {runs} runs\n",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "| implementation | wall time | CPU time | MB/s per core (CPU) | MB/s (wall) | tokens written | secrets left |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let rows = [
        ("`StreamRedactor`, 64 KiB chunks", t64k, &out64k),
        ("`StreamRedactor`, 4 KiB chunks", t4k, &out4k),
        ("`Redactor::redact_bytes`, one shot", tone, &outone),
        ("naive: `String::replace` of each pattern on each 64 KiB chunk (one run)", tnaive, &outnaive),
    ];
    for (name, e, out) in rows {
        let (written, left) = tally(out);
        println!(
            "| {name} | {:.3} s | {:.3} s | {} | {} | {written} | {left} |",
            e.wall.as_secs_f64(),
            e.cpu.as_secs_f64(),
            mb(e.cpu),
            mb(e.wall),
        );
    }
    let extra = [
        ("hex dumps and base64 blobs (text that looks like the encodings)", &dense, tdense, &outdense),
        ("near misses: encoded secrets cut short by one byte, back to back (adversarial)", &adversarial, tadv, &outadv),
    ];
    for (what, input, e, out) in extra {
        let (written, left) = tally(out);
        println!(
            "| `StreamRedactor`, 64 KiB chunks, {:.0} MiB of {what} | {:.3} s | {:.3} s | {} | {} | {written} | {left} |",
            input.len() as f64 / f64::from(1 << 20),
            e.wall.as_secs_f64(),
            e.cpu.as_secs_f64(),
            rate(input.len(), e.cpu),
            rate(input.len(), e.wall),
        );
    }
}
