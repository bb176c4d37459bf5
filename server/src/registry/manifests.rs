//! Manifests: validation on push, storage as blobs with revision and tag
//! links, deletes, and the referrers index.

use std::collections::HashSet;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::digest::{Algorithm, Digest};
use super::names::{Reference, RepoName, Tag};
use super::{Registry, RegistryError, Result, layout};

/// Largest manifest accepted or read (distribution's limit since its
/// CVE-2023-2253 fix: 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// How many of a pushed manifest's references are looked up at once.
const REFERENCE_LOOKUPS: usize = 16;

/// The manifest formats the registry stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    /// `application/vnd.oci.image.manifest.v1+json`.
    OciManifest,
    /// `application/vnd.oci.image.index.v1+json`.
    OciIndex,
    /// `application/vnd.docker.distribution.manifest.v2+json`.
    DockerManifest,
    /// `application/vnd.docker.distribution.manifest.list.v2+json`.
    DockerManifestList,
}

impl ManifestKind {
    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::OciManifest => "application/vnd.oci.image.manifest.v1+json",
            ManifestKind::OciIndex => "application/vnd.oci.image.index.v1+json",
            ManifestKind::DockerManifest => "application/vnd.docker.distribution.manifest.v2+json",
            ManifestKind::DockerManifestList => {
                "application/vnd.docker.distribution.manifest.list.v2+json"
            }
        }
    }

    /// The kind with this media type, if it is one.
    pub fn from_media_type(mt: &str) -> Option<ManifestKind> {
        [
            ManifestKind::OciManifest,
            ManifestKind::OciIndex,
            ManifestKind::DockerManifest,
            ManifestKind::DockerManifestList,
        ]
        .into_iter()
        .find(|k| k.media_type() == mt)
    }

    fn is_index(self) -> bool {
        matches!(
            self,
            ManifestKind::OciIndex | ManifestKind::DockerManifestList
        )
    }
}

/// A manifest read back from storage.
#[derive(Clone, Debug)]
pub struct StoredManifest {
    /// Its digest.
    pub digest: Digest,
    /// Its bytes, exactly as pushed.
    pub body: Bytes,
    /// Its media type (the `mediaType` field, else inferred from its shape).
    pub media_type: String,
}

/// One entry of a referrers response: a descriptor of a manifest whose
/// `subject` is the digest asked about.
#[derive(Clone, Debug, PartialEq)]
pub struct Referrer {
    /// The referrer's media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// `artifactType`, else the config's media type (image manifests).
    pub artifact_type: Option<String>,
    /// Its annotations, if any.
    pub annotations: Option<Map<String, Value>>,
}

impl Referrer {
    /// The OCI descriptor JSON for this referrer.
    pub fn to_descriptor(&self) -> Value {
        let mut d = Map::new();
        d.insert("mediaType".into(), Value::String(self.media_type.clone()));
        d.insert("digest".into(), Value::String(self.digest.to_string()));
        d.insert("size".into(), Value::from(self.size));
        if let Some(at) = &self.artifact_type {
            d.insert("artifactType".into(), Value::String(at.clone()));
        }
        if let Some(a) = &self.annotations {
            d.insert("annotations".into(), Value::Object(a.clone()));
        }
        Value::Object(d)
    }
}

/// What a manifest says about the rest of the registry.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) kind: ManifestKind,
    /// Blobs (config, layers) that must be in the repository.
    pub(crate) blobs: Vec<Digest>,
    /// Child manifests (index entries) that must be in the repository.
    pub(crate) manifests: Vec<Digest>,
    pub(crate) subject: Option<Digest>,
    pub(crate) artifact_type: Option<String>,
    pub(crate) annotations: Option<Map<String, Value>>,
    /// Layers fetched from elsewhere (non-empty `urls`): where (e.g.
    /// `layers[2]`) and the URLs, checked against
    /// [`ManifestUrls`](super::ManifestUrls) instead of the repository.
    pub(crate) foreign: Vec<(String, Vec<String>)>,
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::ManifestInvalid(message.into())
}

