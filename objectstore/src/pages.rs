//! The keys of one run of a walk, a page at a time, with jumps.
//!
//! A walk lists the whole subtree in byte order of keys. A visitor that
//! skips a directory (the catalog skips every repository's `_layers`,
//! `_manifests` and `_uploads`) needs none of the keys below it, but a
//! plain listing still pages through all of them: a repository of 10,000
//! tags costs 20 requests of keys that are thrown away. With the store's
//! paged listing the walk sees where each page ends; when a page ends
//! inside a skipped directory `D`, the next request starts after `D/~`
//! (past every key below `D`) instead of continuing from the page token.
//! That request costs what the next page would have cost, so a jump never
//! adds a request, and a skipped directory's keys fill at most the rest of
//! the page it starts in, however many there are.
//!
//! Some servers ignore the offset (Azurite ignores `startFrom`). The first
//! page after a jump shows it: its first key is not after the offset. The
//! listing then goes on from the page token it had, discards that page,
//! and jumps no more; the walk's filter drops the skipped directory's keys
//! as it did before. One request is lost, once per listing.

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::ObjectMeta;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;

/// Most keys handed on at once from the plain stream (stores without a
/// paged listing), which gives what it has ready.
const STREAM_BATCH: usize = 1000;

/// The keys under one prefix after an offset, in byte order, page by page.
pub(crate) enum Listing<'a> {
    /// The store's paged listing: the walk can jump.
    Pages {
        store: &'a dyn PaginatedListStore,
        /// The directory prefix with its trailing `/` (the paged API adds
        /// none), or `None` for the whole store.
        prefix: Option<String>,
        /// Keys after this one (exclusive); moved forward by jumps.
        offset: Option<String>,
        /// Where the next page starts; `None` with `more` on the first
        /// page and after a jump.
        token: Option<String>,
        /// Whether a request is still to be made.
        more: bool,
        /// The page token a jump replaced, kept until the first page
        /// after it shows whether the server honoured the offset.
        before_jump: Option<Option<String>>,
        /// False once the server was seen ignoring an offset.
        can_jump: bool,
    },
    /// Every key, from [`object_store::ObjectStore::list`], in batches.
    Stream(BoxStream<'a, Vec<object_store::Result<ObjectMeta>>>),
}

impl<'a> Listing<'a> {
    /// The plain listing `keys` (no jumps).
    pub(crate) fn stream(keys: BoxStream<'a, object_store::Result<ObjectMeta>>) -> Self {
        Listing::Stream(keys.ready_chunks(STREAM_BATCH).boxed())
    }

    /// The paged listing of `store` under `prefix` (a directory key, or
    /// `None` for the whole store), after `offset`.
    pub(crate) fn paged(
        store: &'a dyn PaginatedListStore,
        prefix: Option<&Path>,
        offset: Option<&Path>,
    ) -> Self {
        Listing::Pages {
            store,
            prefix: prefix.map(|p| format!("{p}/")),
            offset: offset.map(|o| o.as_ref().to_owned()),
            token: None,
            more: true,
            before_jump: None,
            can_jump: true,
        }
    }

    /// The next keys, in byte order; `None` after the last. Keys not after
    /// the listing's offset may come too (servers that ignore it): the
    /// caller drops them, see [`Listing::offset`].
    ///
    /// # Errors
    /// The store's error for a failed request; the listing ends with it.
    pub(crate) async fn next(&mut self) -> Option<object_store::Result<Vec<ObjectMeta>>> {
        let (store, prefix, offset, token, more, before_jump, can_jump) = match self {
            Listing::Stream(batches) => {
                return batches.next().await.map(|b| b.into_iter().collect());
            }
            Listing::Pages {
                store,
                prefix,
                offset,
                token,
                more,
                before_jump,
                can_jump,
            } => (store, prefix, offset, token, more, before_jump, can_jump),
        };
        loop {
            if !*more {
                return None;
            }
            let opts = PaginatedListOptions {
                offset: offset.clone(),
                page_token: token.clone(),
                ..Default::default()
            };
            let page = match store.list_paginated(prefix.as_deref(), opts).await {
                Ok(page) => page,
                Err(e) => {
                    *more = false;
                    return Some(Err(e));
                }
            };
            if let Some(resume) = before_jump.take() {
                let ignored = match (page.result.objects.first(), offset.as_deref()) {
                    (Some(first), Some(o)) => first.location.as_ref() <= o,
                    _ => false,
                };
                if ignored {
                    // Back to where the listing was; the keys up to the
                    // offset that it lists again are dropped by the caller.
                    tracing::debug!(
                        prefix = prefix.as_deref().unwrap_or(""),
                        "the store ignores listing offsets; the walk lists skipped directories"
                    );
                    *can_jump = false;
                    *token = resume;
                    continue;
                }
            }
            *token = page.page_token;
            *more = token.is_some();
            return Some(Ok(page.result.objects));
        }
    }

