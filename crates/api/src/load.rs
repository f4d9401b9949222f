//! Loading resources from files, folders and standard input.
//!
//! Input is what `kubectl apply -f` takes: multi-document YAML, JSON, and
//! `kind: List`. Folders are read recursively in sorted order (hidden
//! entries such as `.git` are skipped). Kinds weft does not model are
//! skipped with a note; everything else either loads or gets an error that
//! names file, line, column, resource and field.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::de::{self, from_node};
use crate::diagnostic::{Diagnostic, Level};
use crate::par;
use crate::path::{FieldPath, Path};
use crate::resource::{CORE, KindInfo, Resource, Source, Spec};
use crate::types::common::ObjectMeta;
use crate::types::kube::{ConfigMapData, SecretData};
use crate::types::mesh::MeshConfig;
use crate::yaml::{self, Node, Pos, Value};

/// Fields every Kubernetes object may have at its top level.
const ENVELOPE: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// The name of the ConfigMap that holds MeshConfig under its `mesh` key.
pub const MESH_CONFIGMAP: &str = "istio";

/// An input that could not be read at all (as opposed to read and refused).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    // The message carries the cause, so it is not chained as a source
    // (that would print it twice).
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
}

/// MeshConfig and where it was read from.
#[derive(Debug, Clone)]
pub struct MeshSource {
    pub config: MeshConfig,
    pub file: Arc<str>,
    /// The MeshConfig document, to place validation findings.
    pub node: Arc<Node>,
    /// Added to positions in `node`: non-zero when the document is the
    /// `mesh` key of a ConfigMap.
    pub offset: Pos,
}

impl MeshSource {
    /// Where `path` is in the file MeshConfig came from.
    pub fn locate(&self, path: &FieldPath) -> Pos {
        let pos = path.locate(&self.node);
        Pos {
            line: pos.line + self.offset.line,
            col: pos.col + self.offset.col,
        }
    }
}

/// Everything read from a set of inputs.
#[derive(Debug, Default)]
pub struct Loaded {
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
    /// How many files (and standard input) were read.
    pub files: usize,
    /// From the `istio` ConfigMap, when the inputs hold one.
    pub mesh: Option<MeshSource>,
}

impl Loaded {
    /// Reads every path: `-` is standard input, a folder is walked.
    pub fn from_paths<P: AsRef<FsPath>>(paths: &[P]) -> Result<Loaded, ReadError> {
        let mut inputs = Vec::new();
        for path in paths {
            read_path(path.as_ref(), &mut inputs)?;
        }
        let mut loaded = Loaded::default();
        let mut texts = Vec::with_capacity(inputs.len());
        for (name, bytes) in &inputs {
            match std::str::from_utf8(bytes) {
                Ok(text) => texts.push((name.as_str(), text)),
                Err(e) => {
                    loaded.files += 1;
                    let pos = line_col(bytes, e.valid_up_to());
                    let file = Arc::from(name.as_str());
                    loaded.error(&file, pos, None, None, "not UTF-8 text".to_string());
                }
            }
        }
        loaded.add_texts(&texts);
        loaded.check_duplicates();
        Ok(loaded)
    }

    /// Reads MeshConfig YAML from `file` (as `--mesh-config` names it); it
    /// wins over an `istio` ConfigMap among the inputs.
    pub fn set_mesh_config_file(&mut self, file: &FsPath) -> Result<(), ReadError> {
        let text = std::fs::read_to_string(file).map_err(|cause| ReadError::Io {
            path: file.display().to_string(),
            cause,
        })?;
        match load_mesh_config(&file.display().to_string(), &text) {
            Ok(mesh) => self.mesh = Some(mesh),
            Err(diags) => self.diagnostics.extend(diags),
        }
        Ok(())
    }

    /// Applies Istio's validation rules to everything loaded, under the
    /// mesh config in force, and keeps what they find.
    pub fn validate(&mut self) {
        let found = crate::validate::validate(&self.resources, self.mesh.as_ref());
        self.diagnostics.extend(found);
    }

    /// Loads one text; `file` names it in messages. Call
    /// [`Loaded::check_duplicates`] once every text is in.
    pub fn add_text(&mut self, file: &str, text: &str) {
        self.add_texts(&[(file, text)]);
    }

