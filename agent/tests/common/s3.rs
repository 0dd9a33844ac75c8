//! The tests' own look into moto's S3: fixed credentials, path style, a bucket made up front.

use aws_sdk_s3::config::{Credentials, Region};
use bosun_harness::Moto;

/// An S3 client on a runtime of its own, for synchronous tests.
pub struct S3 {
    /// Runs the client's futures.
    pub rt: tokio::runtime::Runtime,
    /// The client, pointed at moto.
    pub client: aws_sdk_s3::Client,
    /// The bucket made by [`S3::new`], which [`S3::get`] and [`S3::put`] use.
    pub bucket: String,
}

impl S3 {
    /// Every key in the bucket.
    pub fn keys(&self) -> Vec<String> {
        let out = self
            .rt
            .block_on(self.client.list_objects_v2().bucket(&self.bucket).send())
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key.clone())
            .collect()
    }

    /// The keys of the bucket's multipart uploads neither completed nor aborted.
    pub fn open_uploads(&self) -> Vec<String> {
        let out = self
            .rt
            .block_on(
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .send(),
            )
            .unwrap();
        out.uploads().iter().filter_map(|u| u.key.clone()).collect()
    }

    /// A client for `moto`, with `bucket` created.
    pub fn new(moto: &Moto, bucket: &str) -> S3 {
        let http = bosun_aws::https_client();
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(moto.endpoint())
            .force_path_style(true)
            .http_client(http)
            .build();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s3 = S3 {
            rt,
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket: bucket.to_string(),
        };
        s3.rt
            .block_on(s3.client.create_bucket().bucket(bucket).send())
            .expect("creating the test bucket in moto");
        s3
    }

    /// The bytes of `key`.
    pub fn get(&self, key: &str) -> Vec<u8> {
        self.rt.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    /// Writes `body` at `key` (as another tool would).
    pub fn put(&self, key: &str, body: Vec<u8>) {
        self.rt
            .block_on(
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .body(aws_sdk_s3::primitives::ByteStream::from(body))
                    .send(),
            )
            .unwrap();
    }
}
