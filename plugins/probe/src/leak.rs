//! The `leak-secret` attack: every way a plugin might slip a secret past the redactor.

use std::io::{self, Write};

use phasebox_plugin_sdk as sdk;

/// Reads the secret `name` and writes it, never whole in one piece of one channel:
///
/// 1. half on stdout, half on stderr;
/// 2. half on stdout, half in a log line;
/// 3. split on stdout around a write to stderr;
/// 4. on stdout with SGR escapes inside it (`s3cr\x1b[0met`, which a terminal shows whole);
/// 5. in a log line, with an SGR escape and a zero-width space inside it;
/// 6. into an artifact under `artifacts` named after it, holding it in its content (whole,
///    and split across the 64 KiB boundary a reader is likely to use);
/// 7. as the target of a symlink there.
///
/// Returns what it wrote, never the value.
pub fn leak_secret(name: &str, artifacts: &str) -> Result<String, String> {
    let value = sdk::secret(name)?;
    let chars: Vec<char> = value.chars().collect();
    let half = chars.len() / 2;
    let (first, second): (String, String) = (chars[..half].iter().collect(), chars[half..].iter().collect());
    let mut stdout = io::stdout().lock();
    let mut stderr = io::stderr().lock();
    let mut out = |text: &str| stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
    let mut err = |text: &str| stderr.write_all(text.as_bytes()).and_then(|()| stderr.flush());
    let io_err = |e: io::Error| e.to_string();

    out(&format!("split-streams: {first}")).map_err(io_err)?;
    err(&format!("{second}\n")).map_err(io_err)?;
    out(&format!("split-log: {first}")).map_err(io_err)?;
    sdk::log::info(&format!("{second} <- end of the split"));
    out(&format!("\nsplit-stdout: {first}")).map_err(io_err)?;
    err("(interleaved on stderr)\n").map_err(io_err)?;
    out(&format!("{second}\n")).map_err(io_err)?;
    out(&format!("coloured: \x1b[1m{first}\x1b[0m{second}\x1b[0m\n")).map_err(io_err)?;
    sdk::log::warn(&format!("coloured log: {first}\x1b[31m\u{200b}{second}\x1b[0m"));

    let named = format!("{artifacts}/{value}.txt");
    std::fs::write(&named, format!("token={value}\n")).map_err(|e| format!("write the named artifact: {e}"))?;
    let mut big = vec![b'.'; 64 * 1024 - half];
    big.extend_from_slice(value.as_bytes());
    big.extend_from_slice(b"\nend\n");
    std::fs::write(format!("{artifacts}/big.log"), &big).map_err(|e| format!("write big.log: {e}"))?;
    let link = format!("{artifacts}/link-{first}");
    crate::make_symlink(&format!("{value}.txt"), &link).map_err(|e| format!("symlink: {e}"))?;
    Ok(format!("wrote a {}-character secret in 7 ways", chars.len()))
}
