//! Resource commands: apply, create, replace, delete, get, label, validate.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use tortie_api::codec::{Format, encode, from_stored, to_stored};
use tortie_api::{Kind, Resource};
use tortie_selector::Selector;
use tortie_store::{DatastoreUrl, KeyValue, Store, StoreError};

use crate::{DATASTORE_TIMEOUT, manifest, table};

#[derive(Debug, Args)]
pub struct FileArgs {
    /// Manifest files or directories; `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Namespace for namespaced resources that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// Skip resources that already exist instead of failing.
    #[arg(long)]
    pub skip_exists: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// KIND NAME [NAME...]
    pub args: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Do not fail when a resource does not exist.
    #[arg(short = 's', long)]
    pub skip_not_exists: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// KIND [NAME...]
    pub args: Vec<String>,
    /// Show the objects a manifest file names.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only resources whose labels match this Calico selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Output: ps (table, default), wide, yaml or json.
    #[arg(short = 'o', long, default_value = "ps", value_parser = ["ps", "wide", "yaml", "json"])]
    pub output: String,
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    pub kind: String,
    pub name: String,
    /// key=value to set, key- to remove.
    #[arg(required = true)]
    pub labels: Vec<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Allow changing the value of an existing label.
    #[arg(long)]
    pub overwrite: bool,
}

/// How `apply`-family commands write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    Create,
    CreateSkipExists,
    Replace,
}

impl Mode {
    fn verb(self) -> &'static str {
        match self {
            Mode::Apply => "applied",
            Mode::Create | Mode::CreateSkipExists => "created",
            Mode::Replace => "replaced",
        }
    }
}

pub async fn timed<T>(
    what: &str,
    f: impl Future<Output = Result<T, StoreError>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(DATASTORE_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| anyhow!(e)),
        Err(_) => bail!(
            "datastore did not answer within {}s while {what}",
            DATASTORE_TIMEOUT.as_secs()
        ),
    }
}

/// Opens the datastore named by flag/env, failing clearly within the timeout.
pub async fn open_store(flag: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    let url = DatastoreUrl::from_env_or(flag)?;
    let desc = url.to_string();
    timed("connecting", tortie_store::connect(&url))
        .await
        .with_context(|| format!("cannot open datastore {desc}"))
}

/// Decodes a stored key/value into a resource with its resourceVersion.
pub fn from_kv(kv: &KeyValue) -> anyhow::Result<Resource> {
    let v: serde_json::Value = serde_json::from_slice(&kv.value)
        .with_context(|| format!("stored value at {} is not JSON", kv.key))?;
    let mut res = from_stored(v).map_err(|e| anyhow!("stored value at {}: {e}", kv.key))?;
    res.meta_mut().resource_version = Some(kv.mod_revision.to_string());
    Ok(res)
}

fn user_revision(res: &Resource) -> anyhow::Result<Option<i64>> {
    match &res.meta().resource_version {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse::<i64>().map(Some).map_err(|_| {
            anyhow!("field metadata.resourceVersion = {s:?}: not a revision this datastore issued")
        }),
    }
}

/// Fields Calico refuses to change once set.
fn check_immutable(old: &Resource, new: &Resource) -> anyhow::Result<()> {
    if let (Resource::IPPool(o), Resource::IPPool(n)) = (old, new) {
        if o.spec().cidr != n.spec().cidr {
            bail!(
                "field spec.cidr = {:?}: is immutable (currently {:?})",
                n.spec().cidr,
                o.spec().cidr
            );
        }
        if o.spec().block_size != n.spec().block_size {
            bail!(
                "field spec.blockSize = {:?}: is immutable (currently {:?})",
                n.spec().block_size,
                o.spec().block_size
            );
        }
    }
    if let (Resource::Secret(o), Resource::Secret(n)) = (old, new) {
        // Kubernetes: `type` never changes; an `immutable: true` Secret keeps its data and
        // stays immutable.
        if o.body.type_ != n.body.type_ {
            bail!(
                "field type = {:?}: is immutable (currently {:?})",
                n.body.type_,
                o.body.type_
            );
        }
        if o.body.immutable == Some(true)
            && (o.body.data != n.body.data || n.body.immutable != Some(true))
        {
            bail!(
                "field data: the Secret is immutable (immutable: true); delete it and create it again to change it"
            );
        }
    }
    Ok(())
}

fn policy_tier(res: &Resource) -> Option<&str> {
    match res {
        Resource::NetworkPolicy(o) => Some(&o.spec().tier),
        Resource::GlobalNetworkPolicy(o) => Some(&o.spec().tier),
        Resource::StagedNetworkPolicy(o) => Some(&o.spec().0.tier),
        Resource::StagedGlobalNetworkPolicy(o) => Some(&o.spec().0.tier),
        _ => None,
    }
}

