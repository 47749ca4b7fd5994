//! Queries reuse idle keep-alive connections to their backend (`upstream::pool`): a fake backend
//! numbers its connections, so reuse is seen from the backend's side; it also plays a backend closing
//! an idle connection just as the proxy reuses it, which must cost the client nothing.

mod util;

use std::collections::BTreeSet;

use util::site::Rig;
use util::{FakeBackend, ProxyConfig, http, inspect};

const QUERY: &str = "/query?db=db&q=SELECT+v+FROM+cpu+WHERE+time+%3E+now()+-+1h";

/// Distinct connections the fake's `/query` requests came on.
fn query_conns(fake: &FakeBackend) -> BTreeSet<u64> {
    fake.requests_to("/query").iter().map(|r| r.conn).collect()
}

fn ask(rig: &Rig, what: &str) {
    let r = http::get(&rig.addr(), QUERY);
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert_eq!(r.text(), "{\"results\":[{\"statement_id\":0}]}\n", "{what}");
}

#[test]
fn queries_reuse_backend_connections_and_survive_a_closed_one() {
    let fake = FakeBackend::start();
    let config = ProxyConfig::new().backend("f", &fake.url(), &[]).keymap("_default_", &["f"]);
    // One worker: the pool is per worker.
    let rig = Rig::start_threads(config, &[], 1);

    for i in 0..5 {
        ask(&rig, &format!("query {i}"));
    }
    assert_eq!(fake.requests_to("/query").len(), 5);
    assert_eq!(query_conns(&fake).len(), 1, "five queries in a row share one backend connection");

    // The backend closes the pooled connection as the next query arrives on it: retried once on a
    // fresh connection, answered, and not counted as a failure of the backend.
    fake.drop_next_query();
    ask(&rig, "query on a connection the backend drops");
    assert_eq!(fake.requests_to("/query").len(), 7, "the dropped request and its retry");
    assert_eq!(query_conns(&fake).len(), 2);
    let errors = inspect::metric(&rig.addr(), "influx_proxy_backend_query_errors_total", &[("backend", "f")]);
    assert_eq!(errors, Some(0.0), "a retried reuse is no backend failure");

    // The backend restarts (every connection closed while idle): the pooled one is noticed dead and
    // a fresh one is opened.
    fake.start_again();
    ask(&rig, "query after the backend restarted");
    assert_eq!(query_conns(&fake).len(), 3);
    ask(&rig, "and again");
    assert_eq!(query_conns(&fake).len(), 3, "the new connection is reused in turn");
}
