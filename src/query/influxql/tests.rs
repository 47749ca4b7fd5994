//! Classification tests: one table of statements with what the proxy must learn from each, plus the
//! splitting, error-position and robustness cases.

use super::*;
use ShowKind as S;

/// One expected classification; every field of `Statement` but the spans is checked.
struct Row {
    q: &'static str,
    kind: Kind,
    sources: Vec<Source>,
    time: bool,
    star: bool,
    into: bool,
    sub: bool,
    on: Option<&'static str>,
    limit: Option<u64>,
    offset: Option<u64>,
}

fn row(q: &'static str, kind: Kind, sources: &[Source]) -> Row {
    Row {
        q,
        kind,
        sources: sources.to_vec(),
        time: false,
        star: false,
        into: false,
        sub: false,
        on: None,
        limit: None,
        offset: None,
    }
}

impl Row {
    fn time(mut self) -> Self {
        self.time = true;
        self
    }
    fn star(mut self) -> Self {
        self.star = true;
        self
    }
    fn into(mut self) -> Self {
        self.into = true;
        self
    }
    fn sub(mut self) -> Self {
        self.sub = true;
        self
    }
    fn on(mut self, db: &'static str) -> Self {
        self.on = Some(db);
        self
    }
    fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }
    fn offset(mut self, n: u64) -> Self {
        self.offset = Some(n);
        self
    }
}

fn opt(s: Option<&str>) -> Option<String> {
    s.map(str::to_string)
}
fn m(name: &str) -> Source {
    mq(None, None, name)
}
fn mq(db: Option<&str>, rp: Option<&str>, name: &str) -> Source {
    Source::Measurement { db: opt(db), rp: opt(rp), name: name.to_string() }
}
fn re(pattern: &str) -> Source {
    req(None, None, pattern)
}
fn req(db: Option<&str>, rp: Option<&str>, pattern: &str) -> Source {
    Source::Regex { db: opt(db), rp: opt(rp), pattern: pattern.to_string() }
}
fn sel() -> Kind {
    Kind::Select
}
fn show(k: ShowKind) -> Kind {
    Kind::Show(k)
}
fn create(o: &str) -> Kind {
    Kind::Create(o.to_string())
}
fn drop_(o: &str) -> Kind {
    Kind::Drop(o.to_string())
}
fn explain(analyze: bool) -> Kind {
    Kind::Explain { analyze }
}

