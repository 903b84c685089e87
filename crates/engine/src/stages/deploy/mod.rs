//! The `deploy` kind: put an adapter (a compare stage's pick, a folder, or a registry
//! version) behind a public model name on a running `pipe serve`, or into the serving
//! file `pipe serve --config` starts from. Options: [`pipe_schema::deploy`].
//!
//! On a server, a deploy is: load the adapter under its version name (`assistant-1f2e…`,
//! see [`source::version_name`]); point the public name at it in one step
//! (`PUT /admin/routes/NAME`); then remove older versions of that name, leaving the one
//! the route left loaded when `keep_previous` (the default). Until the route moves, the
//! previous version answers every request; if loading or routing fails, the route is
//! untouched and the stage fails saying what still answers. A deploy whose version the
//! route already names changes nothing, so running it again is harmless.
//!
//! A server is state outside the workspace (restarted, it forgets its routes), so deploy
//! stages always run ([`super::StageKind::reads_external_state`]): an unchanged pipeline
//! still checks the server and repairs a lost route.
//!
//! The out folder holds the release: `adapters/<version>/` (the adapter's files, copied,
//! so the serving file never points at a train out_dir a later run rewrites), `serve.yaml`
//! (the serving file) and `deploy.json` (what was deployed where).

pub mod server;
pub mod source;

use anyhow::Context;
use pipe_schema::FieldError;
use pipe_schema::deploy::{DeployConfig, DeployMode, ServingFile};
use serde_json::Value;
use server::{Server, ServerError};
use std::path::Path;

/// The `deploy` kind.
pub struct Deploy;

impl super::StageKind for Deploy {
    fn name(&self) -> &'static str {
        "deploy"
    }
    fn impl_version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "serve an adapter under a public name on a running pipe serve, or write its serving file"
    }
    fn resolve(&self, with: &Value) -> Result<super::Resolved, FieldError> {
        let config = check(with)?;
        let path = |p: &Path| p.display().to_string();
        Ok(super::Resolved {
            deps: config
                .compare
                .iter()
                .chain(&config.adapter)
                .map(|p| path(p))
                .collect(),
            outs: vec![path(&config.out)],
            config: serde_json::to_value(&config).expect("a deploy config serializes"),
            uses_mlx: false,
        })
    }
    fn with_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<DeployConfig>()
    }
    fn reads_external_state(&self) -> bool {
        true
    }
}

/// Parses and checks a deploy stage's `with:`.
pub fn check(with: &Value) -> Result<DeployConfig, FieldError> {
    let config: DeployConfig = super::parse_with(with)?;
    config.validate()?;
    Ok(config)
}

/// What the server side of a deploy did.
enum Served {
    /// Not asked (`mode: config`).
    NotAsked,
    /// No server answered (`mode: auto`).
    NoServer(String),
    /// The route already named this version.
    Already,
    /// Swapped: what the route named before, and the versions removed.
    Swapped {
        previous: Option<String>,
        retired: Vec<String>,
    },
}

