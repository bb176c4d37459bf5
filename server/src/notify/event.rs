//! The events and their JSON form, as distribution sends them
//! (`application/vnd.docker.distribution.events.v1+json`).

use serde::Serialize;

/// The media type of an envelope of events.
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// The media type blob events carry (distribution's: the registry does
/// not know what a blob is).
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// What happened to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A manifest or blob was stored.
    Push,
    /// A manifest or blob was served (GET, not HEAD).
    Pull,
    /// A blob was linked from another repository.
    Mount,
    /// A manifest, tag or blob was deleted.
    Delete,
}

impl Action {
    /// The action as events and `ignore.actions` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Mount => "mount",
            Action::Delete => "delete",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = ();

    /// `push`, `pull`, `mount` or `delete`; anything else is `Err(())`.
    fn from_str(s: &str) -> Result<Action, ()> {
        [Action::Push, Action::Pull, Action::Mount, Action::Delete]
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(())
    }
}

/// A content descriptor: what `target.references` lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Descriptor {
    /// Its media type.
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    #[serde(default)]
    pub size: u64,
}

/// What an event is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The media type (manifests: theirs; blobs: `application/octet-stream`;
    /// deletes: none).
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The digest; none for the delete of a tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The size in bytes (none for deletes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The size again (distribution's older name, still sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// The repository.
    pub repository: String,
    /// For a mount: the repository the blob was linked from.
    #[serde(rename = "fromRepository", skip_serializing_if = "Option::is_none")]
    pub from_repository: Option<String>,
    /// The absolute URL of the content on this registry (none for deletes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The tag, when the manifest was addressed by tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// With `events.includereferences`: what a pushed or pulled manifest
    /// references.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Descriptor>,
}

/// The request that caused an event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// The request id (`X-Request-Id`).
    pub id: String,
    /// The client's address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// The `Host` the client asked.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// The HTTP method.
    pub method: String,
    /// The `User-Agent`.
    pub useragent: String,
}

/// Who caused an event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// The authenticated user; none for anonymous requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The registry instance that made an event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Source {
    /// `hostname:port` of this instance.
    pub addr: String,
    /// Made at startup: tells restarts and instances apart.
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

/// One event, as sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unique per event (a UUID).
    pub id: String,
    /// When it happened, RFC 3339 in UTC.
    pub timestamp: String,
    /// What happened.
    pub action: Action,
    /// To what.
    pub target: Target,
    /// By which request.
    pub request: RequestRecord,
    /// By whom.
    pub actor: Actor,
    /// Made by which instance.
    pub source: Source,
}

impl Event {
    /// An event happening now, with a fresh id.
    pub fn new(
        action: Action,
        target: Target,
        request: RequestRecord,
        actor: Actor,
        source: Source,
    ) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            action,
            target,
            request,
            actor,
            source,
        }
    }
}

/// The body of one delivery: `{"events": [...]}`.
#[derive(Serialize)]
pub(super) struct Envelope<'a> {
    pub(super) events: Vec<&'a Event>,
}

/// The descriptors a manifest references, in its order: the config and
/// layers of an image manifest, the children of an index. Bytes that are
/// not such JSON give none (the manifest was validated on push, so this
/// is only stored content distribution accepted in another form).
pub fn manifest_references(body: &[u8]) -> Vec<Descriptor> {
    #[derive(serde::Deserialize)]
    struct Doc {
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    match serde_json::from_slice::<Doc>(body) {
        Ok(d) => d
            .config
            .into_iter()
            .chain(d.layers)
            .chain(d.manifests)
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_distributions_field_names() {
        let e = Event::new(
            Action::Push,
            Target {
                media_type: Some(BLOB_MEDIA_TYPE.into()),
                digest: Some("sha256:ab".into()),
                size: Some(3),
                length: Some(3),
                repository: "a/b".into(),
                from_repository: Some("c".into()),
                url: Some("http://h/v2/a/b/blobs/sha256:ab".into()),
                ..Target::default()
            },
            RequestRecord {
                id: "r".into(),
                method: "PUT".into(),
                ..RequestRecord::default()
            },
            Actor::default(),
            Source {
                addr: "h:5000".into(),
                instance_id: "i".into(),
            },
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["action"], "push");
        assert_eq!(v["target"]["mediaType"], BLOB_MEDIA_TYPE);
        assert_eq!(v["target"]["fromRepository"], "c");
        assert_eq!(v["target"]["length"], 3);
        assert!(v["target"].get("tag").is_none());
        assert!(v["target"].get("references").is_none());
        assert_eq!(v["request"]["useragent"], "");
        assert_eq!(v["actor"], serde_json::json!({}));
        assert_eq!(v["source"]["instanceID"], "i");
        assert!(humantime::parse_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());
        assert_ne!(
            e.id,
            Event::new(
                Action::Pull,
                Target::default(),
                RequestRecord::default(),
                Actor::default(),
                Source::default()
            )
            .id
        );
    }

    #[test]
    fn references_are_config_layers_and_children() {
        let r = manifest_references(
            br#"{"config":{"mediaType":"c","digest":"sha256:1","size":1},"layers":[{"mediaType":"l","digest":"sha256:2","size":2}]}"#,
        );
        assert_eq!(
            r.iter().map(|d| d.digest.as_str()).collect::<Vec<_>>(),
            ["sha256:1", "sha256:2"]
        );
        assert_eq!(r[1].size, 2);
        let r = manifest_references(
            br#"{"manifests":[{"mediaType":"m","digest":"sha256:3","size":3}]}"#,
        );
        assert_eq!(r.len(), 1);
        assert!(manifest_references(b"not json").is_empty());
    }

    #[test]
    fn actions_parse_as_spelled() {
        assert_eq!("mount".parse::<Action>(), Ok(Action::Mount));
        assert_eq!("Pull".parse::<Action>(), Err(()));
    }
}
