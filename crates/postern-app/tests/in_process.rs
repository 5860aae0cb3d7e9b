//! The application started in-process on port 0, as the binary starts it: a real client logs
//! in through the proxy to a real PostgreSQL, the admin API answers on its own listener, and
//! a shutdown drains and returns.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use postern_testkit::{shared_pg, InProcessGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_gateway_runs_in_process_on_port_0() {
    let pg = shared_pg().await;
    let gateway = InProcessGateway::start().await;
    let key = gateway.provision(&pg.address());

    let (client, connection) =
        tokio_postgres::connect(&gateway.conninfo(&key), tokio_postgres::NoTls)
            .await
            .expect("log in through the in-process gateway");
    let connection = tokio::spawn(connection);
    let row = client
        .query_one("SELECT current_user::text, count(*) FROM items", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "app_rw",
        "the injected upstream user"
    );
    assert_eq!(row.get::<_, i64>(1), 10);

    let admin = gateway.admin;
    let ready = tokio::task::spawn_blocking(move || {
        ureq::get(&format!("http://{admin}/readyz"))
            .call()
            .map(|response| response.status().as_u16())
    })
    .await
    .unwrap()
    .expect("the admin API answers");
    assert_eq!(ready, 200);

    drop(client);
    let _ = connection.await;
    gateway.stop().await.expect("a clean shutdown");
}
