//! Building a checkout's Dockerfile on the Docker engine, streaming every output line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use bytes::Bytes;
use futures::StreamExt;
use hermes_schemas::LogStream;

use crate::ignore::Ignore;
use crate::logs::LogSink;

/// The image repository of everything runner `runner` builds, distinct for distinct names: a name
/// that is already a valid repository path component of `[a-z0-9-]` stays as it is
/// (`hermes-build/runner-a`); any other becomes that made valid, a `.` (which no name of the first
/// kind has) and the exact name in hexadecimal (`Runner.A` becomes
/// `hermes-build/runner-a.52756e6e65722e41`), so two runners never share a repository and one
/// never removes the other's images as a dead predecessor's. A tag, not a label, marks the images,
/// since the engine's classic builder turns a label into one more build step (a container and a
/// commit: about a second).
pub fn image_repository(runner: &str) -> String {
    let component = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = runner.as_bytes();
    let valid = bytes.first().is_some_and(|b| component(*b))
        && bytes.last().is_some_and(|b| component(*b))
        && bytes.iter().all(|b| component(*b) || *b == b'-');
    if valid {
        return format!("hermes-build/{runner}");
    }
    let made_valid: String = runner
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut made_valid = made_valid.trim_matches('-').to_owned();
    if made_valid.is_empty() {
        made_valid.push_str("runner");
    }
    format!("hermes-build/{made_valid}.{}", hex::encode(bytes))
}

/// How a Dockerfile build ended.
#[derive(Debug)]
pub enum BuildOutcome {
    /// The image was built.
    Built,
    /// A step of the Dockerfile failed; the message is Docker's.
    StepFailed(String),
    /// A step was killed for using more than the build's memory.
    OutOfMemory,
    /// The engine could not be used.
    EngineError(String),
}

/// The `.dockerignore` of the checkout at `dir` (none: nothing is excluded), a regular file of at
/// most 1 MiB; the error is the build's reason.
pub async fn read_ignore(dir: &Path) -> Result<Ignore, String> {
    match crate::checkout::read_file(dir, ".dockerignore", 1024 * 1024).await? {
        Some(text) => Ignore::parse(&text),
        None => Ok(Ignore::default()),
    }
}

/// A tar archive of `dir` without its `.git` directory and without what `ignore` excludes (the
/// `Dockerfile` and the `.dockerignore` itself always go, as the Docker CLI sends them): the build
/// context, written to `out`. Symbolic links go as links.
pub fn write_context<W: std::io::Write>(dir: &Path, ignore: &Ignore, out: W) -> std::io::Result<W> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    add_dir(&mut builder, dir, Path::new(""), ignore)?;
    builder.into_inner()
}

/// The build context of `dir` as a stream of chunks of at most [`CHUNK`] bytes, packed by a
/// blocking task that stays at most a few chunks ahead of the engine: a repository of any size
/// costs the runner a bounded amount of memory.
pub fn context_stream(
    dir: PathBuf,
    ignore: Ignore,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter {
            buf: Vec::with_capacity(CHUNK),
            tx: tx.clone(),
        };
        let result = write_context(&dir, &ignore, writer).and_then(|mut w| w.send());
        if let Err(e) = result {
            // Gone receiver (the build was stopped) or a file that could not be read: either
            // way the engine sees the body end in an error, not a short archive.
            if tx.blocking_send(Err(e)).is_err() {
                tracing::debug!("Build context not sent: the build stopped.");
            }
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The most bytes of context in one chunk.
pub const CHUNK: usize = 256 * 1024;

/// Hands what is written to a channel, [`CHUNK`] bytes at a time.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "build stopped"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Adds what `dir` (at `prefix` in the context) holds, recursively.
fn add_dir<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &Path,
    ignore: &Ignore,
) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if prefix.as_os_str().is_empty() && name == ".git" {
            continue;
        }
        // The archive keeps the name as it is; the patterns see it as text (a name that is not
        // UTF-8 is matched with its odd bytes replaced).
        let rel = prefix.join(&name);
        let text = rel.to_string_lossy();
        let always = matches!(text.as_ref(), "Dockerfile" | ".dockerignore");
        let excluded = !always && ignore.excludes(&text);
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            // An excluded directory is looked into only when an exception names something
            // under it.
            if excluded && !ignore.may_include_under(&text) {
                continue;
            }
            if !excluded {
                builder.append_dir(&rel, &path)?;
            }
            add_dir(builder, &path, &rel, ignore)?;
        } else if !excluded {
            builder.append_path_with_name(&path, &rel)?;
        }
    }
    Ok(())
}

