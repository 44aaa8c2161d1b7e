//! Backup destinations: `s3://bucket/prefix` (any S3-compatible store) or `file:///path`, both
//! through `object_store`. Layout under the prefix: `<name>.cbk` (archive) and `<name>.json`
//! (manifest, written after the archive), and `latest.pointer` (the authenticated pointer to the
//! newest backup, rewritten after each manifest; [`crate::auth`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{
    ClientOptions, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};

use crate::auth::LatestPointer;
use crate::manifest::{sort_newest_first, valid_name, Manifest};

pub const ARCHIVE_SUFFIX: &str = ".cbk";
pub const MANIFEST_SUFFIX: &str = ".json";
/// The `latest` pointer object (no `.json` suffix: never listed as a backup, also by older agents).
pub const POINTER_OBJECT: &str = "latest.pointer";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid destination: {0} (expected s3://bucket/prefix or file:///absolute/path)")]
    Destination(&'static str),
    #[error("cannot prepare destination directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("object store: {0}")]
    Object(#[from] object_store::Error),
    #[error("backup {0} not found")]
    NotFound(String),
    #[error("no backups found at the destination")]
    Empty,
    #[error("invalid backup name (letters, digits, '.', '_', '-' only)")]
    Name,
    #[error("manifest {0} is not valid")]
    Manifest(String),
    #[error(
        "the latest pointer is not valid JSON of its format (modified?); restore a backup by name"
    )]
    Pointer,
}

/// A parsed `--destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    S3 { bucket: String, prefix: String },
    File { path: PathBuf },
}

impl Destination {
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let url = url::Url::parse(s).map_err(|_| StoreError::Destination("not a URL"))?;
        match url.scheme() {
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or(StoreError::Destination("missing bucket"))?
                    .to_string();
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(StoreError::Destination(
                        "credentials belong in AWS_* environment variables, not the URL",
                    ));
                }
                let prefix = url.path().trim_matches('/').to_string();
                Ok(Destination::S3 { bucket, prefix })
            }
            "file" => {
                let path = url.to_file_path().map_err(|_| {
                    StoreError::Destination("file URL must be file:///absolute/path")
                })?;
                Ok(Destination::File { path })
            }
            _ => Err(StoreError::Destination("unsupported scheme")),
        }
    }
}

/// An opened destination.
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Option<ObjPath>,
}

/// S3 part size: S3 needs at least 5 MiB for all parts but the last.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded concurrently; together with PART_SIZE this bounds upload memory.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;

