//! Checkpoint files go up as multipart uploads: a file larger than one part arrives whole, in
//! several parts, through a real S3 API (moto).

use std::sync::Arc;

use fourm_data::moto::MotoServer;
use fourm_data::{DatasetStore, StoreConfig};
use fourm_worker::checkpoint::{UploadOptions, upload_file};
use object_store::ObjectStoreExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_uploaded_in_parts() {
    let moto = MotoServer::start("fourm-upload").expect("moto starts");
    let store = DatasetStore::open_durable_with_options(
        &moto.url("ckpt"),
        &moto.options(),
        StoreConfig::default(),
    )
    .unwrap();
    let inner: Arc<dyn object_store::ObjectStore> = store.inner().clone();
    // 12 MiB in parts of 5 MiB (S3's smallest): three parts.
    let data: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
    let path = store
        .root()
        .clone()
        .join("step-1")
        .join("optimizer.safetensors");
    let options = UploadOptions {
        part_size: 5 << 20,
        concurrency: 2,
    };
    upload_file(&inner, &path, data.clone().into(), options)
        .await
        .unwrap();
    let back = inner.get(&path).await.unwrap();
    let etag = back.meta.e_tag.clone().unwrap_or_default();
    let bytes = back.bytes().await.unwrap();
    assert_eq!(bytes.len(), data.len());
    assert!(bytes[..] == data[..], "the file arrives whole");
    // S3 names a multipart object's ETag after its parts: "<md5 of the part md5s>-<parts>".
    assert!(etag.trim_matches('"').ends_with("-3"), "ETag {etag}");
}