fn table() -> Vec<Row> {
    vec![
        // --- SELECT: fields, functions, math, casts ---
        row("SELECT value FROM cpu", sel(), &[m("cpu")]),
        row("select * from cpu", sel(), &[m("cpu")]).star(),
        row("select value from cpu where time < now()", sel(), &[m("cpu")]).time(),
        row(
            "SELECT mean(\"value\") FROM \"cpu\" WHERE time > now() - 1h GROUP BY time(10s), \"host\" fill(null) ORDER BY time DESC LIMIT 10 SLIMIT 5 tz('Europe/Paris')",
            sel(),
            &[m("cpu")],
        )
        .time()
        .limit(10),
        row(
            "SELECT mean(\"usage_idle\") FROM \"autogen\".\"cpu\" WHERE (\"host\" = 'a') AND time >= 1700000000000ms and time <= 1700003600000ms GROUP BY time(10s), \"host\" fill(null)",
            sel(),
            &[mq(None, Some("autogen"), "cpu")],
        )
        .time(),
        row("SELECT count(*) FROM cpu WHERE time > now() - 5m", sel(), &[m("cpu")]).time(),
        row("SELECT a*2 FROM cpu WHERE time > 0", sel(), &[m("cpu")]).time(),
        row("SELECT a * 2, b / 3 FROM cpu WHERE time > 0", sel(), &[m("cpu")]).time(),
        row("SELECT (a + b) / 2 AS avg FROM cpu", sel(), &[m("cpu")]),
        row("SELECT *::field FROM cpu WHERE time > now() - 1h", sel(), &[m("cpu")])
            .star()
            .time(),
        row("SELECT *::tag, value FROM cpu", sel(), &[m("cpu")]).star(),
        row("SELECT value, * FROM cpu", sel(), &[m("cpu")]).star(),
        row("SELECT DISTINCT * FROM cpu", sel(), &[m("cpu")]).star(),
        row("SELECT \"value\"::float FROM cpu WHERE time > now() - 1h", sel(), &[m("cpu")]).time(),
        row("SELECT a%2, a&1, a|1, a^1 FROM cpu", sel(), &[m("cpu")]),
        row("SELECT 1", sel(), &[]),
        row("SELECT now()", sel(), &[]),
        row(
            "SELECT derivative(mean(value), 1s) FROM cpu WHERE time > now() - 1h GROUP BY time(10s)",
            sel(),
            &[m("cpu")],
        )
        .time(),
        row("SELECT top(value, host, 3) FROM cpu WHERE time > now() - 1h", sel(), &[m("cpu")]).time(),
        row("SELECT DISTINCT(host) FROM cpu WHERE time > now() - 1h", sel(), &[m("cpu")]).time(),
        row(
            "SELECT percentile(value, 95) AS p95 FROM cpu WHERE time > now() - 1h",
            sel(),
            &[m("cpu")],
        )
        .time(),
        row("SELECT /^usage/ FROM cpu WHERE time > now() - 1h", sel(), &[m("cpu")]).time(),
        row(
            "SELECT mean(/^usage/) FROM cpu WHERE time > now() - 1h GROUP BY /host/",
            sel(),
            &[m("cpu")],
        )
        .time(),
        row("SELECT \"a\"+\"b\" FROM cpu WHERE time>now()-1h", sel(), &[m("cpu")]).time(),
        row("SELECT \"from\" FROM \"select\" WHERE time > 0", sel(), &[m("select")]).time(),
        row("select value from CPU where TIME > now() - 1H", sel(), &[m("CPU")]).time(),
        row("SELECT value FROM cpu WHERE time > 1.5", sel(), &[m("cpu")]).time(),
        row("SELECT value FROM cpu WHERE value > .5", sel(), &[m("cpu")]),
        // --- time conditions ---
        row("SELECT value FROM cpu WHERE now() - 1h < time", sel(), &[m("cpu")]).time(),
        row("SELECT value FROM cpu WHERE \"time\" >= 1700000000000ms", sel(), &[m("cpu")]).time(),
        row("SELECT value FROM cpu WHERE TIME <> 0", sel(), &[m("cpu")]).time(),
        row("SELECT value FROM cpu WHERE time != 0", sel(), &[m("cpu")]).time(),
        row(
            "SELECT value FROM cpu WHERE time = '2024-01-01T00:00:00Z'",
            sel(),
            &[m("cpu")],
        )
        .time(),
        row("SELECT value FROM cpu WHERE host = 'time'", sel(), &[m("cpu")]),
        row("SELECT value FROM cpu WHERE host =~ /^web/ AND value > 2", sel(), &[m("cpu")]),
        row(
            "SELECT value FROM cpu WHERE host !~ /a;b/ AND time > now() - 1h",
            sel(),
            &[m("cpu")],
        )
        .time(),
        row("SELECT time FROM cpu GROUP BY time(1h)", sel(), &[m("cpu")]),
        row("SELECT value FROM cpu WHERE (time > now() - 1h)", sel(), &[m("cpu")]).time(),
        row(
            "SELECT value FROM cpu WHERE value > 1 OR (host = 'a' AND time < now())",
            sel(),
            &[m("cpu")],
        )
        .time(),
        row(
            "SELECT value FROM cpu WHERE time > $start AND host = $host",
            sel(),
            &[m("cpu")],
        )
        .time(),
        row("SELECT value FROM cpu WHERE time > now() - 1h fill(0)", sel(), &[m("cpu")]).time(),
        row(
            "SELECT value FROM cpu WHERE time > now() - 1h tz('America/Chicago')",
            sel(),
            &[m("cpu")],
        )
        .time(),
        // --- LIMIT / OFFSET / SLIMIT / SOFFSET ---
        row("SELECT value FROM cpu LIMIT 10 OFFSET 20", sel(), &[m("cpu")])
            .limit(10)
            .offset(20),
        row(
            "SELECT value FROM cpu WHERE time > now() - 1h SLIMIT 3 SOFFSET 1",
            sel(),
            &[m("cpu")],
        )
        .time(),
        row("SELECT value FROM cpu ORDER BY time DESC LIMIT 1", sel(), &[m("cpu")]).limit(1),
        row("SELECT value FROM cpu OFFSET 5", sel(), &[m("cpu")]).offset(5),
        row(
            "SELECT value FROM cpu WHERE time > now()-1h GROUP BY * LIMIT 100 OFFSET 10 SLIMIT 2 SOFFSET 1",
            sel(),
            &[m("cpu")],
        )
        .time()
        .limit(100)
        .offset(10),
        row("select value from cpu limit 0", sel(), &[m("cpu")]).limit(0),
        // --- sources: regexes, lists, qualified and quoted names ---
        row("SELECT value FROM /cpu.*/ WHERE time > now() - 1h", sel(), &[re("cpu.*")]).time(),
        row("SELECT value FROM /a\\/b/", sel(), &[re("a/b")]),
        row("SELECT value FROM /a;b\\d/", sel(), &[re("a;b\\d")]),
        row("SELECT value FROM db.rp./^cpu/", sel(), &[req(Some("db"), Some("rp"), "^cpu")]),
        row("SELECT value FROM \"db\"..\"/x/\"", sel(), &[mq(Some("db"), None, "/x/")]),
        row("SELECT value FROM db../x/", sel(), &[req(Some("db"), None, "x")]),
        row(
            "SELECT value FROM cpu, mem, \"disk\" WHERE time > now() - 1h",
            sel(),
            &[m("cpu"), m("mem"), m("disk")],
        )
        .time(),
        row("SELECT value FROM cpu, /mem.*/", sel(), &[m("cpu"), re("mem.*")]),
        row("SELECT value FROM /a/,/b/", sel(), &[re("a"), re("b")]),
        row("SELECT value FROM \"c\\\"pu\"", sel(), &[m("c\"pu")]),
        row("SELECT value FROM db..cpu", sel(), &[mq(Some("db"), None, "cpu")]),
        row(
            "SELECT value FROM \"1h\".\"cpu.load\"",
            sel(),
            &[mq(None, Some("1h"), "cpu.load")],
        ),
        row(
            "SELECT value FROM \"db\".\"rp\".\"cpu\"",
            sel(),
            &[mq(Some("db"), Some("rp"), "cpu")],
        ),
        row("SELECT value FROM rp.cpu", sel(), &[mq(None, Some("rp"), "cpu")]),
        row("SELECT value FROM \"weird name\" WHERE time > 0", sel(), &[m("weird name")]).time(),
        row("SELECT value FROM \"météo\"", sel(), &[m("météo")]),
        row("SELECT value FROM _cpu_stats", sel(), &[m("_cpu_stats")]),
        // --- subqueries ---
        row(
            "SELECT max(value) FROM (SELECT value FROM cpu WHERE time > now() - 1h)",
            sel(),
            &[m("cpu")],
        )
        .sub()
        .time(),
        row(
            "SELECT mean(max) FROM (SELECT max(value) FROM (SELECT value FROM cpu WHERE time > now() - 1h) GROUP BY time(1m)) WHERE time > now() - 1h",
            sel(),
            &[m("cpu")],
        )
        .sub()
        .time(),
        row(
            "SELECT * FROM (SELECT value FROM cpu) WHERE time > now() - 1h",
            sel(),
            &[m("cpu")],
        )
        .star()
        .sub()
        .time(),
        row("SELECT value FROM (SELECT * FROM cpu WHERE time > 0)", sel(), &[m("cpu")])
            .star()
            .sub()
            .time(),
        row("SELECT a FROM (SELECT a FROM cpu LIMIT 5) LIMIT 2", sel(), &[m("cpu")])
            .sub()
            .limit(2),
        row(
            "SELECT a FROM (SELECT a FROM cpu), mem WHERE time > 0",
            sel(),
            &[m("cpu"), m("mem")],
        )
        .sub()
        .time(),
        row(
            "SELECT a FROM mem, (SELECT a FROM /c.*/, db..cpu OFFSET 3)",
            sel(),
            &[m("mem"), re("c.*"), mq(Some("db"), None, "cpu")],
        )
        .sub(),
        row(
            "SELECT sum(x) FROM (SELECT count(a) AS x FROM (SELECT a FROM (SELECT a FROM cpu WHERE time > now() - 1d)))",
            sel(),
            &[m("cpu")],
        )
        .sub()
        .time(),
        // --- INTO ---
        row(
            "SELECT mean(value) INTO \"db\".\"rp\".\"m\" FROM cpu WHERE time > now() - 1h GROUP BY time(1m)",
            sel(),
            &[m("cpu")],
        )
        .into()
        .time(),
        row(
            "SELECT * INTO \"archive\".\"autogen\".:MEASUREMENT FROM /.*/ WHERE time > now() - 1d GROUP BY *",
            sel(),
            &[re(".*")],
        )
        .into()
        .star()
        .time(),
        row("SELECT value INTO cpu_copy FROM cpu", sel(), &[m("cpu")]).into(),
        row(
            "SELECT a FROM (SELECT a INTO x FROM cpu WHERE time > 0)",
            sel(),
            &[m("cpu")],
        )
        .into()
        .sub()
        .time(),
        // --- comments ---
        row("SELECT value FROM cpu -- trailing comment", sel(), &[m("cpu")]),
        row(
            "SELECT value /* block ; comment */ FROM cpu WHERE time > now() - 1h",
            sel(),
            &[m("cpu")],
        )
        .time(),
        row("/* leading */ SELECT value FROM cpu", sel(), &[m("cpu")]),
        row(
            "SELECT value FROM cpu /* c */ WHERE /* x */ time > now() - 1h",
            sel(),
            &[m("cpu")],
        )
        .time(),
        row(
            "SELECT value FROM cpu WHERE time > now() - 1h -- ; no split\n LIMIT 3",
            sel(),
            &[m("cpu")],
        )
        .time()
        .limit(3),
        row("-- comment\nSHOW DATABASES", show(S::Databases), &[]),
        row("SELECT value FROM /*c*/ /x/", sel(), &[re("x")]),
        row("SELECT value FROM cpu;", sel(), &[m("cpu")]),
        // --- EXPLAIN ---
        row(
            "EXPLAIN SELECT value FROM cpu WHERE time > now() - 1h",
            explain(false),
            &[m("cpu")],
        )
        .time(),
        row("EXPLAIN ANALYZE SELECT * FROM cpu", explain(true), &[m("cpu")]).star(),
        row("explain analyze select value from cpu limit 10", explain(true), &[m("cpu")]),
        row(
            "EXPLAIN SELECT a FROM (SELECT a FROM mem WHERE time > 0)",
            explain(false),
            &[m("mem")],
        )
        .sub()
        .time(),
        // --- SHOW ---
        row("SHOW DATABASES", show(S::Databases), &[]),
        row("SHOW MEASUREMENTS", show(S::Measurements), &[]),
        row("SHOW MEASUREMENTS LIMIT 100", show(S::Measurements), &[]).limit(100),
        row(
            "SHOW MEASUREMENTS WITH MEASUREMENT =~ /cp/ LIMIT 100",
            show(S::Measurements),
            &[re("cp")],
        )
        .limit(100),
        row(
            "SHOW MEASUREMENTS ON \"telegraf\" WITH MEASUREMENT = cpu WHERE host = 'a' LIMIT 5 OFFSET 10",
            show(S::Measurements),
            &[m("cpu")],
        )
        .on("telegraf")
        .limit(5)
        .offset(10),
        row(
            "SHOW MEASUREMENTS WHERE time > now() - 1h",
            show(S::Measurements),
            &[],
        )
        .time(),
        row("show measurements on db0 limit 2 offset 1", show(S::Measurements), &[])
            .on("db0")
            .limit(2)
            .offset(1),
        row("SHOW MEASUREMENT CARDINALITY", show(S::MeasurementCardinality), &[]),
        row(
            "SHOW MEASUREMENT EXACT CARDINALITY ON db FROM cpu WHERE host = 'a'",
            show(S::MeasurementCardinality),
            &[m("cpu")],
        )
        .on("db"),
        row("SHOW RETENTION POLICIES on \"telegraf\"", show(S::RetentionPolicies), &[])
            .on("telegraf"),
        row("SHOW RETENTION POLICIES", show(S::RetentionPolicies), &[]),
        row("SHOW TAG KEYS", show(S::TagKeys), &[]),
        row("SHOW TAG KEYS FROM \"cpu\"", show(S::TagKeys), &[m("cpu")]),
        row(
            "SHOW TAG KEYS ON \"db\" FROM \"cpu\", /mem/ WHERE host = 'a' LIMIT 3 OFFSET 1",
            show(S::TagKeys),
            &[m("cpu"), re("mem")],
        )
        .on("db")
        .limit(3)
        .offset(1),
        row(
            "SHOW TAG VALUES FROM \"cpu\" WITH KEY = \"host\"",
            show(S::TagValues),
            &[m("cpu")],
        ),
        row("SHOW TAG VALUES WITH KEY =~ /ho/", show(S::TagValues), &[]),
        row(
            "SHOW TAG VALUES ON db FROM cpu WITH KEY IN (\"host\", \"region\") WHERE time > now() - 1h LIMIT 10",
            show(S::TagValues),
            &[m("cpu")],
        )
        .on("db")
        .time()
        .limit(10),
        row("SHOW TAG VALUES WITH KEY = \"time\"", show(S::TagValues), &[]),
        row("SHOW TAG KEY CARDINALITY", show(S::TagKeyCardinality), &[]),
        row(
            "SHOW TAG KEY EXACT CARDINALITY FROM cpu",
            show(S::TagKeyCardinality),
            &[m("cpu")],
        ),
        row(
            "SHOW TAG VALUES CARDINALITY WITH KEY = \"host\"",
            show(S::TagValuesCardinality),
            &[],
        ),
        row(
            "SHOW TAG VALUES EXACT CARDINALITY ON db FROM cpu WITH KEY = \"host\"",
            show(S::TagValuesCardinality),
            &[m("cpu")],
        )
        .on("db"),
        row("SHOW FIELD KEYS", show(S::FieldKeys), &[]),
        row("SHOW FIELD KEYS FROM \"cpu\"", show(S::FieldKeys), &[m("cpu")]),
        row(
            "SHOW FIELD KEYS ON \"db\" FROM \"rp\".\"cpu\" LIMIT 1 OFFSET 2",
            show(S::FieldKeys),
            &[mq(None, Some("rp"), "cpu")],
        )
        .on("db")
        .limit(1)
        .offset(2),
        row("SHOW FIELD KEY CARDINALITY", show(S::FieldKeyCardinality), &[]),
        row(
            "SHOW FIELD KEY EXACT CARDINALITY ON db FROM cpu",
            show(S::FieldKeyCardinality),
            &[m("cpu")],
        )
        .on("db"),
        row("SHOW SERIES", show(S::Series), &[]),
        row(
            "SHOW SERIES ON db FROM cpu WHERE host = 'a' LIMIT 10 OFFSET 5",
            show(S::Series),
            &[m("cpu")],
        )
        .on("db")
        .limit(10)
        .offset(5),
        row(
            "SHOW SERIES FROM /c.*/ WHERE time > now() - 1h",
            show(S::Series),
            &[re("c.*")],
        )
        .time(),
        row("SHOW SERIES CARDINALITY", show(S::SeriesCardinality), &[]),
        row(
            "SHOW SERIES EXACT CARDINALITY ON db FROM cpu",
            show(S::SeriesCardinality),
            &[m("cpu")],
        )
        .on("db"),
        row("SHOW USERS", show(S::Users), &[]),
        row("SHOW GRANTS FOR \"jdoe\"", show(S::Grants), &[]),
        row("SHOW QUERIES", show(S::Queries), &[]),
        row("SHOW STATS", show(S::Stats), &[]),
        row("SHOW STATS FOR 'indexes'", show(S::Stats), &[]),
        row("SHOW DIAGNOSTICS", show(S::Diagnostics), &[]),
        row("SHOW SHARDS", show(S::Shards), &[]),
        row("SHOW SHARD GROUPS", show(S::ShardGroups), &[]),
        row("SHOW CONTINUOUS QUERIES", show(S::ContinuousQueries), &[]),
        row("SHOW SUBSCRIPTIONS", show(S::Subscriptions), &[]),
        row("SHOW FOO BAR", show(S::Other("FOO".to_string())), &[]),
        row("show measurement", show(S::Other("MEASUREMENT".to_string())), &[]),
        // --- CREATE ---
        row("CREATE DATABASE \"db\"", create("DATABASE"), &[]),
        row(
            "CREATE DATABASE db WITH DURATION 3d REPLICATION 1 SHARD DURATION 1h NAME \"rp3d\"",
            create("DATABASE"),
            &[],
        ),
        row("CREATE USER \"jdoe\" WITH PASSWORD '1337password'", create("USER"), &[]),
        row(
            "create user admin with password 'p;w''s' with all privileges",
            create("USER"),
            &[],
        ),
        row(
            "CREATE RETENTION POLICY \"one_day\" ON \"db\" DURATION 1d REPLICATION 1 DEFAULT",
            create("RETENTION POLICY"),
            &[],
        )
        .on("db"),
        row(
            "CREATE CONTINUOUS QUERY \"cq\" ON \"db\" BEGIN SELECT mean(value) INTO \"rp2\".\"m\" FROM cpu GROUP BY time(1h) END",
            create("CONTINUOUS QUERY"),
            &[m("cpu")],
        )
        .on("db")
        .into(),
        row(
            "CREATE CONTINUOUS QUERY cq ON db RESAMPLE EVERY 1m FOR 1h BEGIN SELECT count(*) INTO m2 FROM cpu GROUP BY time(1m), * END",
            create("CONTINUOUS QUERY"),
            &[m("cpu")],
        )
        .on("db")
        .into(),
        row(
            "CREATE SUBSCRIPTION \"sub0\" ON \"db\".\"autogen\" DESTINATIONS ALL 'udp://example.com:9090'",
            create("SUBSCRIPTION"),
            &[],
        )
        .on("db"),
        // --- DROP ---
        row("DROP DATABASE \"db\"", drop_("DATABASE"), &[]),
        row("DROP MEASUREMENT \"cpu\"", drop_("MEASUREMENT"), &[m("cpu")]),
        row("drop measurement x", drop_("MEASUREMENT"), &[m("x")]),
        row(
            "DROP SERIES FROM \"cpu\" WHERE \"host\" = 'a'",
            drop_("SERIES"),
            &[m("cpu")],
        ),
        row("DROP SERIES WHERE host = 'a'", drop_("SERIES"), &[]),
        row("DROP SHARD 1", drop_("SHARD"), &[]),
        row("DROP RETENTION POLICY \"rp\" ON \"db\"", drop_("RETENTION POLICY"), &[]).on("db"),
        row("DROP USER \"jdoe\"", drop_("USER"), &[]),
        row("DROP CONTINUOUS QUERY \"cq\" ON \"db\"", drop_("CONTINUOUS QUERY"), &[]).on("db"),
        row("DROP SUBSCRIPTION \"sub0\" ON \"db\".\"autogen\"", drop_("SUBSCRIPTION"), &[])
            .on("db"),
        // --- DELETE ---
        row(
            "DELETE FROM \"cpu\" WHERE time < '2020-01-01T00:00:00Z'",
            Kind::Delete,
            &[m("cpu")],
        )
        .time(),
        row("DELETE WHERE time < now() - 30d", Kind::Delete, &[]).time(),
        row("DELETE FROM /cpu.*/", Kind::Delete, &[re("cpu.*")]),
        row("delete from cpu where host = 'a'", Kind::Delete, &[m("cpu")]),
        // --- ALTER, GRANT, REVOKE, KILL, SET PASSWORD, others ---
        row(
            "ALTER RETENTION POLICY \"rp\" ON \"db\" DURATION 3w SHARD DURATION 2h DEFAULT",
            Kind::Alter,
            &[],
        )
        .on("db"),
        row("GRANT ALL TO \"jdoe\"", Kind::Grant, &[]),
        row("GRANT READ ON \"db\" TO \"jdoe\"", Kind::Grant, &[]).on("db"),
        row("REVOKE ALL PRIVILEGES FROM \"jdoe\"", Kind::Revoke, &[]),
        row("REVOKE WRITE ON \"db\" FROM \"jdoe\"", Kind::Revoke, &[]).on("db"),
        row("KILL QUERY 36", Kind::Kill, &[]),
        row("KILL QUERY 53 ON \"myhost:8088\"", Kind::Kill, &[]),
        row("SET PASSWORD FOR \"jdoe\" = 'new;pw'", Kind::SetPassword, &[]),
        row("INSERT cpu value=1", Kind::Other("INSERT".to_string()), &[]),
        row("set x", Kind::Other("SET".to_string()), &[]),
        row("BEGIN", Kind::Other("BEGIN".to_string()), &[]),
    ]
}