/// What a build made in the engine, noted from the builder's output as it comes and kept outside
/// the build's future: the last image it committed (the classic builder commits one after every
/// step) and the containers its steps ran in.
///
/// A build that fails, or is dropped (cancel, timeout, hand-back), gets no tag, and its committed
/// steps would stay in the engine as untagged images, holding the repository's files, until
/// someone prunes them: the last one is removed with the steps below it. The image a `FROM` step
/// names is not the build's: the ` ---> <id>` after it is passed over, so a build whose first
/// step fails never removes its base image. The containers tell whether a failed step was killed
/// for the build's memory limit.
#[derive(Debug)]
pub struct Made {
    seen: std::sync::Mutex<Seen>,
    /// When the build began: an image made before is not the build's.
    since: time::OffsetDateTime,
}

#[derive(Debug, Default)]
struct Seen {
    image: Option<String>,
    /// The last step line was a `FROM`: the next id is its base image.
    after_from: bool,
    containers: Vec<String>,
}

impl Default for Made {
    fn default() -> Self {
        Self {
            seen: Default::default(),
            since: time::OffsetDateTime::now_utc(),
        }
    }
}

impl Made {
    /// Notes the image of a ` ---> <id>` line and the container of a ` ---> Running in <id>`
    /// line of the builder's output.
    fn saw(&self, text: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.lines().map(str::trim) {
            if let Some(step) = line.strip_prefix("Step ") {
                let instruction = step.split_once(" : ").map_or("", |(_, i)| i);
                seen.after_from = instruction
                    .split_whitespace()
                    .next()
                    .is_some_and(|i| i.eq_ignore_ascii_case("FROM"));
            } else if let Some(id) = line.strip_prefix("---> Running in ")
                && hex_id(id)
            {
                seen.containers.push(id.to_owned());
            } else if let Some(id) = line.strip_prefix("---> ")
                && hex_id(id)
                && !std::mem::take(&mut seen.after_from)
            {
                seen.image = Some(id.to_owned());
            }
        }
    }

    /// The last image the build committed, taken: it is removed once.
    pub fn take(&self) -> Option<String> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .image
            .take()
    }

    /// The (short) ids of the containers the build's steps ran in.
    pub fn containers(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .containers
            .clone()
    }

    pub fn since(&self) -> time::OffsetDateTime {
        self.since
    }
}

/// An image or container id as the builder prints it: 12 or more hexadecimal digits.
fn hex_id(id: &str) -> bool {
    id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a build may use of the machine; every build gets them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Bytes of memory, for each step's container, with no swap beyond it.
    pub memory: u64,
    /// CPUs (a quota of the CPU period); `None`: as many as the engine has.
    pub cpus: Option<f64>,
}

/// The CPU period a build's quota is a share of: the engine's default, 100 ms.
const CPU_PERIOD: i32 = 100_000;

/// The CPU quota, in microseconds of each [`CPU_PERIOD`], of `cpus` CPUs (the engine takes no less
/// than 1 ms).
fn cpu_quota(cpus: f64) -> i32 {
    // At most 1,024 CPUs (the command line's limit): far inside an i32.
    (cpus * f64::from(CPU_PERIOD))
        .round()
        .clamp(1_000.0, f64::from(i32::MAX)) as i32
}

/// `uri` (a build request's) with the memory limit set, as the engine reads it: `memory` and
/// `memswap` equal, so a step gets no swap beyond its memory. bollard's build options carry both
/// as an `i32`, which cannot say more than 2 GiB (the default is 4), so they are added to the
/// request here, in the engine's own 64-bit terms.
pub fn with_memory(uri: &str, memory: u64) -> String {
    let joint = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{joint}memory={memory}&memswap={memory}")
}

