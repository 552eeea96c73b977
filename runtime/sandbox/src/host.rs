//! The per-phase store state and the host side of phasebox's own interfaces (`log`,
//! `secrets`, `results`), plus the DNS check that stands in front of `wasi:sockets`'
//! name lookup.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use phasebox_redact::Secret;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::{Phase, phasebox};
use crate::events::{self as ev, CapabilityUse, EventSender, PhaseEvent};
use crate::http::HttpHooks;
use crate::limits::{MemoryLimiter, Monitor};
use crate::network::NetworkPolicy;

/// Everything one phase's store holds. Fields are private to the crate: a phase's state is
/// built from its grant and cannot be widened from outside.
pub(crate) struct PhaseState {
    pub(crate) wasi: WasiCtx,
    /// The phase's mounts, opened when it started; `get-directories` hands them out.
    pub(crate) preopens: Vec<(wasmtime_wasi::filesystem::Dir, String)>,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: HttpHooks,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) monitor: Arc<Monitor>,
    pub(crate) events: EventSender,
    pub(crate) secrets: BTreeMap<String, Secret>,
    pub(crate) network: Arc<NetworkPolicy>,
    /// The job's device under test, when the phase has one.
    pub(crate) device: Option<Arc<dyn crate::device::Dut>>,
    /// Held for the store's lifetime when the pooling allocator is in use, so phases wait for
    /// a free slot instead of failing when the pool is full.
    pub(crate) _pool_slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The phase's handle limit, reserved from the process's budget for the store's lifetime.
    pub(crate) _handles_reserved: tokio::sync::OwnedSemaphorePermit,
}

impl WasiView for PhaseState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for PhaseState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Grants the secret names the phase declares: each allowed by the manifest and the policy
/// (`*` allows any). Which of them the job provides is decided when the phase starts.
pub(crate) fn grant_secrets(
    docs: &crate::grant::Documents<'_>,
    names: &[String],
) -> Result<std::collections::BTreeSet<String>, crate::error::SandboxError> {
    for name in names {
        docs.require(|| format!("secret {name}"), |d| d.allows_secret(name))?;
    }
    Ok(names.iter().cloned().collect())
}

/// Reports an event the host makes on the guest's behalf (a result, a capability use), counted
/// against the phase's output limit: one past it is dropped, and the phase stops. Takes the
/// sender and monitor by value so no borrow of the store state is held across the await (the
/// state is `Send` but not `Sync`).
pub(crate) async fn report(events: EventSender, monitor: Arc<Monitor>, event: PhaseEvent) {
    if monitor.admit(&event) {
        let _ = events.send(event).await;
    }
}

/// Records a capability use. The returned future holds no borrow of the state.
pub(crate) fn record(
    state: &PhaseState,
    grant: &str,
    call: String,
    denied: Option<String>,
) -> impl Future<Output = ()> + Send + 'static {
    let event = PhaseEvent::Capability(CapabilityUse {
        grant: grant.into(),
        call,
        allowed: denied.is_none(),
        reason: denied,
        duration_ms: None,
    });
    report(state.events.clone(), state.monitor.clone(), event)
}

impl phasebox::plugin::types::Host for PhaseState {}

impl phasebox::plugin::log::Host for PhaseState {
    async fn log(&mut self, level: phasebox::plugin::log::Level, message: String) {
        use phasebox::plugin::log::Level;
        let level = match level {
            Level::Trace => ev::LogLevel::Trace,
            Level::Debug => ev::LogLevel::Debug,
            Level::Info => ev::LogLevel::Info,
            Level::Warn => ev::LogLevel::Warn,
            Level::Error => ev::LogLevel::Error,
        };
        // Log lines count as output: they show the phase is alive and share its output limit.
        let keep = self.monitor.output(message.len());
        if keep == 0 {
            return;
        }
        let mut message = message;
        if keep < message.len() {
            let mut cut = keep;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let _ = self.events.send(PhaseEvent::Log { level, message, at: SystemTime::now() }).await;
    }
}

impl phasebox::plugin::secrets::Host for PhaseState {
    async fn get(&mut self, name: String) -> Result<String, phasebox::plugin::secrets::Error> {
        // One answer for "not declared" and "declared but not provided": a plugin must not be
        // able to learn which secrets exist.
        match self.secrets.get(&name) {
            Some(secret) => {
                let value = secret.expose().to_owned();
                record(self, "secrets", format!("get {name}"), None).await;
                Ok(value)
            }
            None => {
                record(self, "secrets", format!("get {name}"), Some("not granted to this phase".into())).await;
                Err(phasebox::plugin::secrets::Error::NotGranted(name))
            }
        }
    }
}

impl phasebox::plugin::results::Host for PhaseState {
    async fn report_case(&mut self, case: phasebox::plugin::results::TestCase) {
        use phasebox::plugin::results::Status;
        self.monitor.touch();
        let status = match case.status {
            Status::Pass => ev::CaseStatus::Pass,
            Status::Fail => ev::CaseStatus::Fail,
            Status::Skip => ev::CaseStatus::Skip,
            Status::Error => ev::CaseStatus::Error,
        };
        let case = ev::TestCase {
            suite: case.suite,
            name: case.name,
            status,
            duration_ms: case.duration_ms,
            message: case.message,
        };
        report(self.events.clone(), self.monitor.clone(), PhaseEvent::Case(case)).await;
    }

    async fn report_measurement(&mut self, m: phasebox::plugin::results::Measurement) {
        self.monitor.touch();
        let m = ev::Measurement { name: m.name, value: m.value, unit: m.unit };
        report(self.events.clone(), self.monitor.clone(), PhaseEvent::Measurement(m)).await;
    }
}

/// Links every interface phasebox provides into `linker`: WASI p2, wasi-http, and phasebox's
/// own. Which of them a plugin may import is decided per phase, before instantiation, by
/// comparing the component's imports with its grant.
pub(crate) fn link(linker: &mut Linker<PhaseState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    Phase::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |s| s)?;
    crate::files::link(linker)?;
    link_dns_check(linker)?;
    crate::http::link_http_accounting(linker)
}

/// Stands in front of `wasi:sockets/ip-name-lookup.resolve-addresses`: WASI's own switch
/// allows every name or none, while a phase may resolve only the names its grant covers. The
/// addresses a granted name resolves to are remembered, so connecting to them counts as
/// connecting to the name.
fn link_dns_check(linker: &mut Linker<PhaseState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{Host, ResolveAddressStream};
    use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, Network};
    use wasmtime_wasi::sockets::WasiSocketsView;

    linker.allow_shadowing(true);
    let mut instance = linker.instance("wasi:sockets/ip-name-lookup@0.2.12")?;
    instance.func_wrap_async("resolve-addresses", |mut store, (network, name): (Resource<Network>, String)| {
        Box::new(async move {
            let state = store.data_mut();
            if !state.network.may_resolve(&name) {
                let denial = Some("no dns or network grant names it".into());
                record(state, "dns", format!("resolve {name}"), denial).await;
                return Ok((Err::<Resource<ResolveAddressStream>, _>(ErrorCode::AccessDenied),));
            }
            record(state, "dns", format!("resolve {name}"), None).await;
            if let Ok(addrs) = tokio::net::lookup_host((name.as_str(), 0)).await {
                state.network.remember(&name, addrs.map(|a| a.ip()));
            }
            let mut view = state.sockets();
            match Host::resolve_addresses(&mut view, network, name) {
                Ok(stream) => Ok((Ok(stream),)),
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        })
    })?;
    linker.allow_shadowing(false);
    Ok(())
}