#[test]
fn table_classifies() {
    let rows = table();
    assert!(rows.len() >= 120, "only {} rows", rows.len());
    for r in &rows {
        let st = classify(r.q).unwrap_or_else(|e| panic!("{:?}: {e}", r.q));
        assert_eq!(st.kind, r.kind, "kind of {:?}", r.q);
        assert_eq!(st.sources, r.sources, "sources of {:?}", r.q);
        assert_eq!(st.has_time_condition, r.time, "time of {:?}", r.q);
        assert_eq!(st.select_star, r.star, "star of {:?}", r.q);
        assert_eq!(st.into, r.into, "into of {:?}", r.q);
        assert_eq!(st.has_subquery, r.sub, "subquery of {:?}", r.q);
        assert_eq!(st.on_db.as_deref(), r.on, "on_db of {:?}", r.q);
        assert_eq!(st.limit, r.limit, "limit of {:?}", r.q);
        assert_eq!(st.offset, r.offset, "offset of {:?}", r.q);
        let clauses = usize::from(r.limit.is_some()) + usize::from(r.offset.is_some());
        assert_eq!(st.limit_offset_spans.len(), clauses, "spans of {:?}", r.q);
        // Every statement survives being split on its own.
        assert_eq!(split_statements(r.q), vec![r.q.trim_end_matches(';')], "split {:?}", r.q);
    }
}