/// Builds `context` (a tar) into an image tagged `tag`, from scratch and within `limits`, writing
/// Docker's output to `log` and noting what it makes in `made`.
pub async fn build(
    docker: &Docker,
    context: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    tag: &str,
    limits: Limits,
    log: &mut LogSink,
    made: &Made,
) -> BuildOutcome {
    let mut options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        // No cache: two builds of the same commit at once (a push and its pull request) would
        // otherwise end in one shared image, and the first to finish would remove it from under
        // the other as it tags it ("failed to get digest"). Each build's images are removed
        // when it ends, so a cache would rarely have helped anyway.
        .nocache(true);
    if let Some(cpus) = limits.cpus {
        options = options.cpuperiod(CPU_PERIOD).cpuquota(cpu_quota(cpus));
    }
    let memory = limits.memory;
    let limited = docker.clone().with_request_modifier(move |mut request| {
        if request.uri().path().ends_with("/build") {
            let uri = with_memory(&request.uri().to_string(), memory);
            match uri.parse() {
                Ok(uri) => *request.uri_mut() = uri,
                // Cannot be: two decimal query parameters added to a valid URI.
                Err(e) => tracing::error!(error = %e, "The build's memory limit was not set."),
            }
        }
        request
    });
    let mut stream = limited.build_image(
        options.build(),
        None,
        Some(bollard::body_try_stream(context)),
    );
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    made.saw(&text);
                    log.write(LogStream::Stdout, &text).await;
                }
                if let Some(status) = info.status {
                    log.write(LogStream::Stdout, &format!("{status}\n")).await;
                }
            }
            Err(DockerError::DockerStreamError { error }) => {
                log.line(LogStream::Stderr, &error).await;
                // Killed (137: SIGKILL, which is how the kernel ends a process over its
                // cgroup's memory): the engine's `oom` event may come a moment after the step's
                // end, so it is waited for a little.
                let killed = exit_code(&error) == Some(137);
                if out_of_memory(docker, made, killed).await {
                    return BuildOutcome::OutOfMemory;
                }
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
    // The last step is the built image now, and goes with its tag.
    made.take();
    BuildOutcome::Built
}

/// The exit code in the classic builder's message for a failed step (`The command '…' returned a
/// non-zero code: 137`), read once here where the engine's text comes in; bollard keeps the
/// message of the engine's error, not its code.
pub fn exit_code(message: &str) -> Option<i64> {
    let (_, code) = message.rsplit_once("returned a non-zero code: ")?;
    code.trim().parse().ok()
}

/// Whether the engine reported one of the build's step containers out of memory (its `oom`
/// event, which the kernel's cgroup notice becomes). When `wait`, the event is looked for for up
/// to 2 s.
async fn out_of_memory(docker: &Docker, made: &Made, wait: bool) -> bool {
    use bollard::query_parameters::EventsOptions;
    let containers = made.containers();
    if containers.is_empty() {
        return false;
    }
    let unix = |t: time::OffsetDateTime| format!("{}.{:09}", t.unix_timestamp(), t.nanosecond());
    // With 5 s for the engine's clock; other containers' events are told apart by id.
    let since = unix(made.since() - time::Duration::seconds(5));
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["oom".to_owned()]),
    ]);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        // Up to now: a time in the future would make the engine wait for it.
        let options = EventsOptions {
            since: Some(since.clone()),
            until: Some(unix(time::OffsetDateTime::now_utc())),
            filters: Some(filters.clone()),
        };
        let mut events = docker.events(Some(options));
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    let id = event.actor.and_then(|a| a.id).unwrap_or_default();
                    if containers.iter().any(|c| id.starts_with(c.as_str())) {
                        return true;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Cannot read the engine's events.");
                    break;
                }
            }
        }
        if !wait || tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Removes an image Hermes built (by tag or id, with the untagged steps below it); a missing image
/// is fine.
pub async fn remove_image(docker: &Docker, tag: &str) {
    let options = RemoveImageOptionsBuilder::default().force(true).build();
    if let Err(e) = docker.remove_image(tag, Some(options), None).await {
        tracing::debug!(image = tag, error = %e, "Image not removed.");
    }
}