    /// Loads `(file, text)` pairs, spreading the parsing over the machine's
    /// cores: large texts are cut at document boundaries, the pieces are
    /// loaded on scoped threads, and the results are merged in input order,
    /// so the outcome is the same as loading them one by one.
    pub fn add_texts(&mut self, texts: &[(&str, &str)]) {
        let workers = par::workers();
        let files: Vec<Arc<str>> = texts.iter().map(|(f, _)| Arc::from(*f)).collect();
        let mut pieces = Vec::new();
        for (i, (_, text)) in texts.iter().enumerate() {
            for (line_offset, chunk) in yaml::split_documents(text, workers) {
                pieces.push((i, line_offset, chunk));
            }
        }
        let load = |&(i, line_offset, chunk): &(usize, u32, &str)| -> Result<Loaded, Diagnostic> {
            let file = &files[i];
            let docs = yaml::parse_stream_at(chunk, line_offset).map_err(|e| Diagnostic {
                level: Level::Error,
                file: file.clone(),
                pos: e.pos,
                origin: None,
                path: None,
                message: format!("YAML syntax error: {}", e.message),
            })?;
            let mut part = Loaded::default();
            for root in docs.into_iter().filter_map(|d| d.root) {
                part.add_document(file, root);
            }
            Ok(part)
        };
        let total: usize = texts.iter().map(|(_, t)| t.len()).sum();
        let results: Vec<Result<Loaded, Diagnostic>> =
            if workers < 2 || pieces.len() < 2 || total < PARALLEL_MIN_BYTES {
                pieces.iter().map(load).collect()
            } else {
                par::map(&pieces, workers, |p| p.2.len(), load)
            };
        // A text with a syntax error anywhere loads nothing, as when it is
        // parsed in one piece.
        let mut failed = vec![false; texts.len()];
        for ((i, _, _), r) in pieces.iter().zip(&results) {
            failed[*i] |= r.is_err();
        }
        let mut reported = vec![false; texts.len()];
        for ((i, _, _), r) in pieces.iter().zip(results) {
            match r {
                Err(d) if !reported[*i] => {
                    reported[*i] = true;
                    self.diagnostics.push(d);
                }
                Ok(part) if !failed[*i] => self.absorb(part),
                _ => {}
            }
        }
        self.files += texts.len();
    }

    fn absorb(&mut self, part: Loaded) {
        self.resources.extend(part.resources);
        self.diagnostics.extend(part.diagnostics);
        if part.mesh.is_some() {
            self.mesh = part.mesh;
        }
    }

