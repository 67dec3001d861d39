//! Real MariaDB for the MySQL tests: a fresh database per test, and a TCP relay the test can
//! cut and restore to make the database unreachable.

use std::net::SocketAddr;

use sqlx::mysql::MySqlPool;
use sqlx::{AssertSqlSafe, Executor};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Where the MySQL tests find MariaDB (`make test` sets it; this is the default too).
pub fn server_url() -> String {
    std::env::var("CHAT_PROXY_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

pub struct TestDatabase {
    pub name: String,
    admin: MySqlPool,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let url = server_url();
        let admin = MySqlPool::connect(&url).await.unwrap_or_else(|e| {
            panic!("MariaDB must be reachable at {url} for the MySQL tests (scripts/mariadb-up.sh): {e}")
        });
        let name = format!(
            "chat_proxy_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        admin
            .execute(AssertSqlSafe(format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )))
            .await
            .expect("create the test database");
        Self { name, admin }
    }

    /// The database's URL, reached through `addr` (MariaDB itself, or a relay).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let mut url = url::Url::parse(&server_url()).expect("valid URL");
        url.set_ip_host(addr.ip()).expect("IP host");
        url.set_port(Some(addr.port())).expect("port");
        url.set_path(&self.name);
        url.to_string()
    }

    pub fn url(&self) -> String {
        self.url_via(server_addr())
    }

    pub async fn drop_database(self) {
        let _ = self
            .admin
            .execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS `{}`",
                self.name
            )))
            .await;
        self.admin.close().await;
    }
}

/// MariaDB's own address, from the test URL.
pub fn server_addr() -> SocketAddr {
    let url = url::Url::parse(&server_url()).expect("valid URL");
    let host = url.host_str().expect("host");
    let port = url.port().unwrap_or(3306);
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{port}").parse().expect("an IP address")
}

/// A TCP relay to MariaDB. `set_up(false)` cuts every open connection and refuses new ones,
/// as a database outage would; `set_up(true)` restores it.
pub struct Relay {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let (up, watcher) = watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*watcher.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut watcher = watcher.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watcher.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up }
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}