/// Runs a deploy stage.
pub fn run(with: &Value, root: &Path) -> anyhow::Result<()> {
    let config = check(with)?;
    let source = source::find(&config, root)?;
    let version = source::version_name(&config.model, &source.dir)?;
    let out = root.join(&config.out);
    let releases = out.join("adapters");
    let release = releases.join(&version);
    source::copy_release(&source.dir, &release)?;
    let served = match config.mode {
        DeployMode::Config => Served::NotAsked,
        mode => to_server(&config, &version, &release, mode)?,
    };
    // Only this version's files stay: the serving file names no other.
    for entry in fs_err::read_dir(&releases)? {
        let entry = entry?;
        if entry.file_name() != version.as_str() {
            fs_err::remove_dir_all(entry.path())?;
        }
    }
    let file = ServingFile {
        model: config.base.clone(),
        adapters: [(version.clone(), Path::new("adapters").join(&version))].into(),
        routes: [(config.model.clone(), version.clone())].into(),
    };
    let serve_yaml = out.join("serve.yaml");
    let text = format!(
        "# Written by a pipe deploy stage: `{}` answers with {version}.\n\
         # Start a server from it: pipe serve --config {}\n{}",
        config.model,
        config.out.join("serve.yaml").display(),
        serde_yaml::to_string(&file).context("the serving file serializes")?
    );
    crate::atomic_write::write_atomic(&serve_yaml, text.as_bytes())
        .with_context(|| format!("cannot write {}", serve_yaml.display()))?;
    let (mode, previous) = match &served {
        Served::NotAsked | Served::NoServer(_) => ("file", None),
        Served::Already => ("server", Some(version.clone())),
        Served::Swapped { previous, .. } => ("server", previous.clone()),
    };
    super::write_json(
        &out.join("deploy.json"),
        &serde_json::json!({
            "model": config.model,
            "version": version,
            "source": source.describe,
            "deployed_to": mode,
            "server": (mode == "server").then_some(&config.server),
            "previous": previous,
            "serving_file": config.out.join("serve.yaml"),
        }),
    )?;
    let start = format!(
        "pipe serve --config {}",
        config.out.join("serve.yaml").display()
    );
    match served {
        Served::NotAsked => eprintln!(
            "wrote the serving file: `{start}` serves {} as `{}`",
            source.describe, config.model
        ),
        Served::NoServer(why) => eprintln!(
            "{why}: wrote the serving file instead; `{start}` serves {} as `{}`",
            source.describe, config.model
        ),
        Served::Already => eprintln!(
            "`{}` on {} already answers with {version} ({}); nothing changed",
            config.model, config.server, source.describe
        ),
        Served::Swapped { previous, retired } => {
            eprintln!(
                "deployed {} as `{}` on {}: it answers with {version}",
                source.describe, config.model, config.server
            );
            if let Some(p) = previous.filter(|_| config.keep_previous) {
                eprintln!(
                    "  {p}, which answered before, stays loaded (roll back by routing to it)"
                );
            }
            for r in retired {
                eprintln!("  removed the older version {r}");
            }
        }
    }
    Ok(())
}

/// The server side: add the version, move the route, retire older versions.
fn to_server(
    config: &DeployConfig,
    version: &str,
    release: &Path,
    mode: DeployMode,
) -> anyhow::Result<Served> {
    let server = Server::new(&config.server);
    let routes = match server.routes() {
        Ok(r) => r,
        Err(e @ ServerError::Unreachable { .. }) if mode == DeployMode::Auto => {
            return Ok(Served::NoServer(e.to_string()));
        }
        Err(e @ ServerError::Unreachable { .. }) => {
            anyhow::bail!(
                "{e}; start one (pipe serve --config {}) or set `mode: config` to write the \
                 serving file only",
                config.out.join("serve.yaml").display()
            )
        }
        Err(e) => return Err(e.into()),
    };
    let previous = routes.get(&config.model).cloned();
    if previous.as_deref() == Some(version) {
        return Ok(Served::Already);
    }
    let still = match &previous {
        Some(p) => format!("`{}` still answers with {p}", config.model),
        None => format!("`{}` is still not served", config.model),
    };
    let loaded = server.adapters()?;
    let added = !loaded.iter().any(|a| a == version);
    if added {
        let path = std::path::absolute(release)
            .with_context(|| format!("cannot make {} absolute", release.display()))?;
        server
            .add_adapter(version, &path)
            .map_err(|e| anyhow::anyhow!("{e}; {still}"))?;
    }
    if let Err(e) = server.set_route(&config.model, version) {
        // Leave the server as it was: the version nothing routes to goes again.
        if added {
            let _ = server.remove_adapter(version);
        }
        anyhow::bail!("{e}; {still}");
    }
    let mut retired = Vec::new();
    for name in loaded {
        let keep = name == version || (config.keep_previous && Some(&name) == previous.as_ref());
        if keep || !source::is_version_of(&config.model, &name) {
            continue;
        }
        // The deploy itself succeeded; a version that cannot go is only worth a warning.
        match server.remove_adapter(&name) {
            Ok(()) => retired.push(name),
            Err(e) => eprintln!("warning: could not remove the older version {name}: {e}"),
        }
    }
    Ok(Served::Swapped { previous, retired })
}