    /// Makes the next page start after `key` instead of where the listing
    /// left off, when that is ahead: one request then passes over every
    /// key up to `key`. Does nothing for a stream, after the last page, or
    /// once the server was seen ignoring offsets.
    pub(crate) fn jump_past(&mut self, key: String) {
        if let Listing::Pages {
            offset,
            token,
            more: true,
            before_jump,
            can_jump: true,
            ..
        } = self
            && offset.as_deref().is_none_or(|o| o < key.as_str())
        {
            // Two jumps before a page: the token to go back to is the
            // first one's.
            let resume = token.take();
            before_jump.get_or_insert(resume);
            *offset = Some(key);
        }
    }

    /// The key the listing lists after (exclusive): what comes at or
    /// before it is not to be walked.
    pub(crate) fn offset(&self) -> Option<&str> {
        match self {
            Listing::Pages { offset, .. } => offset.as_deref(),
            Listing::Stream(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use object_store::ListResult;
    use object_store::list::PaginatedListResult;

    use super::*;

    /// Pages of `page` keys over a sorted key list; the page token is the
    /// index of the next key. Offsets are honoured unless `ignores_offset`
    /// (as Azurite ignores `startFrom`).
    struct Keys {
        keys: Vec<String>,
        page: usize,
        ignores_offset: bool,
        requests: AtomicUsize,
    }

    impl Keys {
        fn new(ignores_offset: bool) -> Self {
            let mut keys = vec!["x/a".to_owned(), "x/c".to_owned()];
            keys.extend((0..10).map(|i| format!("x/big/{i}")));
            keys.sort();
            Keys {
                keys,
                page: 3,
                ignores_offset,
                requests: AtomicUsize::new(0),
            }
        }
    }

    #[async_trait]
    impl PaginatedListStore for Keys {
        async fn list_paginated(
            &self,
            prefix: Option<&str>,
            opts: PaginatedListOptions,
        ) -> object_store::Result<PaginatedListResult> {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let under: Vec<&String> = self
                .keys
                .iter()
                .filter(|k| prefix.is_none_or(|p| k.starts_with(p)))
                .collect();
            let start = match (opts.page_token, opts.offset) {
                (Some(t), _) => t.parse().unwrap_or(usize::MAX),
                (None, Some(o)) if !self.ignores_offset => {
                    under.partition_point(|k| k.as_str() <= o.as_str())
                }
                _ => 0,
            };
            let end = (start + self.page).min(under.len());
            let objects = under[start.min(end)..end]
                .iter()
                .map(|k| ObjectMeta {
                    location: Path::from(k.as_str()),
                    last_modified: Default::default(),
                    size: 0,
                    e_tag: None,
                    version: None,
                })
                .collect();
            Ok(PaginatedListResult {
                result: ListResult {
                    common_prefixes: Vec::new(),
                    objects,
                    extensions: Default::default(),
                },
                page_token: (end < under.len()).then(|| end.to_string()),
            })
        }
    }

    /// Lists `keys` under `x/`, jumping past `x/big/~` after every page
    /// that ends inside `x/big/`, as the walk does when it skips `x/big`;
    /// returns the keys after the listing's offset and the requests sent.
    async fn list_skipping_big(keys: &Keys) -> (Vec<String>, usize) {
        let mut listing = Listing::paged(keys, Some(&Path::from("x")), None);
        let mut seen = Vec::new();
        while let Some(page) = listing.next().await {
            let page = page.expect("the fake store does not fail");
            let mut last = None;
            for meta in page {
                let key = meta.location.to_string();
                if listing.offset().is_none_or(|o| key.as_str() > o) {
                    seen.push(key.clone());
                }
                last = Some(key);
            }
            if last.is_some_and(|k| k.starts_with("x/big/")) {
                listing.jump_past("x/big/~".to_owned());
            }
        }
        (seen, keys.requests.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_page_ending_in_a_skipped_directory_is_followed_by_the_keys_after_it() {
        let keys = Keys::new(false);
        let (seen, requests) = list_skipping_big(&keys).await;
        // Pages of three: `x/a x/big/0 x/big/1`, then a jump to `x/c`.
        assert_eq!(seen, ["x/a", "x/big/0", "x/big/1", "x/c"]);
        assert_eq!(requests, 2, "a flat listing takes 4 pages of 3");
    }

    #[tokio::test]
    async fn a_store_ignoring_offsets_is_listed_on_from_where_it_was() {
        let keys = Keys::new(true);
        let (seen, requests) = list_skipping_big(&keys).await;
        // The page after the jump starts at the beginning again: it is
        // dropped, the listing goes on from its token, and the keys up to
        // the offset are filtered out; no second jump.
        assert_eq!(seen, ["x/a", "x/big/0", "x/big/1", "x/c"]);
        assert_eq!(
            requests, 5,
            "4 pages and the one lost to the ignored offset"
        );
    }

    #[tokio::test]
    async fn a_jump_backwards_does_nothing() {
        let keys = Keys::new(false);
        let mut listing = Listing::paged(&keys, Some(&Path::from("x")), Some(&Path::from("x/c")));
        listing.jump_past("x/b".to_owned());
        assert_eq!(listing.offset(), Some("x/c"));
        let page = listing.next().await.map(|p| p.map(|p| p.len()).ok());
        assert_eq!(page, Some(Some(0)), "nothing after x/c");
    }
}