impl Store {
    /// Open a destination. S3 settings come from the usual `AWS_*` environment variables
    /// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION/AWS_DEFAULT_REGION,
    /// AWS_ENDPOINT, AWS_VIRTUAL_HOSTED_STYLE_REQUEST); `s3_endpoint` overrides the endpoint and
    /// selects path-style requests unless AWS_VIRTUAL_HOSTED_STYLE_REQUEST is set.
    pub fn open(destination: &str, s3_endpoint: Option<&str>) -> Result<Self, StoreError> {
        match Destination::parse(destination)? {
            Destination::S3 { bucket, prefix } => {
                // object_store's default 30 s limit covers a whole request, body included: a
                // multi-GB archive download would be cut off. Bound only connecting; the backup
                // Job's activeDeadlineSeconds bounds the whole run.
                let client = ClientOptions::new()
                    .with_timeout_disabled()
                    .with_connect_timeout(Duration::from_secs(10));
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_client_options(client);
                if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                {
                    builder = builder.with_region("us-east-1");
                }
                if let Some(endpoint) = s3_endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                    // Path-style for custom endpoints unless AWS_VIRTUAL_HOSTED_STYLE_REQUEST says otherwise.
                    if std::env::var_os("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_none() {
                        builder = builder.with_virtual_hosted_style_request(false);
                    }
                }
                let store = builder.build()?;
                Ok(Self {
                    inner: Arc::new(store),
                    prefix: (!prefix.is_empty()).then(|| ObjPath::from(prefix)),
                })
            }
            Destination::File { path } => {
                std::fs::create_dir_all(&path).map_err(|source| StoreError::Dir {
                    path: path.display().to_string(),
                    source,
                })?;
                let store = LocalFileSystem::new_with_prefix(&path)?;
                Ok(Self {
                    inner: Arc::new(store),
                    prefix: None,
                })
            }
        }
    }

    fn object(&self, file: &str) -> ObjPath {
        match &self.prefix {
            Some(p) => p.clone().join(file),
            None => ObjPath::from(file),
        }
    }

    pub fn archive_object(name: &str) -> String {
        format!("{name}{ARCHIVE_SUFFIX}")
    }

    /// Start a multipart upload of the archive for `name`.
    pub async fn upload_archive(&self, name: &str) -> Result<WriteMultipart, StoreError> {
        let upload = self
            .inner
            .put_multipart(&self.object(&Self::archive_object(name)))
            .await?;
        Ok(WriteMultipart::new_with_chunk_size(upload, PART_SIZE))
    }

    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(manifest)
            .map_err(|_| StoreError::Manifest(manifest.name.clone()))?;
        self.inner
            .put(
                &self.object(&format!("{}{MANIFEST_SUFFIX}", manifest.name)),
                PutPayload::from(body),
            )
            .await?;
        Ok(())
    }

    /// Write the `latest` pointer (after the manifest it names).
    pub async fn put_pointer(&self, pointer: &LatestPointer) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(pointer).map_err(|_| StoreError::Pointer)?;
        self.inner
            .put(&self.object(POINTER_OBJECT), PutPayload::from(body))
            .await?;
        Ok(())
    }

    /// The `latest` pointer, `None` when there is none (a destination written only by agents
    /// before manifest MACs, or the pointer was deleted).
    pub async fn pointer(&self) -> Result<Option<LatestPointer>, StoreError> {
        let bytes = match self.inner.get(&self.object(POINTER_OBJECT)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| StoreError::Pointer)
    }

    async fn read_manifest(&self, location: &ObjPath, name: &str) -> Result<Manifest, StoreError> {
        let bytes = match self.inner.get(location).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::NotFound(name.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|_| StoreError::Manifest(name.to_string()))?;
        if manifest.name != name || !valid_name(&manifest.archive) {
            return Err(StoreError::Manifest(name.to_string()));
        }
        Ok(manifest)
    }

    /// All complete backups (those with a manifest), newest first.
    pub async fn list(&self) -> Result<Vec<Manifest>, StoreError> {
        let objects: Vec<_> = self.inner.list(self.prefix.as_ref()).try_collect().await?;
        let mut manifests = Vec::new();
        for meta in objects {
            let Some(file) = meta.location.filename() else {
                continue;
            };
            let Some(name) = file.strip_suffix(MANIFEST_SUFFIX) else {
                continue;
            };
            if !valid_name(name) || meta.location != self.object(file) {
                continue;
            }
            manifests.push(self.read_manifest(&meta.location, name).await?);
        }
        sort_newest_first(&mut manifests);
        Ok(manifests)
    }

    /// The manifest of `name`, or of the newest backup for `latest`.
    pub async fn manifest(&self, name: &str) -> Result<Manifest, StoreError> {
        if name == "latest" {
            return self
                .list()
                .await?
                .into_iter()
                .next()
                .ok_or(StoreError::Empty);
        }
        if !valid_name(name) {
            return Err(StoreError::Name);
        }
        self.read_manifest(&self.object(&format!("{name}{MANIFEST_SUFFIX}")), name)
            .await
    }

    /// Stream the archive of a manifest: (stored size, byte stream).
    pub async fn download(
        &self,
        manifest: &Manifest,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, StoreError>>), StoreError> {
        let location = self.object(&manifest.archive);
        let result = match self.inner.get(&location).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::NotFound(manifest.archive.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        let size = result.meta.size;
        let stream = match result.payload {
            // object_store reads local files 8 KiB at a time; read big blocks instead.
            GetResultPayload::File(file, _) => tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(file),
                1 << 20,
            )
            .map_err(|e| {
                StoreError::Object(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                })
            })
            .boxed(),
            GetResultPayload::Stream(s) => s.map_err(StoreError::from).boxed(),
        };
        Ok((size, stream))
    }

    /// Delete a backup: manifest first (so it stops being listed), then the archive.
    pub async fn delete(&self, manifest: &Manifest) -> Result<(), StoreError> {
        for object in [
            self.object(&format!("{}{MANIFEST_SUFFIX}", manifest.name)),
            self.object(&manifest.archive),
        ] {
            match self.inner.delete(&object).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_destinations() {
        assert_eq!(
            Destination::parse("s3://bucket/a/b/").expect("s3"),
            Destination::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            Destination::parse("s3://bucket").expect("s3"),
            Destination::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            Destination::parse("file:///var/backups").expect("file"),
            Destination::File {
                path: PathBuf::from("/var/backups")
            }
        );
    }

    #[test]
    fn rejects_bad_destinations() {
        for bad in [
            "",
            "/plain/path",
            "http://x/y",
            "s3:///prefix",
            "s3://key:secret@bucket/p",
        ] {
            let err = Destination::parse(bad).expect_err(bad).to_string();
            assert!(err.starts_with("invalid destination"), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