#[test]
fn split_respects_literals_and_comments() {
    let cases: &[(&str, &[&str])] = &[
        ("SELECT 1; SELECT 2", &["SELECT 1", "SELECT 2"]),
        ("  SHOW DATABASES ;; ; \n", &["SHOW DATABASES"]),
        ("", &[]),
        (" ; ;", &[]),
        ("SELECT a FROM b WHERE c = 'x;y'; SHOW USERS", &["SELECT a FROM b WHERE c = 'x;y'", "SHOW USERS"]),
        ("SELECT a FROM b WHERE c = 'it''s;'; S", &["SELECT a FROM b WHERE c = 'it''s;'", "S"]),
        ("SELECT a FROM b WHERE c = '\\';'; S", &["SELECT a FROM b WHERE c = '\\';'", "S"]),
        ("SELECT \"a;b\" FROM \"c\\\";d\"; S", &["SELECT \"a;b\" FROM \"c\\\";d\"", "S"]),
        ("SELECT a FROM /a;b/; S", &["SELECT a FROM /a;b/", "S"]),
        ("SELECT a FROM /a\\/;b/; S", &["SELECT a FROM /a\\/;b/", "S"]),
        ("SELECT a FROM x, /a;b/; S", &["SELECT a FROM x, /a;b/", "S"]),
        ("SELECT a FROM x WHERE h =~ /a;b/; S", &["SELECT a FROM x WHERE h =~ /a;b/", "S"]),
        ("SELECT a FROM x WHERE h !~ /a;b/; S", &["SELECT a FROM x WHERE h !~ /a;b/", "S"]),
        ("SHOW MEASUREMENTS WITH MEASUREMENT =~ /a;b/; S", &["SHOW MEASUREMENTS WITH MEASUREMENT =~ /a;b/", "S"]),
        // Division is no regex: the `;` after it splits.
        ("SELECT a / 2 FROM x; SELECT b / 3 FROM y", &["SELECT a / 2 FROM x", "SELECT b / 3 FROM y"]),
        ("SELECT count(a)/2 FROM x;S", &["SELECT count(a)/2 FROM x", "S"]),
        ("SELECT a FROM x -- c;d\n; S", &["SELECT a FROM x -- c;d", "S"]),
        ("SELECT a /* ; */ FROM x; S", &["SELECT a /* ; */ FROM x", "S"]),
        ("SELECT 1; -- only a comment", &["SELECT 1"]),
        ("SELECT 1; /* only */ ; S", &["SELECT 1", "S"]),
        // Unterminated: the rest stays one statement for classify to reject.
        ("SELECT 'a; DROP DATABASE x", &["SELECT 'a; DROP DATABASE x"]),
        ("S; SELECT a FROM /x; y", &["S", "SELECT a FROM /x; y"]),
        ("S; /* x; y", &["S", "/* x; y"]),
    ];
    for (q, want) in cases {
        assert_eq!(split_statements(q), *want, "split {q:?}");
    }
}