    /// Errors for every (kind, namespace, name) defined more than once.
    pub fn check_duplicates(&mut self) {
        let mut seen: HashMap<(&str, &str, &str, &str), &Source> = HashMap::new();
        let mut found = Vec::new();
        for r in &self.resources {
            let key = (r.kind.group, r.kind.kind, r.namespace(), r.name.as_str());
            match seen.get(&key) {
                Some(first) => found.push(Diagnostic {
                    level: Level::Error,
                    file: r.source.file.clone(),
                    pos: r.source.pos,
                    origin: Some(r.origin()),
                    path: None,
                    message: format!("defined twice; first at {first}"),
                }),
                None => {
                    seen.insert(key, &r.source);
                }
            }
        }
        self.diagnostics.extend(found);
    }

    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    fn add_document(&mut self, file: &Arc<str>, root: Node) {
        if !matches!(root.value, Value::Map(_)) {
            let found = root.describe();
            self.error(
                file,
                root.pos,
                None,
                None,
                format!("expected a Kubernetes object (a mapping with apiVersion and kind), found {found}"),
            );
            return;
        }
        let (Some(api_version), Some(kind)) = (
            root.get("apiVersion").and_then(Node::as_str),
            root.get("kind").and_then(Node::as_str),
        ) else {
            let missing = if root.get("apiVersion").and_then(Node::as_str).is_none() {
                "apiVersion"
            } else {
                "kind"
            };
            self.error(file, root.pos, None, None, format!("{missing}: required"));
            return;
        };
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => (CORE, api_version),
        };
        if group == CORE && kind == "List" {
            self.add_list(file, root);
            return;
        }
        let Some(info) = KindInfo::find(group, kind) else {
            let why = if KindInfo::known_group(group) {
                "weft does not support this kind"
            } else {
                "not a kind weft reads"
            };
            let name = root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Node::as_str)
                .unwrap_or("");
            self.push(
                Level::Note,
                file,
                root.pos,
                Some(format!("{kind} {name}")),
                None,
                format!("skipped ({api_version}): {why}"),
            );
            return;
        };
        if !info.versions.contains(&version) {
            let served: Vec<String> = info
                .versions
                .iter()
                .map(|v| {
                    if group.is_empty() {
                        v.to_string()
                    } else {
                        format!("{group}/{v}")
                    }
                })
                .collect();
            let pos = root.get("apiVersion").map_or(root.pos, |n| n.pos);
            self.error(
                file,
                pos,
                None,
                None,
                format!(
                    "apiVersion: {api_version} does not serve {kind}; use {}",
                    served.join(" or ")
                ),
            );
            return;
        }
        let api_version = api_version.to_string();
        self.add_object(file, info, api_version, root);
    }

    fn add_list(&mut self, file: &Arc<str>, root: Node) {
        let Value::Map(entries) = root.value else {
            return;
        };
        for (k, v) in entries {
            if k.as_str() != Some("items") {
                continue;
            }
            match v.value {
                Value::Seq(items) => {
                    for item in items {
                        self.add_document(file, item);
                    }
                }
                _ if v.is_null() => {}
                _ => {
                    let found = v.describe();
                    self.error(
                        file,
                        v.pos,
                        Some("List".into()),
                        None,
                        format!("items: expected a list, found {found}"),
                    );
                }
            }
        }
    }

    fn add_object(
        &mut self,
        file: &Arc<str>,
        info: &'static KindInfo,
        api_version: String,
        root: Node,
    ) {
        let root = Arc::new(root);
        let meta: ObjectMeta = match root.get("metadata") {
            Some(node) => match from_node(node, &Path::Root.field("metadata")) {
                Ok(meta) => meta,
                Err(e) => return self.de_error(file, &root, Some(info.kind.to_string()), e),
            },
            None => ObjectMeta::default(),
        };
        let name = meta.name.clone().unwrap_or_default();
        let namespace = info.namespaced.then(|| {
            meta.namespace
                .clone()
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(|| "default".to_string())
        });
        let origin = match &namespace {
            Some(ns) => format!("{} {ns}/{name}", info.kind),
            None => format!("{} {name}", info.kind),
        };
        if name.is_empty() {
            let pos = root.get("metadata").map_or(root.pos, |n| n.pos);
            let path = Path::Root.field("metadata");
            let path = path.field("name");
            self.push(
                Level::Error,
                file,
                pos,
                Some(origin),
                Some(path.to_path()),
                "required".into(),
            );
            return;
        }
        if info.strict {
            if let Value::Map(entries) = &root.value {
                for (k, _) in entries {
                    let key = k.as_str().unwrap_or_default();
                    if !ENVELOPE.contains(&key) {
                        let path = Path::Root.field(key).to_path();
                        self.push(
                            Level::Error,
                            file,
                            k.pos,
                            Some(origin.clone()),
                            Some(path),
                            format!("unknown field `{key}`"),
                        );
                    }
                }
            }
        }
        let spec = match parse_spec(info, &root) {
            Ok(spec) => spec,
            Err(e) => return self.de_error(file, &root, Some(origin), e),
        };
        if let Spec::ConfigMap(data) = &spec {
            if name == MESH_CONFIGMAP {
                self.add_mesh_from_configmap(file, &root, &origin, data);
            }
        }
        self.resources.push(Resource {
            kind: info,
            api_version,
            meta,
            name,
            namespace,
            spec,
            source: Source {
                file: file.clone(),
                pos: root.pos,
            },
            node: root,
        });
    }

    fn add_mesh_from_configmap(
        &mut self,
        file: &Arc<str>,
        root: &Node,
        origin: &str,
        data: &ConfigMapData,
    ) {
        let Some(text) = data.data.get("mesh") else {
            return;
        };
        let Some(value) = root.get("data").and_then(|d| d.get("mesh")) else {
            return;
        };
        // The scalar's position is where its text starts, so the text's
        // line N is the file's line `value.pos.line + N - 1`.
        let offset = Pos {
            line: value.pos.line - 1,
            col: value.pos.col - 1,
        };
        match parse_mesh_config(file, text, offset) {
            Ok(mesh) => self.mesh = Some(mesh),
            Err(mut diags) => {
                for d in &mut diags {
                    d.origin = Some(format!("{origin} (data.mesh)"));
                }
                self.diagnostics.extend(diags);
            }
        }
    }

    fn de_error(&mut self, file: &Arc<str>, root: &Node, origin: Option<String>, e: de::Error) {
        let (path, pos) = match e.at {
            Some((path, pos)) => (Some(path), pos),
            None => (None, root.pos),
        };
        self.push(Level::Error, file, pos, origin, path, e.message);
    }

    fn error(
        &mut self,
        file: &Arc<str>,
        pos: Pos,
        origin: Option<String>,
        path: Option<crate::path::FieldPath>,
        message: String,
    ) {
        self.push(Level::Error, file, pos, origin, path, message);
    }

    fn push(
        &mut self,
        level: Level,
        file: &Arc<str>,
        pos: Pos,
        origin: Option<String>,
        path: Option<crate::path::FieldPath>,
        message: String,
    ) {
        self.diagnostics.push(Diagnostic {
            level,
            file: file.clone(),
            pos,
            origin,
            path,
            message,
        });
    }
}

