//! `phasebox-plugin-tool`: the three build steps of the non-Rust example plugins that need more
//! than the language's own tool, done with the same Rust crates that `wit-bindgen` and
//! `wasm-tools` are made of, so that a fresh machine compiles one small crate (about half a
//! minute) instead of installing both CLIs (six minutes):
//!
//! ```text
//! phasebox-plugin-tool c-bindings WIT_DIR WORLD OUT_DIR
//!     writes the C bindings of WORLD (what `wit-bindgen c` writes): <world>.h, <world>.c and
//!     <world>_component_type.o, the object that carries the world's type into the core module
//! phasebox-plugin-tool componentize CORE_WASM OUT_WASM
//!     turns a wasm32-wasi (preview1) reactor module into a WASI 0.2 component with the preview1
//!     adapter of wasmtime 48 (what `wasm-tools component new --adapt` does)
//! phasebox-plugin-tool embed-manifest COMPONENT MANIFEST OUT_WASM
//!     appends MANIFEST (phasebox.toml) to COMPONENT as its `phasebox-manifest` custom section,
//!     so the plugin is one file whose sha256 covers what it declares
//! ```
//!
//! Every step is a pure function of its inputs (no timestamps, paths or random numbers reach
//! the output), which is what lets the C example build to the same sha256 every time.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_bindgen_core::wit_parser::Resolve;
use wit_component::ComponentEncoder;

/// The custom section the phasebox host reads a plugin's manifest from (see
/// `runtime/sandbox/src/manifest.rs`).
const MANIFEST_SECTION: &str = "phasebox-manifest";

const USAGE: &str = "usage:
  phasebox-plugin-tool c-bindings WIT_DIR WORLD OUT_DIR
  phasebox-plugin-tool componentize CORE_WASM OUT_WASM
  phasebox-plugin-tool embed-manifest COMPONENT MANIFEST OUT_WASM";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["c-bindings", wit, world, out] => c_bindings(Path::new(wit), world, Path::new(out)),
        ["componentize", core, out] => componentize(Path::new(core), Path::new(out)),
        ["embed-manifest", component, manifest, out] => {
            embed_manifest(Path::new(component), Path::new(manifest), Path::new(out))
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phasebox-plugin-tool: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Generates the C bindings of `world` from the WIT package in `wit`, into `out`.
fn c_bindings(wit: &Path, world: &str, out: &Path) -> Result<()> {
    let mut resolve = Resolve::default();
    let (package, _sources) = resolve.push_path(wit).with_context(|| format!("reading WIT from {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    // The defaults are the CLI's: helpers on, UTF-8 strings, and the component-type object file
    // emitted, so linking `<world>_component_type.o` is all it takes to carry the world's type.
    let mut generator = wit_bindgen_c::Opts::default().build();
    let mut files = wit_bindgen_core::Files::default();
    generator.generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, contents) in files.iter() {
        write(&out.join(name), contents)?;
    }
    Ok(())
}

/// Wraps a preview1 reactor module (with the world's type linked in) into a component.
fn componentize(core: &Path, out: &Path) -> Result<()> {
    let module = read(core)?;
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .context("reading the core module and the component type linked into it")?
        // The reactor adapter: a phase plugin is a library whose `run` the host calls; it has no
        // `main` (the command adapter would require `_start` and export `wasi:cli/run`).
        .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
        .context("loading the preview1 adapter")?
        .encode()
        .context("encoding the component")?;
    write(out, &component)
}

/// Appends `manifest` to `component` as its top-level manifest section.
fn embed_manifest(component: &Path, manifest: &Path, out: &Path) -> Result<()> {
    let bytes = read(component)?;
    let text = std::fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    if !wasmparser::Parser::is_component(&bytes) {
        bail!("{} is not a WebAssembly component", component.display());
    }
    if has_manifest(&bytes).with_context(|| format!("reading {}", component.display()))? {
        bail!("{} already carries a `{MANIFEST_SECTION}` section", component.display());
    }
    let section = wasm_encoder::CustomSection { name: MANIFEST_SECTION.into(), data: text.into_bytes().into() };
    let mut with = bytes;
    wasm_encoder::ComponentSection::append_to_component(&section, &mut with);
    write(out, &with)
}

/// Whether the component's own (top-level) sections include a manifest; sections of nested
/// modules and components do not count, as in the host.
fn has_manifest(bytes: &[u8]) -> Result<bool> {
    use wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(reader) if depth == 0 && reader.name() == MANIFEST_SECTION => return Ok(true),
            _ => {}
        }
    }
    Ok(false)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes through a temporary file and a rename, so a failed step never leaves a half-written
/// output that a later step (or a test) would take for a finished one.
fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp{}", path.display(), std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