fn err(q: &str) -> ParseError {
    match classify(q) {
        Ok(st) => panic!("{q:?} classified as {st:?}"),
        Err(e) => e,
    }
}

#[test]
fn errors() {
    let e = err("SELECT a FROM b WHERE c = 'x");
    assert_eq!(e.to_string(), "unterminated string literal at 26");
    let cases: &[(&str, &str)] = &[
        ("SELECT \"val FROM cpu", "unterminated quoted identifier"),
        ("SELECT value FROM /cpu", "unterminated regex literal"),
        ("SELECT value /* FROM cpu", "unterminated block comment"),
        ("SELECT 'a\\'", "unterminated string literal"),
        ("", "empty statement"),
        ("   \n\t", "empty statement"),
        ("-- only a comment", "empty statement"),
        (";", "empty statement"),
        ("SELECT value FROM", "expected a measurement"),
        ("SELECT value FROM WHERE time > 0", "expected a measurement"),
        ("SELECT value FROM cpu,", "expected a measurement"),
        ("SELECT value FROM db.", "expected a measurement"),
        ("SELECT value FROM a.b.c.d", "too many parts"),
        ("DELETE FROM WHERE time < 0", "expected a measurement"),
        ("SHOW TAG KEYS FROM", "expected a measurement"),
        ("SELECT (value FROM cpu", "unbalanced parentheses"),
        ("SELECT value) FROM cpu", "unbalanced parentheses"),
        ("SELECT a FROM (SHOW DATABASES)", "expected SELECT"),
        ("SELECT a FROM ()", "expected SELECT"),
        ("SELECT value FROM cpu LIMIT x", "expected an integer after LIMIT"),
        ("SELECT value FROM cpu OFFSET", "expected an integer after OFFSET"),
        ("SELECT value FROM cpu LIMIT 1.5", "expected an integer after LIMIT"),
        ("SELECT value FROM cpu LIMIT 99999999999999999999999", "out of range"),
        ("SELECT 1; SELECT 2", "unexpected ';'"),
        ("SHOW", "expected what to SHOW"),
        ("CREATE", "expected what to CREATE"),
        ("DROP", "expected what to DROP"),
        ("DROP MEASUREMENT", "expected a measurement"),
        ("(SELECT 1)", "expected a statement keyword"),
        ("\"SELECT\" 1", "expected a statement keyword"),
        ("EXPLAIN SHOW DATABASES", "expected SELECT after EXPLAIN"),
        ("SHOW DATABASES ON", "expected a database name"),
        ("SHOW MEASUREMENTS WITH MEASUREMENT cpu", "expected = or =~"),
        ("CREATE CONTINUOUS QUERY cq ON db BEGIN SELECT a INTO b FROM c", "missing END"),
        ("CREATE CONTINUOUS QUERY cq ON db BEGIN SHOW DATABASES END", "expected SELECT"),
    ];
    for (q, want) in cases {
        let e = err(q);
        assert!(e.message.contains(want), "{q:?}: got {e}, want {want:?}");
        assert!(e.position <= q.len(), "{q:?}: position {}", e.position);
    }
}

