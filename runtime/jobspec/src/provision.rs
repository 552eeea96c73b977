//! `provision_data`: Testflinger's polymorphic provisioning section (spec §1.2).
//!
//! There is no type key: the type is inferred by loading the data with each provisioner schema
//! in a fixed order; the first that loads without error wins. The schemas are strict (an
//! unknown key fails that schema), so keys select types and keys of different types conflict.
//! Quirks kept on purpose:
//! * `{}` is `maas` (all of its fields are optional);
//! * `{url}` alone is always `cm3`, so `oem_script` (same schema, later) is never inferred;
//! * a `noprovision` value gains `skip: true` when `skip` is absent.
//!
//! The `phasebox` key is taken out before inference (see [`crate::phasebox`]).

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::error::{Error, ErrorKind};
use crate::fields::{self, Result, invalid_value, unknown_field};
use crate::node::{Entry, Node, join};
use crate::phasebox::PhaseboxBlock;
use crate::spec::{Attachment, parse_attachment};

/// The provisioner types, in Testflinger's inference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvisionType {
    /// `cm3`: `url` (required).
    Cm3,
    /// `maas`: `distro`, `kernel`, `user_data`, `disks`, `ephemeral`, all optional.
    Maas,
    /// `multi`: `jobs` (required, non-empty list of job mappings).
    Multi,
    /// `muxpi`: `url` or `use_attachment`, plus `attachments`, `create_user`, `boot_check_url`, `media`.
    Muxpi,
    /// `noprovision`: `skip` (default `true`).
    #[serde(rename = "noprovision")]
    NoProvision,
    /// `oem_autoinstall`: `url`, `attachments`, `token_file`, `user_data`, ... all optional.
    OemAutoinstall,
    /// `oem_script`: `url` (required). Never inferred in practice: `cm3` has the same schema.
    OemScript,
    /// `control_host_iot_custom`: IoT base fields plus `provision_plan` (required).
    ControlHostIotCustom,
    /// `control_host_iot_preset`: IoT base fields plus `preset` (required).
    ControlHostIotPreset,
    /// `control_host_kvm_autoinstall`: `url`, `robot_tasks` (required), ...
    ControlHostKvmAutoinstall,
    /// `control_host_kvm_generic`: `url`, `robot_tasks`, `live_image`, `wait_until_ssh` (required).
    ControlHostKvmGeneric,
    /// `control_host_kvm_oem_2204`: `alloem_url`, `robot_tasks` (required), ...
    #[serde(rename = "control_host_kvm_oem_2204")]
    ControlHostKvmOem2204,
    /// `control_host_kvm_preset`: `preset` (required), ...
    ControlHostKvmPreset,
}

impl ProvisionType {
    /// All types in inference order.
    pub const ALL: [ProvisionType; 13] = [
        ProvisionType::Cm3,
        ProvisionType::Maas,
        ProvisionType::Multi,
        ProvisionType::Muxpi,
        ProvisionType::NoProvision,
        ProvisionType::OemAutoinstall,
        ProvisionType::OemScript,
        ProvisionType::ControlHostIotCustom,
        ProvisionType::ControlHostIotPreset,
        ProvisionType::ControlHostKvmAutoinstall,
        ProvisionType::ControlHostKvmGeneric,
        ProvisionType::ControlHostKvmOem2204,
        ProvisionType::ControlHostKvmPreset,
    ];

