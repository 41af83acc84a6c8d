//! Building a checkout's Dockerfile on the Docker engine, streaming every output line.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures::StreamExt;
use hermes_schemas::LogStream;

use crate::logs::LogSink;

/// Label on every image Hermes builds: `<runner>/<build>`. One label, since the engine's classic
/// builder adds a layer (and a container) for each.
pub const LABEL: &str = "io.hermes-ci.build";

/// How a Dockerfile build ended.
#[derive(Debug)]
pub enum BuildOutcome {
    /// The image was built.
    Built,
    /// A step of the Dockerfile failed; the message is Docker's.
    StepFailed(String),
    /// The engine could not be used.
    EngineError(String),
}

/// A tar archive of `dir` without its `.git` directory: the build context.
pub fn context_tar(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            builder.append_dir_all(&name, &path)?;
        } else {
            builder.append_path_with_name(&path, &name)?;
        }
    }
    builder.into_inner()
}

/// Builds `context` (a tar) into an image tagged `tag`, writing Docker's output to `log`.
pub async fn build(
    docker: &Docker,
    context: Vec<u8>,
    tag: &str,
    labels: &HashMap<String, String>,
    log: &mut LogSink,
) -> BuildOutcome {
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(labels)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    log.write(LogStream::Stdout, &text).await;
                }
                if let Some(status) = info.status {
                    log.write(LogStream::Stdout, &format!("{status}\n")).await;
                }
            }
            Err(DockerError::DockerStreamError { error }) => {
                log.line(LogStream::Stderr, &error).await;
                return BuildOutcome::StepFailed(error);
            }
            Err(DockerError::DockerResponseServerError {
                status_code,
                message,
            }) if status_code < 500 => {
                log.line(LogStream::Stderr, &message).await;
                return BuildOutcome::StepFailed(message);
            }
            Err(e) => return BuildOutcome::EngineError(e.to_string()),
        }
    }
    BuildOutcome::Built
}

/// Removes an image Hermes built; a missing image is fine.
pub async fn remove_image(docker: &Docker, tag: &str) {
    let options = RemoveImageOptionsBuilder::default().force(true).build();
    if let Err(e) = docker.remove_image(tag, Some(options), None).await {
        tracing::debug!(image = tag, error = %e, "Image not removed.");
    }
}

/// Removes the images and containers that runner `runner` (a dead predecessor of this name) left:
/// everything labelled [`LABEL`] with a value starting `<runner>/`. Returns how many it removed.
pub async fn remove_leftovers(docker: &Docker, runner: &str) -> Result<usize, DockerError> {
    let prefix = format!("{runner}/");
    let filters = HashMap::from([("label", vec![LABEL])]);
    let mut removed = 0;
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    for c in containers {
        let ours = c
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL))
            .is_some_and(|v| v.starts_with(&prefix));
        if let (true, Some(id)) = (ours, c.id) {
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            if docker.remove_container(&id, Some(options)).await.is_ok() {
                removed += 1;
            }
        }
    }
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    for image in images {
        if image
            .labels
            .get(LABEL)
            .is_some_and(|v| v.starts_with(&prefix))
        {
            let options = RemoveImageOptionsBuilder::default().force(true).build();
            if docker
                .remove_image(&image.id, Some(options), None)
                .await
                .is_ok()
            {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Connects to the engine (`DOCKER_HOST`, else the local socket) and waits until it answers a
/// ping, retrying with backoff for at most `within`.
pub async fn connect(within: std::time::Duration, log: &mut LogSink) -> Result<Docker, String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut backoff = std::time::Duration::from_millis(250);
    let mut told = false;
    loop {
        let error = match Docker::connect_with_defaults() {
            Ok(docker) => match docker.ping().await {
                Ok(_) => return Ok(docker),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() + backoff > deadline {
            return Err(format!(
                "Docker engine unavailable: {error} (retried for {within:?})"
            ));
        }
        if !told {
            log.line(
                LogStream::System,
                format!("Docker engine unavailable ({error}); retrying for up to {within:?}"),
            )
            .await;
            told = true;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}