fn nested(depth: usize) -> String {
    let mut q = String::from("SELECT a FROM ");
    for _ in 0..depth {
        q.push_str("(SELECT a FROM ");
    }
    q.push_str("cpu WHERE time > 0");
    q.push_str(&")".repeat(depth));
    q
}

#[test]
fn nesting_is_capped() {
    let ok = classify(&nested(MAX_SUBQUERY_DEPTH)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.sources, vec![m("cpu")]);
    assert!(ok.has_subquery && ok.has_time_condition);
    assert!(err(&nested(MAX_SUBQUERY_DEPTH + 1)).message.contains("nested"));
    // Far deeper input fails cleanly instead of exhausting the stack.
    assert!(err(&nested(100_000)).message.contains("nested"));
    let parens = format!("SELECT {}a{} FROM cpu", "(".repeat(200_000), ")".repeat(200_000));
    assert_eq!(classify(&parens).map(|s| s.sources), Ok(vec![m("cpu")]));
    assert!(err(&"(".repeat(200_000)).message.contains("unbalanced"));
    assert!(err(&format!("SELECT {}", "(".repeat(200_000))).message.contains("unbalanced"));
}

#[test]
fn large_inputs_stay_linear() {
    let many = format!("SELECT a FROM {}m WHERE time > 0", "m, ".repeat(50_000));
    let st = classify(&many).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.sources.len(), 50_001);
    let q = "SELECT a FROM b WHERE time > 0;".repeat(20_000);
    assert_eq!(split_statements(&q).len(), 20_000);
    let quotes = "'".repeat(100_001);
    assert!(classify(&quotes).is_err());
    assert_eq!(split_statements(&quotes).len(), 1);
    let slashes = format!("SELECT a FROM {}", "/".repeat(100_001));
    let _ = classify(&slashes);
}