/// A manifest or index as pushed, reduced to the fields the registry looks
/// at. The parser skips every other field without keeping it (no JSON tree
/// is built); what is stored and hashed are the pushed bytes, unknown
/// fields included.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    schema_version: Option<u64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<Map<String, Value>>,
    /// Docker schema 1 (refused on push; read by garbage collection and
    /// the storage check in trees distribution wrote).
    fs_layers: Option<Vec<FsLayer>>,
}

/// A Docker schema 1 layer entry.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FsLayer {
    #[serde(deserialize_with = "digest_field")]
    blob_sum: Digest,
}

/// What a stored manifest references, for garbage collection and the
/// storage check.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct References {
    /// Blobs the repository must hold: the config and every layer that is
    /// not foreign, or schema 1's `fsLayers`.
    pub blobs: Vec<Digest>,
    /// Foreign layers (a non-empty `urls`, as on push): their bytes live
    /// elsewhere, so their blobs need not be here; garbage collection keeps
    /// them when they are (as distribution does).
    pub foreign: Vec<Digest>,
    /// Child manifests of an index or manifest list.
    pub manifests: Vec<Digest>,
    /// The manifest this one is attached to (`subject`).
    pub subject: Option<Digest>,
}

/// The references of stored manifest bytes: OCI and Docker schema 2
/// manifests and indexes, and Docker schema 1 (which distribution may have
/// stored).
///
/// # Errors
/// The bytes are not a manifest of one of those kinds; the message says
/// what is wrong (with the JSON path).
pub fn references(body: &[u8]) -> std::result::Result<References, String> {
    let doc: Document = from_json(body)?;
    let mut refs = References {
        subject: doc.subject.map(|s| s.digest),
        ..References::default()
    };
    match doc.schema_version {
        Some(1) => {
            let layers = doc.fs_layers.ok_or("fsLayers is missing")?;
            refs.blobs = layers.into_iter().map(|l| l.blob_sum).collect();
        }
        Some(2) => {
            // What a push reads for the manifest's kind (its mediaType, else
            // its shape, as it is served): an index's `config` or `layers`,
            // or an image manifest's `manifests`, were never checked on
            // push and reference nothing. A type that is no manifest type
            // (stored by another registry) gives everything it names.
            let index = doc
                .media_type
                .as_deref()
                .and_then(ManifestKind::from_media_type)
                .or_else(|| kind_of(doc.config.is_some(), doc.manifests.is_some()))
                .map(ManifestKind::is_index);
            if index != Some(false)
                && let Some(list) = doc.manifests
            {
                refs.manifests = list.into_iter().map(|m| m.digest).collect();
            }
            if index == Some(true) {
                return Ok(refs);
            }
            refs.blobs.extend(doc.config.map(|c| c.digest));
            for layer in doc.layers.into_iter().flatten() {
                // As on push: an empty `urls` is no promise of elsewhere.
                if layer.urls.is_some_and(|u| !u.is_empty()) {
                    refs.foreign.push(layer.digest);
                } else {
                    refs.blobs.push(layer.digest);
                }
            }
        }
        _ => return Err("schemaVersion must be 1 or 2".into()),
    }
    Ok(refs)
}

/// An OCI content descriptor: the fields every one must have, and `urls`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    #[serde(deserialize_with = "digest_field")]
    digest: Digest,
    /// Required, and a non-negative integer; not used further.
    #[serde(rename = "size")]
    _size: u64,
    urls: Option<Vec<String>>,
}

fn digest_field<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Only what a stored manifest's media type is decided by; everything else
/// is skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaTypeOnly {
    media_type: Option<String>,
    config: Option<IgnoredAny>,
    manifests: Option<IgnoredAny>,
}

/// Deserializes `T` from JSON bytes; an error names the JSON path that is
/// wrong (`layers[2].digest: …`, `config.mediaType is missing`).
fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> std::result::Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return format!("the manifest is not valid JSON: {inner}");
        }
        // serde_json appends " at line L column C": the path says where.
        let message = inner.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m);
        let at_root = path == "." || path.is_empty();
        match message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            Some(field) if at_root => format!("{field} is missing"),
            Some(field) => format!("{path}.{field} is missing"),
            None if at_root => format!("the manifest must be a JSON object ({message})"),
            None => format!("{path}: {message}"),
        }
    })?;
    de.end()
        .map_err(|e| format!("the manifest is not valid JSON: {e}"))?;
    Ok(value)
}