    /// Testflinger's slug for the type (e.g. `control_host_kvm_oem_2204`).
    pub fn slug(self) -> &'static str {
        match self {
            ProvisionType::Cm3 => "cm3",
            ProvisionType::Maas => "maas",
            ProvisionType::Multi => "multi",
            ProvisionType::Muxpi => "muxpi",
            ProvisionType::NoProvision => "noprovision",
            ProvisionType::OemAutoinstall => "oem_autoinstall",
            ProvisionType::OemScript => "oem_script",
            ProvisionType::ControlHostIotCustom => "control_host_iot_custom",
            ProvisionType::ControlHostIotPreset => "control_host_iot_preset",
            ProvisionType::ControlHostKvmAutoinstall => "control_host_kvm_autoinstall",
            ProvisionType::ControlHostKvmGeneric => "control_host_kvm_generic",
            ProvisionType::ControlHostKvmOem2204 => "control_host_kvm_oem_2204",
            ProvisionType::ControlHostKvmPreset => "control_host_kvm_preset",
        }
    }

    fn schema(self) -> &'static [Field] {
        match self {
            ProvisionType::Cm3 | ProvisionType::OemScript => CM3,
            ProvisionType::Maas => MAAS,
            ProvisionType::Multi => MULTI,
            ProvisionType::Muxpi => MUXPI,
            ProvisionType::NoProvision => NOPROVISION,
            ProvisionType::OemAutoinstall => OEM_AUTOINSTALL,
            ProvisionType::ControlHostIotCustom => IOT_CUSTOM,
            ProvisionType::ControlHostIotPreset => IOT_PRESET,
            ProvisionType::ControlHostKvmAutoinstall => KVM_AUTOINSTALL,
            ProvisionType::ControlHostKvmGeneric => KVM_GENERIC,
            ProvisionType::ControlHostKvmOem2204 => KVM_OEM_2204,
            ProvisionType::ControlHostKvmPreset => KVM_PRESET,
        }
    }
}

/// A validated, non-null `provision_data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvisionData {
    /// The inferred provisioner type (not serialised: Testflinger stores no type key).
    #[serde(skip)]
    pub kind: ProvisionType,
    /// The normalised fields of that type (booleans and integers converted, `skip` defaulted),
    /// as Testflinger stores them.
    #[serde(flatten)]
    pub fields: Map<String, Json>,
    /// phasebox additions for the provision phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phasebox: Option<PhaseboxBlock>,
}

impl ProvisionData {
    /// `url`, when present.
    pub fn url(&self) -> Option<&str> {
        self.fields.get("url").and_then(Json::as_str)
    }

    /// `skip` as the agent reads it (Python truthiness); `false` when absent.
    pub fn skip(&self) -> bool {
        self.fields.get("skip").is_some_and(fields::truthy)
    }

    /// The `attachments` list, when the type has one and it is present.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.fields.get("attachments").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Url,
    Email,
    Bool,
    Int,
    Dict,
    OneOf(&'static [&'static str]),
    ListStr,
    ListUrl { min: usize },
    ListDict { min: usize },
    Attachments { max: Option<usize> },
}

struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, required: false }
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, required: true }
}

const ATTACHMENTS: Kind = Kind::Attachments { max: None };