#[test]
fn strips_outer_limit_and_offset() {
    let cases: &[(&str, &str)] = &[
        (
            "SELECT value FROM cpu WHERE time > now() - 1h LIMIT 10 OFFSET 5",
            "SELECT value FROM cpu WHERE time > now() - 1h",
        ),
        (
            "SELECT a FROM (SELECT a FROM cpu LIMIT 5) LIMIT 2 OFFSET 1 SLIMIT 3",
            "SELECT a FROM (SELECT a FROM cpu LIMIT 5) SLIMIT 3",
        ),
        ("SELECT a FROM cpu OFFSET 4 tz('UTC')", "SELECT a FROM cpu tz('UTC')"),
        ("SHOW MEASUREMENTS LIMIT 100", "SHOW MEASUREMENTS"),
        ("SHOW TAG VALUES FROM cpu WITH KEY = host LIMIT 3 OFFSET 2", "SHOW TAG VALUES FROM cpu WITH KEY = host"),
        ("  SELECT a FROM cpu  ", "SELECT a FROM cpu"),
        ("SELECT a FROM cpu LIMIT 10 -- note\ntz('UTC')", "SELECT a FROM cpu -- note\ntz('UTC')"),
        ("SELECT a FROM cpu -- x\nLIMIT 1", "SELECT a FROM cpu -- x"),
        ("SELECT a FROM cpu -- x\nLIMIT 1\nOFFSET 2 tz('UTC')", "SELECT a FROM cpu -- x\ntz('UTC')"),
        ("SELECT a FROM \"m\u{e9}t\u{e9}o\"\tLIMIT\t7\tOFFSET /* c */ 8", "SELECT a FROM \"m\u{e9}t\u{e9}o\""),
    ];
    for (q, want) in cases {
        let st = classify(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        let stripped = st.text_without_limit_offset(q);
        assert_eq!(stripped, *want, "stripping {q:?}");
        let again = classify(&stripped).unwrap_or_else(|e| panic!("{stripped:?}: {e}"));
        assert_eq!((again.limit, again.offset), (None, None), "{stripped:?}");
        assert_eq!(again.sources, st.sources);
    }
    // Spans from another text never cut it apart.
    let st = classify("SELECT a FROM cpu LIMIT 10").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.text_without_limit_offset(" short "), "short");
    assert_eq!(st.limit_offset_spans, vec![18..26]);
}