fn kind_of(has_config: bool, has_manifests: bool) -> Option<ManifestKind> {
    if has_manifests {
        Some(ManifestKind::OciIndex)
    } else if has_config {
        Some(ManifestKind::OciManifest)
    } else {
        None
    }
}

/// The media type a client meant by `Content-Type`, without parameters.
fn bare_media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Parses and validates a pushed manifest or index (`content_type` is the
/// request's `Content-Type`, if any).
///
/// # Errors
/// [`RegistryError::ManifestInvalid`] saying what is wrong.
pub(crate) fn parse(body: &[u8], content_type: Option<&str>) -> Result<Parsed> {
    let doc: Document = from_json(body).map_err(invalid)?;
    match doc.schema_version {
        Some(2) => {}
        Some(1) => {
            return Err(invalid(
                "Docker schema 1 manifests are not supported: push as Docker schema 2 or OCI",
            ));
        }
        _ => return Err(invalid("schemaVersion must be 2")),
    }
    let body_type = doc.media_type.as_deref();
    let header_type = content_type
        .map(bare_media_type)
        .filter(|t| ManifestKind::from_media_type(t).is_some());
    if let (Some(b), Some(h)) = (body_type, header_type)
        && b != h
    {
        return Err(invalid(format!(
            "Content-Type {h} does not match the manifest's mediaType {b}"
        )));
    }
    let kind = match body_type.or(header_type) {
        Some(t) => ManifestKind::from_media_type(t).ok_or_else(|| {
            invalid(format!(
                "unsupported manifest media type {t:?} (OCI image manifest or index, Docker schema 2 manifest or list are)"
            ))
        })?,
        None => kind_of(doc.config.is_some(), doc.manifests.is_some()).ok_or_else(|| {
            invalid("no mediaType, and neither `config` nor `manifests`: not a manifest")
        })?,
    };
    let mut parsed = Parsed {
        kind,
        blobs: Vec::new(),
        manifests: Vec::new(),
        subject: doc.subject.map(|s| s.digest),
        artifact_type: None,
        annotations: doc.annotations,
        foreign: Vec::new(),
    };
    if kind.is_index() {
        let list = doc
            .manifests
            .ok_or_else(|| invalid("manifests must be a list of descriptors"))?;
        parsed.manifests = list.into_iter().map(|m| m.digest).collect();
        parsed.artifact_type = doc.artifact_type;
    } else {
        let config = doc.config.ok_or_else(|| invalid("config is missing"))?;
        parsed.blobs.push(config.digest);
        // artifactType, else the config's media type (image manifests).
        parsed.artifact_type = doc.artifact_type.or(Some(config.media_type));
        let layers = doc
            .layers
            .ok_or_else(|| invalid("layers must be a list of descriptors"))?;
        for (i, layer) in layers.into_iter().enumerate() {
            // Foreign (non-distributable) layers live elsewhere, at `urls`;
            // an empty list is no such promise, so the blob must be here.
            match layer.urls {
                Some(urls) if !urls.is_empty() => {
                    parsed.foreign.push((format!("layers[{i}]"), urls));
                }
                _ => parsed.blobs.push(layer.digest),
            }
        }
    }
    Ok(parsed)
}

/// The media type of stored manifest bytes: its `mediaType`, else inferred
/// from its shape (read without building the document).
pub fn media_type_of(body: &[u8]) -> String {
    let Ok(doc) = from_json::<MediaTypeOnly>(body) else {
        return ManifestKind::OciManifest.media_type().to_owned();
    };
    match doc.media_type {
        Some(t) => t,
        None => kind_of(doc.config.is_some(), doc.manifests.is_some())
            .unwrap_or(ManifestKind::OciManifest)
            .media_type()
            .to_owned(),
    }
}

/// Result of a manifest push.
#[derive(Clone, Debug)]
pub struct PutManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its `subject`, if it has one (sent back as `OCI-Subject`).
    pub subject: Option<Digest>,
}

impl Registry {
    /// Validates and stores a manifest under `reference` (a tag, or the
    /// digest it must hash to).
    ///
    /// Every blob it references must be in `name`, and every child of an
    /// index must be a manifest of `name`; `subject` need not exist.
    ///
    /// # Errors
    /// `ManifestInvalid` (not JSON, wrong shape, type mismatch),
    /// `ManifestTooLarge`,
    /// `DigestMismatch`, `ManifestBlobUnknown`, `Storage`.
    pub async fn put_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest> {
        self.store_manifest(name, reference, content_type, body, true)
            .await
    }