static CM3: &[Field] = &[req("url", Kind::Url)];
static MAAS: &[Field] = &[
    opt("distro", Kind::Str),
    opt("kernel", Kind::Str),
    opt("user_data", Kind::Str),
    opt("disks", Kind::ListDict { min: 0 }),
    opt("ephemeral", Kind::Bool),
];
static MULTI: &[Field] = &[req("jobs", Kind::ListDict { min: 1 })];
static MUXPI: &[Field] = &[
    opt("url", Kind::Url),
    opt("use_attachment", Kind::Str),
    opt("attachments", ATTACHMENTS),
    opt("create_user", Kind::Bool),
    opt("boot_check_url", Kind::Str),
    opt("media", Kind::OneOf(&["sd", "usb"])),
];
static NOPROVISION: &[Field] = &[opt("skip", Kind::Bool)];
static OEM_AUTOINSTALL: &[Field] = &[
    opt("url", Kind::Url),
    opt("attachments", ATTACHMENTS),
    opt("token_file", Kind::Str),
    opt("user_data", Kind::Str),
    opt("redeploy_cfg", Kind::Str),
    opt("authorized_keys", Kind::Str),
    opt("control_host_iso_url", Kind::Str),
    opt("control_host_iso_type", Kind::Str),
    opt("update_user_data", Kind::Bool),
];
static IOT_CUSTOM: &[Field] = &[
    opt("provisioning_timeout", Kind::Int),
    opt("url", Kind::Url),
    opt("urls", Kind::ListUrl { min: 1 }),
    opt("attachments", Kind::Attachments { max: Some(1) }),
    opt("agent_ssh_access", Kind::Bool),
    opt("ubuntu_sso_email", Kind::Email),
    req("provision_plan", Kind::Dict),
];
static IOT_PRESET: &[Field] = &[
    opt("provisioning_timeout", Kind::Int),
    opt("url", Kind::Url),
    opt("urls", Kind::ListUrl { min: 1 }),
    opt("attachments", Kind::Attachments { max: Some(1) }),
    opt("agent_ssh_access", Kind::Bool),
    req("preset", Kind::Str),
    opt("preset_kwargs", Kind::Dict),
];
static KVM_AUTOINSTALL: &[Field] = &[
    opt("provisioning_timeout", Kind::Int),
    req("url", Kind::Url),
    req("robot_tasks", Kind::ListStr),
    opt("robot_retries", Kind::Int),
    opt("autoinstall_storage_layout", Kind::Str),
    opt("ubuntu_sso_email", Kind::Email),
    opt("autoinstall_base_user_data", Kind::Str),
    opt("autoinstall_oem", Kind::Bool),
    opt("cmdline_append", Kind::Str),
];
static KVM_GENERIC: &[Field] = &[
    opt("provisioning_timeout", Kind::Int),
    req("url", Kind::Url),
    req("robot_tasks", Kind::ListStr),
    opt("robot_retries", Kind::Int),
    req("live_image", Kind::Bool),
    req("wait_until_ssh", Kind::Bool),
];
static KVM_OEM_2204: &[Field] = &[
    opt("provisioning_timeout", Kind::Int),
    req("alloem_url", Kind::Url),
    req("robot_tasks", Kind::ListStr),
    opt("robot_retries", Kind::Int),
    opt("url", Kind::Url),
    opt("oem", Kind::Str),
];
static KVM_PRESET: &[Field] = &[
    opt("provisioning_timeout", Kind::Int),
    req("preset", Kind::Str),
    opt("alloem_url", Kind::Url),
    opt("autoinstall_base_user_data", Kind::Str),
    opt("autoinstall_oem", Kind::Bool),
    opt("autoinstall_storage_layout", Kind::Str),
    opt("cmdline_append", Kind::Str),
    opt("live_image", Kind::Bool),
    opt("oem", Kind::Str),
    opt("robot_tasks", Kind::ListStr),
    opt("ubuntu_sso_email", Kind::Email),
    opt("url", Kind::Url),
    opt("wait_until_ssh", Kind::Bool),
];

fn read(kind: Kind, node: &Node, path: &str) -> Result<Json> {
    Ok(match kind {
        Kind::Str => Json::String(fields::string(node, path)?),
        Kind::Url => Json::String(fields::url(node, path)?),
        Kind::Email => Json::String(fields::email(node, path)?),
        Kind::Bool => Json::Bool(fields::boolean(node, path)?),
        Kind::Int => Json::from(fields::integer(node, path)?),
        Kind::Dict => Json::Object(fields::dict(node, path)?),
        Kind::OneOf(choices) => {
            let s = fields::string(node, path)?;
            if !choices.contains(&s.as_str()) {
                return Err(invalid_value(
                    node.loc,
                    path,
                    format!("Must be one of: {} (found {s:?})", choices.join(", ")),
                ));
            }
            Json::String(s)
        }
        Kind::ListStr => Json::Array(fields::list(node, path, fields::string)?.into_iter().map(Json::String).collect()),
        Kind::ListUrl { min } => {
            let items = fields::list(node, path, fields::url)?;
            check_len(node, path, items.len(), min, None)?;
            Json::Array(items.into_iter().map(Json::String).collect())
        }
        Kind::ListDict { min } => {
            let items = fields::list(node, path, |n, p| fields::dict(n, p).map(Json::Object))?;
            check_len(node, path, items.len(), min, None)?;
            Json::Array(items)
        }
        Kind::Attachments { max } => {
            let items = fields::list(node, path, parse_attachment)?;
            check_len(node, path, items.len(), 0, max)?;
            serde_json::to_value(items).expect("attachments serialise")
        }
    })
}

