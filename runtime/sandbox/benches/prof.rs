//! Temporary profiling harness (to be deleted).
use phasebox_sandbox::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn main() {
    let pooling = std::env::var("POOL").map(|v| v == "1").unwrap_or(true);
    let plugin_name = std::env::var("PLUGIN").unwrap_or_else(|_| "probe".into());
    let data = std::env::var("DATA").unwrap_or_else(|_| r#"{"attack":"args"}"#.into());
    let n: usize = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(20000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    phasebox_guests::build().unwrap();
    let cache = phasebox_guests::out_dir().join("../phasebox-prof-cache");
    let sandbox = Sandbox::new(EngineConfig { pooling, cache_dir: Some(cache), ..EngineConfig::default() }).unwrap();
    let plugin = sandbox.load_file(&phasebox_guests::path(&plugin_name)).unwrap();
    let limits =
        Limits { timeout: Duration::from_secs(120), output_timeout: Duration::from_secs(60), ..Limits::default() };
    let policy = Policy { allow: Capabilities::everything(), limits, ..Policy::default() };
    let grant = Grant::resolve(
        "test",
        &plugin.manifest().capabilities,
        &policy,
        &GrantRequest::default(),
        std::path::Path::new("."),
    )
    .unwrap();
    let input = PhaseInput { phase: "test".into(), job_id: "j".into(), data_json: data, dut: vec![] };
    rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..n {
            let (tx, mut rx) = channel();
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let t = Instant::now();
            let r = sandbox
                .run_phase(&plugin, &grant, &input, &BTreeMap::new(), tx, CancellationToken::new())
                .await
                .unwrap();
            v.push(t.elapsed());
            assert!(r.end.passed(), "{}", r.end);
            drain.await.unwrap();
        }
        v.sort();
        eprintln!("p50 {:?} p99 {:?}", v[v.len() / 2], v[v.len() * 99 / 100]);
    });
}