    /// Stores a manifest that a pull-through cache fetched from its
    /// upstream registry: checked like a push (JSON shape, size, digest)
    /// but not for the blobs and children it references, which the cache
    /// fetches when they are asked for, nor against
    /// `validation.manifests.urls` (upstream decided what it serves).
    ///
    /// # Errors
    /// As [`Registry::put_manifest`], without `ManifestBlobUnknown`.
    pub async fn cache_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest> {
        self.store_manifest(name, reference, content_type, body, false)
            .await
    }

    /// [`Registry::put_manifest`] (`pushed`), or [`Registry::cache_manifest`].
    async fn store_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        pushed: bool,
    ) -> Result<PutManifest> {
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::ManifestTooLarge(body.len().to_string()));
        }
        let parsed = parse(&body, content_type)?;
        if pushed {
            let references = parsed.blobs.len() + parsed.manifests.len() + parsed.foreign.len();
            let most = self.settings.max_manifest_references;
            if references > most {
                return Err(invalid(format!(
                    "{references} references (config, layers or manifests), more than \
                     validation.manifests.maxreferences allows ({most})"
                )));
            }
            for (at, urls) in &parsed.foreign {
                self.settings.manifest_urls.check(at, urls)?;
            }
        }
        let digest = match reference {
            Reference::Digest(expected) => {
                super::expect_digest(expected, Digest::of(expected.algorithm(), &body))?
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
        };
        if pushed {
            self.check_references(name, &parsed).await?;
        }
        // Bytes that garbage collection is deleting are written afresh
        // once it is done.
        self.gc_fence.wait_until_undoomed(Some(name), &digest).await;
        // In this order, each visible only once the ones before it are
        // durable (see the README's Durability section); one driver call,
        // so the filesystem flushes all their files in one barrier.
        let mut items = Vec::with_capacity(5);
        if self.stored_blob_size(&digest).await? != Some(body.len() as u64) {
            items.push((layout::blob_data(&digest), body));
        }
        let link = Bytes::from(layout::link_content(&digest));
        items.push((layout::revision_link(name, &digest), link.clone()));
        if let Some(subject) = &parsed.subject {
            items.push((layout::referrer_link(name, subject, &digest), link.clone()));
        }
        if let Reference::Tag(tag) = reference {
            items.push((layout::tag_index_link(name, tag, &digest), link.clone()));
            items.push((layout::tag_current_link(name, tag), link));
        }
        self.driver.put_contents_in_order(items).await?;
        self.note_manifest_stored(name).await?;
        tracing::debug!(kind = ?parsed.kind, %digest, %name, "manifest stored");
        Ok(PutManifest {
            digest,
            subject: parsed.subject,
        })
    }

    /// Fails with `ManifestBlobUnknown` naming the first (in manifest
    /// order) of `parsed`'s blobs or child manifests that is not in `name`.
    /// Each distinct digest is looked up once, [`REFERENCE_LOOKUPS`] at a
    /// time.
    async fn check_references(&self, name: &RepoName, parsed: &Parsed) -> Result<()> {
        let mut seen = HashSet::new();
        let blobs = parsed.blobs.iter().map(|d| (d, false));
        let children = parsed.manifests.iter().map(|d| (d, true));
        let distinct = blobs.chain(children).filter(|(d, _)| seen.insert(*d));
        let lookups: Vec<_> = distinct
            .map(|(d, manifest)| self.has_reference(name, d, manifest))
            .collect();
        let mut lookups = stream::iter(lookups).buffered(REFERENCE_LOOKUPS);
        while let Some(lookup) = lookups.next().await {
            let (d, found) = lookup?;
            if !found {
                return Err(RegistryError::ManifestBlobUnknown(d.clone()));
            }
        }
        Ok(())
    }

    /// Whether `d` is in `name`: a manifest, or else a blob; with the
    /// digest, for [`Registry::check_references`].
    async fn has_reference<'a>(
        &self,
        name: &RepoName,
        d: &'a Digest,
        manifest: bool,
    ) -> Result<(&'a Digest, bool)> {
        let found = if manifest {
            self.has_manifest(name, d).await?
        } else {
            match self.stat_blob(name, d).await {
                Ok(_) => true,
                Err(RegistryError::BlobUnknown(_)) => false,
                Err(e) => return Err(e),
            }
        };
        Ok((d, found))
    }

    /// Whether `d` is a manifest of `name`.
    async fn has_manifest(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        // One that garbage collection is deleting is gone already.
        if !self.gc_fence.use_manifest(name, d) {
            return Ok(false);
        }
        Ok(self
            .read_link(&layout::revision_link(name, d))
            .await?
            .as_ref()
            == Some(d))
    }

    /// The digest `reference` names in `name`: a manifest the repository
    /// holds (its revision link is there).
    ///
    /// A tag whose manifest was deleted names nothing. Deleting a manifest
    /// deletes the tags that point at it as the tag listing shows them, and
    /// on storage whose listings trail the writes (Swift; the `faults`
    /// middleware's `lag`) a tag pushed a moment before is not listed yet,
    /// so it stays behind; distribution, whose GET by tag goes through the
    /// revision link too, answers it as unknown as well.
    ///
    /// # Errors
    /// `ManifestUnknown`, `NameUnknown` (no such repository), `Storage`.
    pub async fn resolve(&self, name: &RepoName, reference: &Reference) -> Result<Digest> {
        let found = match reference {
            Reference::Tag(tag) => {
                match self.read_link(&layout::tag_current_link(name, tag)).await? {
                    Some(d) if self.has_manifest(name, &d).await? => Some(d),
                    _ => None,
                }
            }
            Reference::Digest(d) => self.has_manifest(name, d).await?.then(|| d.clone()),
        };
        match found {
            Some(d) => Ok(d),
            None => Err(self.unknown(name, reference).await?),
        }
    }

    /// The error for a `reference` that names nothing in `name`:
    /// `NameUnknown` when the repository does not exist, else
    /// `ManifestUnknown`.
    async fn unknown(&self, name: &RepoName, reference: &Reference) -> Result<RegistryError> {
        Ok(if self.repository_exists(name).await? {
            RegistryError::ManifestUnknown(reference.to_string())
        } else {
            RegistryError::NameUnknown(name.clone())
        })
    }

    /// The manifest `reference` names.
    ///
    /// # Errors
    /// As [`Registry::resolve`]; `ManifestUnknown` also when the revision
    /// is linked but its bytes are gone.
    pub async fn get_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let digest = self.resolve(name, reference).await?;
        let body = match self.driver.get_content(layout::blob_data(&digest)).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(RegistryError::ManifestUnknown(reference.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let media_type = media_type_of(&body);
        Ok(StoredManifest {
            digest,
            body,
            media_type,
        })
    }

    /// Deletes a tag, or a manifest by digest together with every tag that
    /// points at it and its referrers entry.
    ///
    /// # Errors
    /// `Unsupported` if deletes are disabled, `ManifestUnknown`, `Storage`.
    pub async fn delete_manifest(&self, name: &RepoName, reference: &Reference) -> Result<()> {
        self.check_delete_enabled()?;
        if let Reference::Tag(tag) = reference {
            // Whatever the tag names, even a manifest deleted already (see
            // `resolve`): a tag left behind can be deleted.
            if self
                .read_link(&layout::tag_current_link(name, tag))
                .await?
                .is_none()
            {
                return Err(self.unknown(name, reference).await?);
            }
            return self.delete_if_exists(&layout::tag_dir(name, tag)).await;
        }
        let digest = self.resolve(name, reference).await?;
        let subject = match self.driver.get_content(layout::blob_data(&digest)).await {
            Ok(body) => parse(&body, None).ok().and_then(|p| p.subject),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let link = layout::revision_link(name, &digest);
        self.driver.delete(link.trim_end_matches("/link")).await?;
        for tag in self.tags(name).await.unwrap_or_default().iter() {
            let Ok(tag) = Tag::parse(tag) else { continue };
            if self
                .read_link(&layout::tag_current_link(name, &tag))
                .await?
                .as_ref()
                == Some(&digest)
            {
                self.delete_if_exists(&layout::tag_dir(name, &tag)).await?;
            }
        }
        if let Some(subject) = subject {
            let link = layout::referrer_link(name, &subject, &digest);
            self.delete_if_exists(link.trim_end_matches("/link"))
                .await?;
        }
        self.forget_if_no_manifests(&[name]).await;
        Ok(())
    }

    /// One page of the manifests of `name` whose `subject` is `subject`,
    /// sorted by digest, optionally only those of `artifact_type`, starting
    /// after the digest `last`. A page holds descriptors of at most
    /// [`REFERRERS_PAGE_BYTES`] of JSON (and at least one); manifests are
    /// read only until the page is full. The second value is the digest to
    /// continue after, when more may follow.
    ///
    /// An unknown subject or repository gives an empty list, as the spec asks.
    ///
    /// # Errors
    /// `Storage`.
    pub async fn referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&Digest>,
    ) -> Result<(Vec<Referrer>, Option<Digest>)> {
        let dir = layout::referrers_dir(name, subject);
        let algs = match self.driver.list(&dir).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => return Ok((Vec::new(), None)),
            Err(e) => return Err(e.into()),
        };
        // The candidates, from the index's directory names alone.
        let mut candidates = Vec::new();
        for alg_dir in algs {
            let entries = match self.driver.list(alg_dir.as_str()).await {
                Ok(e) => e,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let Some(alg) = alg_dir.file_name() else {
                    continue;
                };
                let Some(hex) = entry.file_name() else {
                    continue;
                };
                if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>()
                    && last.is_none_or(|l| d > *l)
                {
                    candidates.push((d, entry));
                }
            }
        }
        candidates.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (_, entry) in &candidates {
            let Some(link) = self.read_link(&format!("{entry}/link")).await? else {
                continue;
            };
            // Deleted behind the index's back (e.g. by distribution's GC).
            let Ok(m) = self.get_manifest(name, &Reference::Digest(link)).await else {
                continue;
            };
            let Ok(parsed) = parse(&m.body, None) else {
                continue;
            };
            if parsed.subject.as_ref() != Some(subject) {
                continue;
            }
            if let Some(want) = artifact_type
                && parsed.artifact_type.as_deref() != Some(want)
            {
                continue;
            }
            let r = Referrer {
                media_type: m.media_type,
                size: m.body.len() as u64,
                digest: m.digest,
                artifact_type: parsed.artifact_type,
                annotations: parsed.annotations,
            };
            let len = r.to_descriptor().to_string().len() + 1;
            if !out.is_empty() && bytes + len > REFERRERS_PAGE_BYTES {
                // This one starts the next page.
                let next = out.last().map(|r: &Referrer| r.digest.clone());
                return Ok((out, next));
            }
            bytes += len;
            out.push(r);
        }
        Ok((out, None))
    }
}