fn check_len(node: &Node, path: &str, len: usize, min: usize, max: Option<usize>) -> Result<()> {
    if len < min {
        return Err(invalid_value(node.loc, path, format!("Shorter than minimum length {min}")));
    }
    if let Some(max) = max.filter(|m| len > *m) {
        return Err(invalid_value(node.loc, path, format!("Longer than maximum length {max}")));
    }
    Ok(())
}

/// Loads `entries` with one schema, as marshmallow would.
fn load(ty: ProvisionType, node: &Node, entries: &[&Entry], path: &str) -> Result<Map<String, Json>> {
    let schema = ty.schema();
    let names: Vec<&str> = schema.iter().map(|f| f.name).collect();
    let mut out = Map::new();
    for e in entries {
        let Some(field) = schema.iter().find(|f| f.name == e.key) else {
            return Err(unknown_field(e, path, &names));
        };
        out.insert(e.key.clone(), read(field.kind, &e.value, &join(path, &e.key))?);
    }
    for f in schema.iter().filter(|f| f.required) {
        if !out.contains_key(f.name) {
            return Err(fields::missing_field(node, path, f.name));
        }
    }
    match ty {
        ProvisionType::Muxpi if !out.contains_key("url") && !out.contains_key("use_attachment") => {
            return Err(invalid_value(node.loc, path, "Either 'url' or 'use_attachment' must be provided"));
        }
        ProvisionType::ControlHostIotCustom | ProvisionType::ControlHostIotPreset => {
            let sources: Vec<&str> = ["url", "urls", "attachments"]
                .into_iter()
                .filter(|k| out.get(*k).is_some_and(fields::truthy))
                .collect();
            if sources.is_empty() {
                return Err(invalid_value(
                    node.loc,
                    path,
                    "One of 'url', 'urls', or a provision attachment must be provided",
                ));
            }
            if sources.len() > 1 {
                return Err(invalid_value(
                    node.loc,
                    path,
                    format!("Provide only one boot image source; got multiple: {}", sources.join(", ")),
                ));
            }
        }
        ProvisionType::NoProvision => {
            out.entry("skip").or_insert(Json::Bool(true));
        }
        _ => {}
    }
    Ok(out)
}

/// Infers the type of a non-null `provision_data` mapping and loads it.
pub(crate) fn parse(node: &Node, path: &str, phasebox: Option<PhaseboxBlock>) -> Result<ProvisionData> {
    let all = fields::map(node, path)?;
    let entries: Vec<&Entry> = all.iter().filter(|e| e.key != "phasebox").collect();
    let mut failures: Vec<(ProvisionType, Error)> = Vec::new();
    for ty in ProvisionType::ALL {
        match load(ty, node, &entries, path) {
            Ok(fields) => {
                return Ok(ProvisionData { kind: ty, fields, phasebox });
            }
            Err(e) => failures.push((ty, e)),
        }
    }
    // No type matched: report the failure of the type that knows the most of the given keys
    // (ties go to the earlier type), so the message points at the real problem.
    let unknown_count =
        |ty: ProvisionType| entries.iter().filter(|e| !ty.schema().iter().any(|f| f.name == e.key)).count();
    let (ty, err) = failures.into_iter().min_by_key(|(ty, _)| unknown_count(*ty)).expect("there are 13 types");
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    let context = if err.kind() == ErrorKind::UnknownField {
        format!(
            "; no provisioner type accepts all of these keys together: {} (closest: {})",
            keys.join(", "),
            ty.slug()
        )
    } else {
        format!("; provision_data matches no provisioner type (closest: {})", ty.slug())
    };
    let message = format!("{}{context}", err.message());
    Err(err.with_message(message))
}