/// An empty value, for a resource that has no `spec`.
static NULL: Node = Node {
    pos: Pos { line: 0, col: 0 },
    value: Value::Scalar {
        text: String::new(),
        plain: true,
    },
};

fn parse_spec(info: &KindInfo, root: &Node) -> Result<Spec, de::Error> {
    /// A top-level field of the document, empty when absent.
    fn top<T: DeserializeOwned>(root: &Node, key: &str) -> Result<T, de::Error> {
        let node = root.get(key).unwrap_or(&NULL);
        from_node(node, &Path::Root.field(key))
    }
    fn spec<T: DeserializeOwned>(root: &Node) -> Result<T, de::Error> {
        top(root, "spec")
    }
    use crate::resource::{
        ADMISSION, APPS, AUTOSCALING, GATEWAY_API, NETWORKING, POLICY, SECURITY, TELEMETRY, WEFT,
    };
    Ok(match (info.group, info.kind) {
        (NETWORKING, "VirtualService") => Spec::VirtualService(spec(root)?),
        (NETWORKING, "DestinationRule") => Spec::DestinationRule(spec(root)?),
        (NETWORKING, "Gateway") => Spec::Gateway(spec(root)?),
        (NETWORKING, "ServiceEntry") => Spec::ServiceEntry(spec(root)?),
        (NETWORKING, "Sidecar") => Spec::Sidecar(spec(root)?),
        (NETWORKING, "WorkloadEntry") => Spec::WorkloadEntry(spec(root)?),
        (NETWORKING, "WorkloadGroup") => Spec::WorkloadGroup(spec(root)?),
        (NETWORKING, "EnvoyFilter") => Spec::EnvoyFilter(spec(root)?),
        (SECURITY, "PeerAuthentication") => Spec::PeerAuthentication(spec(root)?),
        (SECURITY, "AuthorizationPolicy") => Spec::AuthorizationPolicy(spec(root)?),
        (SECURITY, "RequestAuthentication") => Spec::RequestAuthentication(spec(root)?),
        (TELEMETRY, "Telemetry") => Spec::Telemetry(spec(root)?),
        (GATEWAY_API, "Gateway") => Spec::KubeGateway(spec(root)?),
        (GATEWAY_API, "HTTPRoute") => Spec::HttpRoute(spec(root)?),
        (GATEWAY_API, "GRPCRoute") => Spec::GrpcRoute(spec(root)?),
        (GATEWAY_API, "TCPRoute") => Spec::TcpRoute(spec(root)?),
        (GATEWAY_API, "TLSRoute") => Spec::TlsRoute(spec(root)?),
        (GATEWAY_API, "ReferenceGrant") => Spec::ReferenceGrant(spec(root)?),
        (WEFT, "RateLimit") => Spec::RateLimit(spec(root)?),
        (CORE, "Namespace") => Spec::Namespace,
        (CORE, "ServiceAccount") => Spec::ServiceAccount,
        (CORE, "Secret") => Spec::Secret(SecretData {
            data: top(root, "data")?,
            string_data: top(root, "stringData")?,
        }),
        (CORE, "Service") => Spec::Service(spec(root)?),
        (CORE, "Pod") => Spec::Pod(spec(root)?),
        (APPS, "Deployment") => Spec::Deployment(spec(root)?),
        (AUTOSCALING, "HorizontalPodAutoscaler") => Spec::HorizontalPodAutoscaler(spec(root)?),
        (POLICY, "PodDisruptionBudget") => Spec::PodDisruptionBudget(spec(root)?),
        (ADMISSION, "MutatingWebhookConfiguration") => {
            Spec::MutatingWebhookConfiguration(top(root, "webhooks")?)
        }
        (ADMISSION, "ValidatingWebhookConfiguration") => {
            Spec::ValidatingWebhookConfiguration(top(root, "webhooks")?)
        }
        (CORE, "ConfigMap") => Spec::ConfigMap(ConfigMapData {
            data: top(root, "data")?,
        }),
        _ => unreachable!("every entry of KINDS has a parser"),
    })
}

