//! Several nodes on this host sharing one metadata store (PostgreSQL) and one bucket (S3):
//! the run's scale-out servers when it has them (a database and a bucket of the cluster's
//! own on them), else a PostgreSQL cluster and a moto server of the test's own. Each node has
//! its own data directory, network (`vpc_cidr`) and name; every node after the first starts
//! with the first one's master key, as an operator copies it.

use std::os::unix::fs::PermissionsExt as _;

use crate::support::backend;
use crate::support::postgres::Cluster;
use crate::support::s3::Moto;
use crate::support::server::Server;

/// The stores the nodes share, kept alive as long as the nodes.
pub struct Shared {
    postgres: Option<Cluster>,
    moto: Option<Moto>,
    /// The shared database's URL.
    url: String,
    overrides: Vec<String>,
    env: Vec<(String, String)>,
}

impl Shared {
    /// A PostgreSQL cluster and an S3 server of the test's own, whatever the run's backends:
    /// for a test that restarts or pauses them.
    pub fn start_private() -> Shared {
        let (postgres, moto) = (Cluster::start(), Moto::start());
        let (url, endpoint) = (format!("{}/postgres", postgres.server_url()), format!("http://127.0.0.1:{}", moto.port));
        Shared::on(Some(postgres), Some(moto), &url, &endpoint, "datasandbox-blobs")
    }

    /// The test's own PostgreSQL cluster (from [`Shared::start_private`]).
    pub fn postgres(&self) -> &Cluster {
        self.postgres.as_ref().expect("a private PostgreSQL cluster")
    }

    /// The test's own S3 server (from [`Shared::start_private`]).
    pub fn moto(&self) -> &Moto {
        self.moto.as_ref().expect("a private S3 server")
    }

    pub fn start() -> Shared {
        let tag = format!("{:08x}", rand_u32());
        if backend::scale_out() {
            let server = std::env::var("DATASANDBOX_TEST_POSTGRES").expect("the run's PostgreSQL");
            let endpoint = std::env::var("DATASANDBOX_TEST_S3").expect("the run's S3 server");
            let (database, bucket) = (format!("ds_nodes_{tag}"), format!("ds-nodes-{tag}"));
            backend::create_database(&server, &database);
            backend::create_bucket(&endpoint, &bucket);
            return Shared::on(None, None, &format!("{}/{database}", server.trim_end_matches('/')), &endpoint, &bucket);
        }
        let (postgres, moto) = (Cluster::start(), Moto::start());
        let (url, endpoint) = (format!("{}/postgres", postgres.server_url()), format!("http://127.0.0.1:{}", moto.port));
        Shared::on(Some(postgres), Some(moto), &url, &endpoint, "datasandbox-blobs")
    }

    fn on(postgres: Option<Cluster>, moto: Option<Moto>, url: &str, endpoint: &str, bucket: &str) -> Shared {
        let overrides = vec![
            format!("metadata.url={url}"),
            "storage.backend=s3".to_owned(),
            format!("storage.s3.endpoint={endpoint}"),
            format!("storage.s3.bucket={bucket}"),
            "storage.s3.allow_http=true".to_owned(),
        ];
        let env = vec![("AWS_ACCESS_KEY_ID".to_owned(), "testing".to_owned()), ("AWS_SECRET_ACCESS_KEY".to_owned(), "testing".to_owned())];
        Shared { postgres, moto, url: url.to_owned(), overrides, env }
    }

    /// Runs `sql` on the shared metadata store; what it printed, trimmed.
    pub fn sql(&self, sql: &str) -> String {
        backend::psql_at(&self.url, sql)
    }

    /// The overrides that put a server on the shared stores.
    pub fn overrides(&self) -> Vec<String> {
        self.overrides.clone()
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// Starts node `name` on the shared stores, with `first`'s master key if given.
    pub fn node(&self, name: &str, first: Option<&Server>, overrides: &[&str]) -> Server {
        self.try_node(name, first, overrides).unwrap_or_else(|log| panic!("node {name} did not start: {log}"))
    }

    /// Like [`Shared::node`], the node's log when it does not start.
    pub fn try_node(&self, name: &str, first: Option<&Server>, overrides: &[&str]) -> Result<Server, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(first) = first {
            copy_master_key(first, dir.path());
        }
        let mut all = self.overrides();
        all.push(format!("cluster.node={name}"));
        all.extend(overrides.iter().map(|o| (*o).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Server::try_start_in(dir, &all, &self.env())
    }
}

/// Copies a node's master key into a data directory not yet used, as an operator does.
pub fn copy_master_key(from: &Server, to: &std::path::Path) {
    let key = to.join("master.key");
    std::fs::copy(from.data_dir().join("master.key"), &key).expect("copy the master key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod the master key");
}

fn rand_u32() -> u32 {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(std::process::id(), std::time::SystemTime::now()), &mut hasher);
    std::hash::Hasher::finish(&hasher) as u32
}