async fn check_references(store: &dyn Store, res: &Resource) -> anyhow::Result<()> {
    if let Some(tier) = policy_tier(res)
        && tier != tortie_api::policy::DEFAULT_TIER
        && timed("reading tier", store.get(&Kind::Tier.key(None, tier)))
            .await?
            .is_none()
    {
        bail!("field spec.tier = {tier:?}: tier does not exist; create the Tier first");
    }
    Ok(())
}

/// Makes sure the built-in `default` tier exists, as calico-node does at start-up.
async fn ensure_default_tier(store: &dyn Store) -> anyhow::Result<()> {
    let key = Kind::Tier.key(None, "default");
    if timed("reading tier", store.get(&key)).await?.is_some() {
        return Ok(());
    }
    let text =
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: default\nspec: {}\n";
    let (_, mut tier) = tortie_api::codec::decode("<built-in>", text, "default")
        .pop()
        .ok_or_else(|| anyhow!("built-in tier failed to decode"))?
        .map_err(|e| anyhow!(e))?;
    stamp_new(&mut tier);
    match store.create(&key, &to_stored(&tier)).await {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn stamp_new(res: &mut Resource) {
    let m = res.meta_mut();
    m.uid = Some(uuid::Uuid::new_v4().to_string());
    m.creation_timestamp = Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
}

/// Outcome of writing one resource.
enum Written {
    Done,
    Skipped,
}

async fn write_one(store: &dyn Store, res: &Resource, mode: Mode) -> anyhow::Result<Written> {
    const MAX_ATTEMPTS: usize = 5;
    check_references(store, res).await?;
    let key = res.key();
    let user_rev = user_revision(res)?;
    for _ in 0..MAX_ATTEMPTS {
        let existing = timed("reading", store.get(&key)).await?;
        let mut res = res.clone();
        match (mode, existing) {
            (Mode::Create, Some(_)) => bail!("resource already exists"),
            (Mode::CreateSkipExists, Some(_)) => return Ok(Written::Skipped),
            (Mode::Replace, None) => bail!("resource does not exist"),
            (_, None) => {
                if user_rev.is_some() && mode == Mode::Apply {
                    bail!("resource does not exist (metadata.resourceVersion was given)");
                }
                stamp_new(&mut res);
                match timed("creating", store.create(&key, &to_stored(&res))).await {
                    Ok(_) => return Ok(Written::Done),
                    Err(e) if mode == Mode::Apply && is_exists(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            (_, Some(kv)) => {
                let old = from_kv(&kv)?;
                check_immutable(&old, &res)?;
                let m = res.meta_mut();
                m.uid = old.meta().uid.clone();
                m.creation_timestamp = old.meta().creation_timestamp.clone();
                let expected = user_rev.unwrap_or(kv.mod_revision);
                match timed(
                    "updating",
                    store.update(&key, &to_stored(&res), Some(expected)),
                )
                .await
                {
                    Ok(_) => return Ok(Written::Done),
                    Err(e) if user_rev.is_none() && is_conflict(&e) => continue,
                    Err(e) if is_conflict(&e) => {
                        return Err(e.context("the resource changed since metadata.resourceVersion was read; get it again and retry"));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    bail!("gave up after {MAX_ATTEMPTS} attempts: the resource kept changing underneath")
}

fn is_conflict(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<StoreError>(),
        Some(StoreError::Conflict { .. })
    )
}

fn is_exists(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<StoreError>(),
        Some(StoreError::AlreadyExists { .. })
    )
}

/// Decodes all files; prints every error and returns None if any document is invalid.
fn decode_all(
    files: &[String],
    ns: &str,
) -> anyhow::Result<Option<Vec<(tortie_api::Origin, Resource)>>> {
    let decoded = manifest::read_all(files, ns)?;
    let mut good = Vec::new();
    let mut bad = 0;
    for d in decoded {
        match d {
            Ok(x) => good.push(x),
            Err(e) => {
                eprintln!("error: {e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        if good.is_empty() {
            eprintln!("{bad} invalid document(s); nothing was written");
        } else {
            eprintln!(
                "{bad} invalid document(s); nothing was written (the {} valid document(s) were not applied either)",
                good.len()
            );
        }
        return Ok(None);
    }
    Ok(Some(good))
}

/// `apply`, `create` and `replace`.
pub async fn apply(ds: Option<&str>, args: FileArgs, mode: Mode) -> anyhow::Result<ExitCode> {
    let Some(resources) = decode_all(&args.files, &args.namespace)? else {
        return Ok(ExitCode::FAILURE);
    };
    let store = open_store(ds).await?;
    ensure_default_tier(store.as_ref()).await?;
    let total = resources.len();
    let mut done: Vec<String> = Vec::new();
    for (i, (origin, res)) in resources.iter().enumerate() {
        match write_one(store.as_ref(), res, mode).await {
            Ok(Written::Done) => done.push(format!("{} ({origin})", res.display_id())),
            Ok(Written::Skipped) => {
                done.push(format!("{} ({origin}, already existed)", res.display_id()))
            }
            Err(e) => {
                eprintln!("error: {origin}: {}: {e:#}", res.display_id());
                if !done.is_empty() {
                    eprintln!(
                        "Partial success: {} the first {} out of {total} resources:",
                        mode.verb(),
                        done.len()
                    );
                    for d in &done {
                        eprintln!("  {} {d}", mode.verb());
                    }
                }
                eprintln!("Not {}:", mode.verb());
                for (o, r) in &resources[i..] {
                    eprintln!("  {} ({o})", r.display_id());
                }
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    println!(
        "Successfully {} {total} {}",
        mode.verb(),
        summarize(&resources)
    );
    Ok(ExitCode::SUCCESS)
}

fn summarize(resources: &[(tortie_api::Origin, Resource)]) -> String {
    let first = resources.first().map(|(_, r)| r.kind());
    if resources.iter().all(|(_, r)| Some(r.kind()) == first)
        && let Some(k) = first
    {
        format!("'{k}' resource(s)")
    } else {
        "resource(s)".to_string()
    }
}

/// `validate -f`.
pub fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    match decode_all(&args.files, "default")? {
        Some(r) => {
            println!("Successfully validated {} {}", r.len(), summarize(&r));
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::FAILURE),
    }
}

fn resolve_kind(arg: &str) -> anyhow::Result<Kind> {
    Kind::from_cli(arg).ok_or_else(|| anyhow!("unknown resource kind {arg:?}"))
}

/// `delete`.
pub async fn delete(ds: Option<&str>, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let targets: Vec<(Kind, Option<String>, String)> = if !args.files.is_empty() {
        let Some(res) = decode_all(&args.files, &args.namespace)? else {
            return Ok(ExitCode::FAILURE);
        };
        res.into_iter()
            .map(|(_, r)| {
                (
                    r.kind(),
                    r.namespace().map(str::to_string),
                    r.name().to_string(),
                )
            })
            .collect()
    } else {
        let Some((kind, names)) = args.args.split_first() else {
            bail!("give KIND NAME... or -f FILE");
        };
        let kind = resolve_kind(kind)?;
        if names.is_empty() {
            bail!("give the name(s) of the {kind} to delete");
        }
        let ns = kind.namespaced().then(|| args.namespace.clone());
        names
            .iter()
            .map(|n| (kind, ns.clone(), n.clone()))
            .collect()
    };
    let store = open_store(ds).await?;
    let mut failed = 0;
    let mut deleted = 0;
    for (kind, ns, name) in &targets {
        if *kind == Kind::Tier && name == "default" {
            eprintln!("error: Tier default: the default tier cannot be deleted");
            failed += 1;
            continue;
        }
        let key = kind.key(ns.as_deref(), name);
        match timed("deleting", store.delete(&key, None)).await {
            Ok(_) => deleted += 1,
            Err(e)
                if matches!(
                    e.downcast_ref::<StoreError>(),
                    Some(StoreError::NotFound { .. })
                ) =>
            {
                if !args.skip_not_exists {
                    eprintln!(
                        "error: {kind} {}: resource does not exist",
                        display_name(ns.as_deref(), name)
                    );
                    failed += 1;
                }
            }
            Err(e) => {
                eprintln!("error: {kind} {}: {e:#}", display_name(ns.as_deref(), name));
                failed += 1;
            }
        }
    }
    println!("Successfully deleted {deleted} resource(s)");
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn display_name(ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// `get`.
pub async fn get(ds: Option<&str>, args: GetArgs) -> anyhow::Result<ExitCode> {
    let selector = match &args.selector {
        Some(s) => {
            Some(Selector::parse(s).map_err(|e| anyhow!("-l {s:?}: invalid selector: {e}"))?)
        }
        None => None,
    };
    let store = open_store(ds).await?;
    let mut missing = 0;
    let mut found: Vec<Resource> = Vec::new();
    let (kind, single) = if !args.files.is_empty() {
        let Some(res) = decode_all(&args.files, &args.namespace)? else {
            return Ok(ExitCode::FAILURE);
        };
        let kind = res.first().map(|(_, r)| r.kind());
        for (_, r) in &res {
            match timed("reading", store.get(&r.key())).await? {
                Some(kv) => found.push(from_kv(&kv)?),
                None => {
                    eprintln!("error: {}: resource does not exist", r.display_id());
                    missing += 1;
                }
            }
        }
        (kind, res.len() == 1)
    } else {
        let Some((kind, names)) = args.args.split_first() else {
            bail!("give a KIND to get (e.g. ippools, gnp, networkpolicy) or -f FILE");
        };
        let kind = resolve_kind(kind)?;
        let ns = (kind.namespaced() && !args.all_namespaces).then_some(args.namespace.as_str());
        if names.is_empty() {
            let prefix = match ns {
                Some(ns) => kind.namespace_prefix(ns),
                None => kind.key_prefix(),
            };
            for kv in timed("listing", store.list(&prefix)).await?.items {
                found.push(from_kv(&kv)?);
            }
        } else {
            for n in names {
                match timed("reading", store.get(&kind.key(ns, n))).await? {
                    Some(kv) => found.push(from_kv(&kv)?),
                    None => {
                        eprintln!(
                            "error: {kind} {}: resource does not exist",
                            display_name(ns, n)
                        );
                        missing += 1;
                    }
                }
            }
        }
        (Some(kind), names.len() == 1)
    };
    if let Some(sel) = &selector {
        found.retain(|r| sel.evaluate(&r.meta().labels));
    }
    print_resources(&found, kind, single, &args)?;
    Ok(if missing > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_resources(
    found: &[Resource],
    kind: Option<Kind>,
    single: bool,
    args: &GetArgs,
) -> anyhow::Result<()> {
    let format = match args.output.as_str() {
        "yaml" => Some(Format::Yaml),
        "json" => Some(Format::Json),
        _ => None,
    };
    match format {
        Some(f) if single && found.len() == 1 => print!("{}", encode(found, None, f)),
        Some(f) => {
            let k = kind.unwrap_or(Kind::IPPool);
            print!("{}", encode(found, Some(k), f));
        }
        None => {
            let k = kind.unwrap_or(Kind::IPPool);
            print!(
                "{}",
                table::render(k, found, args.output == "wide", args.all_namespaces)
            );
        }
    }
    Ok(())
}

fn parse_label_changes(items: &[String]) -> anyhow::Result<Vec<(String, Option<String>)>> {
    items
        .iter()
        .map(|item| {
            if let Some(k) = item.strip_suffix('-') {
                Ok((k.to_string(), None))
            } else if let Some((k, v)) = item.split_once('=') {
                Ok((k.to_string(), Some(v.to_string())))
            } else {
                bail!("label {item:?}: expected key=value or key-")
            }
        })
        .collect()
}

/// `label KIND NAME k=v k-`.
pub async fn label(ds: Option<&str>, args: LabelArgs) -> anyhow::Result<ExitCode> {
    const MAX_ATTEMPTS: usize = 5;
    let kind = resolve_kind(&args.kind)?;
    let changes = parse_label_changes(&args.labels)?;
    let store = open_store(ds).await?;
    // `NS/NAME` names a namespaced resource directly (as `tortie lab` prints pods).
    let mut args = args;
    if kind.namespaced()
        && let Some((ns, name)) = args.name.clone().split_once('/')
    {
        args.namespace = ns.to_string();
        args.name = name.to_string();
    }
    let ns = kind.namespaced().then_some(args.namespace.as_str());
    let key = kind.key(ns, &args.name);
    for _ in 0..MAX_ATTEMPTS {
        let Some(kv) = timed("reading", store.get(&key)).await? else {
            bail!(
                "{kind} {}: resource does not exist",
                display_name(ns, &args.name)
            );
        };
        let mut res = from_kv(&kv)?;
        let labels: &mut BTreeMap<String, String> = &mut res.meta_mut().labels;
        for (k, v) in &changes {
            match v {
                None => {
                    if labels.remove(k).is_none() {
                        bail!("label {k:?} is not set on {kind} {}", args.name);
                    }
                }
                Some(v) => {
                    if let Some(old) = labels.get(k)
                        && old != v
                        && !args.overwrite
                    {
                        bail!(
                            "label {k:?} already has value {old:?}; use --overwrite to change it"
                        );
                    }
                    labels.insert(k.clone(), v.clone());
                }
            }
        }
        res.default_and_validate().map_err(|errs| {
            anyhow!(
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        match timed(
            "updating",
            store.update(&key, &to_stored(&res), Some(kv.mod_revision)),
        )
        .await
        {
            Ok(_) => {
                println!("Successfully updated label on {kind} {}", args.name);
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    bail!("gave up after {MAX_ATTEMPTS} attempts: the resource kept changing underneath")
}