/// Reads MeshConfig from its own file. A ConfigMap holding it under `mesh`
/// is accepted too.
pub fn load_mesh_config(file: &str, text: &str) -> Result<MeshSource, Vec<Diagnostic>> {
    let file: Arc<str> = Arc::from(file);
    let is_configmap = yaml::parse_stream(text).is_ok_and(|docs| {
        docs.iter()
            .filter_map(|d| d.root.as_ref())
            .any(|r| r.get("kind").and_then(Node::as_str) == Some("ConfigMap"))
    });
    if is_configmap {
        let mut loaded = Loaded::default();
        loaded.add_text(&file, text);
        if loaded.errors() > 0 {
            return Err(loaded.diagnostics);
        }
        return loaded.mesh.ok_or_else(|| {
            vec![Diagnostic {
                level: Level::Error,
                file: file.clone(),
                pos: Pos { line: 1, col: 1 },
                origin: Some("MeshConfig".into()),
                path: None,
                message: format!("no ConfigMap named `{MESH_CONFIGMAP}` with a `mesh` key"),
            }]
        });
    }
    parse_mesh_config(&file, text, Pos::default())
}

/// MeshConfig from YAML text that starts `offset` lines and columns into
/// `file` (zero for a file of its own, more for a ConfigMap's `mesh` key).
fn parse_mesh_config(
    file: &Arc<str>,
    text: &str,
    offset: Pos,
) -> Result<MeshSource, Vec<Diagnostic>> {
    let shift = |pos: Pos| Pos {
        line: pos.line + offset.line,
        col: pos.col + offset.col,
    };
    let fail = |pos: Pos, path, message: String| {
        vec![Diagnostic {
            level: Level::Error,
            file: file.clone(),
            pos: shift(pos),
            origin: Some("MeshConfig".into()),
            path,
            message,
        }]
    };
    let docs = yaml::parse_stream(text)
        .map_err(|e| fail(e.pos, None, format!("YAML syntax error: {}", e.message)))?;
    let mut roots = docs.into_iter().filter_map(|d| d.root);
    let root = roots.next().unwrap_or_else(|| NULL.clone());
    if let Some(extra) = roots.next() {
        return Err(fail(
            extra.pos,
            None,
            "mesh config must be a single document".into(),
        ));
    }
    let config = from_node(&root, &Path::Root).map_err(|e| match e.at {
        Some((path, pos)) => fail(pos, Some(path), e.message),
        None => fail(root.pos, None, e.message),
    })?;
    Ok(MeshSource {
        config,
        file: file.clone(),
        node: Arc::new(root),
        offset,
    })
}

/// Below this much input a load stays on one thread.
const PARALLEL_MIN_BYTES: usize = 256 << 10;

/// Reads `path` into `out` as (name, bytes): `-` is standard input, a
/// folder is walked.
fn read_path(path: &FsPath, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), ReadError> {
    let io = |cause| ReadError::Io {
        path: path.display().to_string(),
        cause,
    };
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map_err(io)?;
        out.push(("-".to_string(), bytes));
        return Ok(());
    }
    let meta = std::fs::metadata(path).map_err(io)?;
    let files = if meta.is_dir() {
        walk(path).map_err(io)?
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        let bytes = std::fs::read(&file).map_err(|cause| ReadError::Io {
            path: file.display().to_string(),
            cause,
        })?;
        out.push((file.display().to_string(), bytes));
    }
    Ok(())
}

/// Every `.yaml`, `.yml` and `.json` file under `dir`, sorted, skipping
/// hidden entries: the files a load of the folder reads.
pub fn walk(dir: &FsPath) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            out.extend(walk(&path)?);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(out)
}

fn line_col(bytes: &[u8], offset: usize) -> Pos {
    let before = &bytes[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    Pos {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        col: u32::try_from(col).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests;
