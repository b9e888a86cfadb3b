//! `tortie-ipam`: a CNI IPAM plugin backed by tortie's block IPAM. Small and quick to start:
//! one datastore connection, one command, exit.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use tortie_cni::config::NetConf;
use tortie_cni::env::CniEnv;
use tortie_cni::ipam_plugin::{Invocation, run};
use tortie_cni::spec::{CniError, Command, VersionInfo, check_version, code};

/// How long the plugin waits for the datastore before telling the runtime to try later.
const DATASTORE_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(code::INTERNAL, "cannot start the runtime").with_details(e.to_string())
        })
        .and_then(|rt| rt.block_on(invoke()));
    match result {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tortie-ipam: {e}");
            println!("{}", serde_json::to_string(&e).unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

async fn invoke() -> Result<Option<serde_json::Value>, CniError> {
    let getenv = |k: &str| std::env::var(k).ok();
    let env = CniEnv::from_lookup(getenv)?;
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| CniError::new(code::IO, "cannot read stdin").with_details(e.to_string()))?;
    if env.command == Command::Version {
        return Ok(Some(
            serde_json::to_value(VersionInfo::current()).unwrap_or_default(),
        ));
    }
    let conf = NetConf::parse(&stdin)?;
    check_version(&conf.cni_version).map_err(|e| e.version(&conf.cni_version))?;
    let version = conf.cni_version.clone();
    let node = conf.node_name(getenv).map_err(|e| e.version(&version))?;
    let url = conf
        .datastore_url(getenv)
        .map_err(|e| e.version(&version))?;
    let url = tortie_store::DatastoreUrl::parse(&url)
        .map_err(|e| CniError::new(code::INVALID_CONFIG, e.to_string()).version(&version))?;
    let store = match tokio::time::timeout(DATASTORE_TIMEOUT, tortie_store::connect(&url)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(CniError::new(code::TRY_AGAIN_LATER, e.to_string()).version(&version));
        }
        Err(_) => {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!("datastore {url} did not answer in time"),
            )
            .version(&version));
        }
    };
    let inv = Invocation { env, conf, node };
    match tokio::time::timeout(DATASTORE_TIMEOUT * 3, run(&inv, store)).await {
        Ok(r) => r.map_err(|e| e.version(&version)),
        Err(_) => Err(
            CniError::new(code::TRY_AGAIN_LATER, "the IPAM operation timed out").version(&version),
        ),
    }
}