/// Removes `id`, the last step a build committed, if it is one: the id comes from the build's
/// output, which a `RUN` step can print too, so only an image that has no tag and no digest and was
/// made since the build began (`since`, with 5 s for the engine's clock) is removed, and never by
/// force. Waits (at most `within`) while a container still uses it: a stopped build's last
/// container is torn down by the engine a moment after.
pub async fn remove_step_image(
    docker: &Docker,
    id: &str,
    since: time::OffsetDateTime,
    within: std::time::Duration,
) {
    let Ok(image) = docker.inspect_image(id).await else {
        return;
    };
    let named = image.repo_tags.is_some_and(|t| !t.is_empty())
        || image.repo_digests.is_some_and(|d| !d.is_empty());
    let created = image.created.as_deref().and_then(|c| {
        time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()
    });
    if named || created.is_none_or(|c| c < since - time::Duration::seconds(5)) {
        tracing::warn!(image = id, "Not removing an image this build did not make.");
        return;
    }
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match docker
            .remove_image(
                id,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
        {
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::debug!(image = id, error = %e, "Image not removed.");
                return;
            }
            Ok(_) => return,
        }
    }
}

/// Removes the images that runner `runner` (a dead predecessor of this name) left: every tag of its
/// [`image_repository`]. Returns how many it removed. (The intermediate containers of a build
/// whose client went away are removed by the engine itself: builds run with `forcerm`.)
pub async fn remove_leftovers(docker: &Docker, runner: &str) -> Result<usize, DockerError> {
    let repository = image_repository(runner);
    let filters = HashMap::from([("reference", vec![repository.clone()])]);
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?;
    let prefix = format!("{repository}:");
    let mut removed = 0;
    // By tag, not by id: an image that also carries someone else's tag keeps that one.
    for tag in images
        .iter()
        .flat_map(|image| &image.repo_tags)
        .filter(|tag| tag.starts_with(&prefix))
    {
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        if docker.remove_image(tag, Some(options), None).await.is_ok() {
            removed += 1;
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

#[cfg(test)]
mod tests {
    use super::{Made, image_repository};

    #[tokio::test]
    async fn the_streamed_context_is_the_archive_in_bounded_chunks() {
        use futures::StreamExt;
        let dir = std::env::temp_dir().join(format!("hermes-context-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".git")).expect("dir");
        std::fs::write(dir.join(".git/HEAD"), "ref").expect("file");
        std::fs::write(dir.join("Dockerfile"), "FROM x\n").expect("file");
        std::fs::write(dir.join("big"), vec![7u8; 3 * super::CHUNK + 5]).expect("file");
        std::fs::write(dir.join(".dockerignore"), "*.tmp\n").expect("file");
        std::fs::write(dir.join("a.tmp"), "left out").expect("file");
        // A name that is not UTF-8 goes as it is.
        let latin1 = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9");
        std::fs::write(dir.join(latin1), "x").expect("file");
        let ignore = super::read_ignore(&dir).await.expect("ignore");
        let whole = super::write_context(&dir, &ignore, Vec::new()).expect("tar");
        let chunks: Vec<_> = super::context_stream(dir.clone(), ignore)
            .map(|c| c.expect("chunk"))
            .collect()
            .await;
        assert!(chunks.iter().all(|c| c.len() <= super::CHUNK));
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());
        assert_eq!(chunks.concat(), whole);
        let mut names: Vec<Vec<u8>> = tar::Archive::new(whole.as_slice())
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry").path_bytes().into_owned())
            .collect();
        names.sort();
        let want: [&[u8]; 4] = [b".dockerignore", b"Dockerfile", b"big", b"caf\xe9"];
        assert_eq!(names, want);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_last_committed_step_is_noted() {
        let last = Made::default();
        last.saw("Step 1/3 : FROM base\n");
        last.saw(" ---> 8dc51b0d02c1\n");
        last.saw("Step 2/3 : RUN echo x\n");
        last.saw(" ---> Running in e976f9a3c800\n");
        assert_eq!(last.take(), None, "the base image is not the build's");
        last.saw("Step 1/3 : from base\n ---> 8dc51b0d02c1\n");
        assert_eq!(last.take(), None);
        last.saw("Step 1/3 : FROM\tbase\n ---> 8dc51b0d02c1\n");
        assert_eq!(last.take(), None);
        last.saw("x\nRemoving intermediate container e976f9a3c800\n ---> 02fc4c90f090\n");
        assert_eq!(last.take().as_deref(), Some("02fc4c90f090"));
        assert_eq!(last.take(), None);
        last.saw(" ---> 5741db31b3ef\nStep 3/3 : RUN sleep 30\n ---> Running in 0123456789ab\n");
        assert_eq!(last.take().as_deref(), Some("5741db31b3ef"));
        assert_eq!(last.containers(), ["e976f9a3c800", "0123456789ab"]);
        last.saw(" ---> Running in not-an-id\n");
        assert_eq!(last.containers().len(), 2);
    }

    #[test]
    fn the_memory_limit_goes_into_the_build_request_in_64_bits() {
        assert_eq!(
            super::with_memory("http://docker/v1.41/build?t=x&rm=true", 4 << 30),
            "http://docker/v1.41/build?t=x&rm=true&memory=4294967296&memswap=4294967296"
        );
        assert_eq!(
            super::with_memory("http://docker/v1.41/build", 33_554_432),
            "http://docker/v1.41/build?memory=33554432&memswap=33554432"
        );
    }

    #[test]
    fn cpus_become_a_quota_of_the_period() {
        assert_eq!(super::cpu_quota(2.0), 200_000);
        assert_eq!(super::cpu_quota(0.5), 50_000);
        assert_eq!(super::cpu_quota(0.001), 1_000);
    }

    #[test]
    fn the_exit_code_of_a_failed_step_is_read_from_the_engine_s_message() {
        let message = "The command '/bin/sh -c dd if=/dev/zero of=/dev/null bs=100M' returned a non-zero code: 137";
        assert_eq!(super::exit_code(message), Some(137));
        assert_eq!(super::exit_code("returned a non-zero code: 1\n"), Some(1));
        assert_eq!(super::exit_code("COPY failed: no source files"), None);
    }

    #[test]
    fn a_runner_name_becomes_a_valid_image_repository() {
        assert_eq!(image_repository("runner-a"), "hermes-build/runner-a");
        assert_eq!(image_repository("ci-7"), "hermes-build/ci-7");
        assert_eq!(
            image_repository("CI_Box.7"),
            "hermes-build/ci-box-7.43495f426f782e37"
        );
        assert_eq!(image_repository("--"), "hermes-build/runner.2d2d");
        assert_eq!(image_repository("ÿ-x"), "hermes-build/x.c3bf2d78");
        // Docker's grammar of a path component: lowercase letters and digits, separated by one
        // `.` or `_`, two `_`, or any number of `-`.
        let component = regex::Regex::new("^[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*$")
            .expect("a valid pattern");
        for name in [
            "runner-a",
            "Runner.A",
            "a_b",
            "x",
            "9",
            "a..b",
            "host.example.com",
        ] {
            let repository = image_repository(name);
            let path = repository.strip_prefix("hermes-build/").expect("prefix");
            assert!(component.is_match(path), "{name:?} -> {repository:?}");
        }
    }

    #[test]
    fn distinct_runner_names_get_distinct_image_repositories() {
        let names = [
            "runner-a",
            "Runner.A",
            "runner.a",
            "RUNNER-A",
            "runner_a",
            "Runner-A",
            "runner-a-",
            "runner--a",
            "runner-a.72756e6e65722d61",
            "a",
            "A",
            "a.",
            "a_",
            "a-b.c",
            "a.b-c",
        ];
        let repositories: std::collections::HashSet<_> =
            names.iter().map(|n| image_repository(n)).collect();
        assert_eq!(repositories.len(), names.len(), "{repositories:?}");
        // The exact name can be read back from any repository that is not the name itself.
        for name in names {
            let repository = image_repository(name);
            let path = repository.strip_prefix("hermes-build/").expect("prefix");
            let back = match path.rsplit_once('.') {
                Some((_, hex)) => String::from_utf8(hex::decode(hex).expect("hex")).expect("utf-8"),
                None => path.to_owned(),
            };
            assert_eq!(back, name);
        }
    }
}