/// Most bytes of descriptor JSON in one referrers response (one descriptor
/// more than this is sent alone): the rest follows on pages linked by
/// `Link: <…>; rel="next"`, so a subject with many large referrers never
/// builds a response of unbounded size.
pub const REFERRERS_PAGE_BYTES: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn media_type_comes_from_body_or_header_and_they_must_agree() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{EMPTY}","size":0}},"layers":[]}}"#
        );
        let p = parse(
            m.as_bytes(),
            Some(ManifestKind::DockerManifest.media_type()),
        )
        .unwrap();
        assert_eq!(p.kind, ManifestKind::DockerManifest);
        let p = parse(m.as_bytes(), Some("application/json")).unwrap();
        assert_eq!(p.kind, ManifestKind::OciManifest);
        let with_type = m.replacen(
            "{",
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            1,
        );
        let e = parse(
            with_type.as_bytes(),
            Some(ManifestKind::DockerManifest.media_type()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
    }

    #[test]
    fn references_name_foreign_layers_apart() {
        let other = format!("sha256:{}", "a".repeat(64));
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{EMPTY}","size":0}},"layers":[{{"mediaType":"x","digest":"{other}","size":1,"urls":["https://example.com/l"]}},{{"mediaType":"x","digest":"{EMPTY}","size":0,"urls":[]}}]}}"#
        );
        let r = references(m.as_bytes()).unwrap();
        let empty: Digest = EMPTY.parse().unwrap();
        assert_eq!(r.blobs, vec![empty.clone(), empty]);
        assert_eq!(r.foreign, vec![other.parse::<Digest>().unwrap()]);
    }

    /// References follow the manifest's kind as a push does: an index's
    /// stray `config` and `layers` (found by fuzzing: a foreign layer in an
    /// index) and a manifest's stray `manifests` reference nothing, so the
    /// storage check does not ask for blobs no push required.
    #[test]
    fn references_read_only_what_the_kind_has() {
        let other = format!("sha256:{}", "a".repeat(64));
        let desc =
            |d: &str, urls: &str| format!(r#"{{"mediaType":"x","digest":"{d}","size":1{urls}}}"#);
        let foreign = desc(&other, r#","urls":["https://example.com/l"]"#);
        let plain = desc(EMPTY, "");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{plain}],"config":{plain},"layers":[{foreign},{plain}]}}"#
        );
        let r = references(index.as_bytes()).unwrap();
        let empty: Digest = EMPTY.parse().unwrap();
        assert_eq!(r.manifests, vec![empty.clone()]);
        assert!(r.blobs.is_empty() && r.foreign.is_empty(), "{r:?}");
        let pushed = parse(index.as_bytes(), None).unwrap();
        assert_eq!((pushed.blobs.len(), pushed.foreign.len()), (0, 0));
        // Without a mediaType, `manifests` makes it an index all the same.
        let shaped = index.replace(
            r#""mediaType":"application/vnd.oci.image.index.v1+json","#,
            "",
        );
        assert_eq!(references(shaped.as_bytes()).unwrap(), r);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{plain},"layers":[{foreign}],"manifests":[{plain}]}}"#
        );
        let r = references(manifest.as_bytes()).unwrap();
        assert!(r.manifests.is_empty(), "{r:?}");
        assert_eq!(r.blobs, vec![empty]);
        assert_eq!(r.foreign, vec![other.parse::<Digest>().unwrap()]);
    }

    #[test]
    fn broken_manifests_are_named() {
        for (body, says) in [
            ("{", "not valid JSON"),
            ("[]", "JSON object"),
            (r#"{"schemaVersion":1}"#, "schema 1"),
            (r#"{"schemaVersion":2,"config":{}}"#, "config.mediaType"),
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:0","size":1},"layers":[]}"#,
                "config.digest",
            ),
            (
                &format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{EMPTY}","size":0}},"layers":[{{"mediaType":"x","digest":"{EMPTY}","size":-1}}]}}"#
                ),
                "layers[0].size",
            ),
            (r#"{"schemaVersion":2}"#, "not a manifest"),
        ] {
            let e = parse(body.as_bytes(), None).unwrap_err().to_string();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    /// A cached manifest is stored without its blobs (a push is refused
    /// for them), still checked against its digest, and served after.
    #[tokio::test]
    async fn a_cached_manifest_needs_no_blobs_but_its_digest_must_match() {
        let driver = crate::registry::inmemory_for_tests().await;
        let reg = Registry::new(driver, super::super::Settings::default());
        let name = RepoName::parse("cache/app").unwrap();
        let missing = Digest::of(Algorithm::Sha256, b"not here");
        let body = Bytes::from(format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{missing}\",\"size\":8}},\"layers\":[]}}",
            ManifestKind::OciManifest.media_type()
        ));
        let d = Digest::of(Algorithm::Sha256, &body);
        let by_digest = Reference::Digest(d.clone());
        assert!(matches!(
            reg.put_manifest(&name, &by_digest, None, body.clone())
                .await,
            Err(RegistryError::ManifestBlobUnknown(_))
        ));
        let wrong = Reference::Digest(Digest::of(Algorithm::Sha256, b"other"));
        assert!(matches!(
            reg.cache_manifest(&name, &wrong, None, body.clone()).await,
            Err(RegistryError::DigestMismatch { .. })
        ));
        let tag = Reference::parse("latest").unwrap();
        let stored = reg
            .cache_manifest(&name, &tag, None, body.clone())
            .await
            .unwrap();
        assert_eq!(stored.digest, d);
        assert_eq!(reg.get_manifest(&name, &tag).await.unwrap().body, body);
        assert_eq!(reg.get_manifest(&name, &by_digest).await.unwrap().digest, d);
    }
}
