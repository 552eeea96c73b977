//! The host side of the `phase` world (`wit/phase.wit`): the one `bindgen!` of the crate. Every
//! interface's `Host` trait, the guest's `run` export and the resource types the device
//! handles implement come from here; the capability modules implement them.

wasmtime::component::bindgen!({
    world: "phase",
    path: "../../wit",
    imports: { default: async },
    exports: { default: async },
    with: {
        "phasebox:plugin/console.session": crate::device::ConsoleSession,
        "phasebox:plugin/exec.process": crate::device::ExecProcess,
        "phasebox:plugin/flash.writer": crate::device::FlashWriter,
    },
});