/// Mutations of `q`: every prefix, every single-byte deletion and every insertion of a
/// troublesome character, as long as the result is valid UTF-8.
fn mutations(q: &str) -> Vec<String> {
    let bytes = q.as_bytes();
    let mut out = Vec::new();
    for i in 0..=bytes.len() {
        if let Some(prefix) = q.get(..i) {
            out.push(prefix.to_string());
        }
        if i < bytes.len() {
            let mut v = bytes.to_vec();
            v.remove(i);
            if let Ok(s) = String::from_utf8(v) {
                out.push(s);
            }
        }
        if q.is_char_boundary(i) {
            for c in ["'", "\"", "/", "\\", "(", ")", ";", "*", "-", "\u{e9}"] {
                let (a, b) = q.split_at(i);
                out.push(format!("{a}{c}{b}"));
            }
        }
    }
    out
}

fn exercise(q: &str) {
    let parts = split_statements(q);
    for p in &parts {
        assert!(!p.is_empty());
        let offset = p.as_ptr() as usize - q.as_ptr() as usize;
        assert!(offset + p.len() <= q.len(), "slice of {q:?} out of bounds");
    }
    if let Ok(st) = classify(q) {
        for span in &st.limit_offset_spans {
            assert!(q.get(span.clone()).is_some(), "bad span {span:?} in {q:?}");
        }
        let _ = st.text_without_limit_offset(q);
    } else if let Err(e) = classify(q) {
        assert!(e.position <= q.len() && q.is_char_boundary(e.position), "{q:?}: {e}");
    }
}

#[test]
fn never_panics_on_mutations() {
    let mut samples: Vec<String> = table().iter().map(|r| r.q.to_string()).collect();
    samples.extend(
        [
            "SELECT a FROM x WHERE c = 'it''s' AND d =~ /a\\/b/ -- c\n/* d */ LIMIT 1",
            "SELECT a FROM \"c\\\"pu\" WHERE $x > 1 AND \"µ\" = 5µs",
        ]
        .map(str::to_string),
    );
    let mut runs = 0usize;
    for q in &samples {
        for m in mutations(q) {
            exercise(&m);
            runs += 1;
        }
    }
    assert!(runs > 50_000, "only {runs} mutations");
}

#[test]
fn never_panics_on_random_token_soup() {
    const PIECES: &[&str] = &[
        "SELECT ",
        "FROM ",
        "WHERE ",
        "INTO ",
        "LIMIT ",
        "OFFSET ",
        "SHOW ",
        "TAG ",
        "KEYS ",
        "WITH ",
        "MEASUREMENT ",
        "ON ",
        "CREATE ",
        "DROP ",
        "EXPLAIN ",
        "ANALYZE ",
        "BEGIN ",
        "END ",
        "time",
        " ",
        "\n",
        "*",
        "(",
        ")",
        ",",
        ".",
        "..",
        ";",
        "'",
        "''",
        "\"",
        "\\",
        "/",
        "//",
        "=~",
        "!~",
        "=",
        "<>",
        "<",
        ">=",
        "--",
        "/*",
        "*/",
        "::",
        ":",
        "$",
        "$x",
        "1",
        "10s",
        ".5",
        "cpu",
        "\"q\"",
        "/re/",
        "é",
        "µs",
        "\u{0}",
        "\u{a0}",
        "\u{1f600}",
    ];
    // A fixed linear congruential generator: reproducible without external crates.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    for _ in 0..30_000 {
        let len = next() % 24;
        let q: String = (0..len).map(|_| PIECES[next() % PIECES.len()]).collect();
        exercise(&q);
    }
}

#[test]
fn display_of_parse_error() {
    let e = ParseError { message: "unterminated string literal".to_string(), position: 17 };
    assert_eq!(e.to_string(), "unterminated string literal at 17");
}

/// Regression (found by fuzzing): clauses after LIMIT/OFFSET were read as part of nothing, so
/// stripping LIMIT/OFFSET for a merge changed the statement's meaning.
#[test]
fn clauses_after_limit_are_errors() {
    for q in [
        "SELECT a LIMIT 1 FROM cpu",
        "SELECT OFFSET 1 FROM cpu",
        "SELECT LIMIT 1 *",
        "SHOW TAG KEYS WHERE a = 'b' LIMIT 1 ON secret",
        "SHOW MEASUREMENTS LIMIT 1 WHERE time > 0",
    ] {
        let e = classify(q).expect_err(q);
        assert!(e.message.contains("after LIMIT/OFFSET"), "{q}: {e}");
    }
    for q in [
        "SELECT v FROM cpu WHERE time > 0 LIMIT 10 OFFSET 2 SLIMIT 1 SOFFSET 1 tz('Europe/Paris')",
        "SHOW MEASUREMENTS LIMIT 100 OFFSET 5",
    ] {
        assert!(classify(q).is_ok(), "{q}");
    }
}
