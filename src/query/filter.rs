//! The query safety policy the proxy judges every classified statement against before any backend
//! sees it. This module owns the rule vocabulary used in configuration (`rule_names`), the default
//! rule set — the one the original Go influx-proxy enforced — and the refusal message users get.
//! Invariants: `check` is a pure function of the policy and the `Statement`; a refusal names
//! one rule from `rule_names()` and the statement it refused, so a user can tell why, and names
//! every rule `queryallow` would have to lift, so an operator knows what to change; SHOW statements and statements no rule covers are allowed
//! (the backend still rejects garbage); EXPLAIN is judged as the SELECT it wraps.

use std::fmt;

use super::influxql::{Kind, Statement};

/// Every rule name, as written in configuration.
const RULES: [&str; 12] = [
    "select_star",
    "select_no_time",
    "select_into",
    "delete",
    "drop",
    "grant",
    "revoke",
    "kill",
    "alter",
    "create",
    "create_user",
    "set_password",
];

/// How much of a statement a refusal message quotes, in characters.
const QUOTE_CHARS: usize = 200;

/// One flag per rule; `true` means statements the rule matches are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `SELECT *`, `SELECT *::field`, also inside subqueries.
    pub select_star: bool,
    /// A SELECT reading measurements without any WHERE condition on `time`: unbounded scans.
    pub select_no_time: bool,
    /// `SELECT ... INTO`: writes through the query endpoint.
    pub select_into: bool,
    pub delete: bool,
    /// Any DROP (measurement, series, database, retention policy, user, ...).
    pub drop: bool,
    pub grant: bool,
    pub revoke: bool,
    pub kill: bool,
    pub alter: bool,
    /// Any CREATE.
    pub create: bool,
    /// CREATE USER only (`create` covers it as well).
    pub create_user: bool,
    pub set_password: bool,
}

impl Default for Policy {
    /// The original Go influx-proxy's policy: reads must be bounded and explicit, and nothing that
    /// changes data, schema, users or running queries passes — except CREATE of anything but a user
    /// and SET PASSWORD, which it let through.
    fn default() -> Self {
        Policy {
            select_star: true,
            select_no_time: true,
            select_into: true,
            delete: true,
            drop: true,
            grant: true,
            revoke: true,
            kill: true,
            alter: true,
            create: false,
            create_user: true,
            set_password: false,
        }
    }
}

impl Policy {
    /// A policy that refuses nothing.
    pub fn permissive() -> Self {
        Policy {
            select_star: false,
            select_no_time: false,
            select_into: false,
            delete: false,
            drop: false,
            grant: false,
            revoke: false,
            kill: false,
            alter: false,
            create: false,
            create_user: false,
            set_password: false,
        }
    }

    /// Rule names are those of `rule_names()`; `deny` adds rules to the defaults, `allow` lifts
    /// rules; both are comma-separated lists (spaces allowed, case-insensitive, empty entries
    /// ignored). A rule in both lists ends up allowed. An unknown rule name is an Err naming it.
    pub fn from_lists(deny: Option<&str>, allow: Option<&str>) -> Result<Policy, String> {
        let mut policy = Policy::default();
        for (list, refuse) in [(deny, true), (allow, false)] {
            for entry in list.unwrap_or_default().split(',') {
                let name = entry.trim();
                if name.is_empty() {
                    continue;
                }
                match policy.flag_mut(&name.to_ascii_lowercase()) {
                    Some(flag) => *flag = refuse,
                    None => {
                        return Err(format!("unknown query rule `{name}` (known rules: {})", RULES.join(", ")));
                    }
                }
            }
        }
        Ok(policy)
    }

    pub fn rule_names() -> &'static [&'static str] {
        &RULES
    }

    fn flag_mut(&mut self, rule: &str) -> Option<&mut bool> {
        Some(match rule {
            "select_star" => &mut self.select_star,
            "select_no_time" => &mut self.select_no_time,
            "select_into" => &mut self.select_into,
            "delete" => &mut self.delete,
            "drop" => &mut self.drop,
            "grant" => &mut self.grant,
            "revoke" => &mut self.revoke,
            "kill" => &mut self.kill,
            "alter" => &mut self.alter,
            "create" => &mut self.create,
            "create_user" => &mut self.create_user,
            "set_password" => &mut self.set_password,
            _ => return None,
        })
    }

    /// Judge one classified statement. `text` is the statement text (for the message).
    pub fn check(&self, stmt: &Statement, text: &str) -> Result<(), Refusal> {
        let lift = self.matching(stmt);
        match lift.first() {
            Some(&rule) => Err(Refusal { rule, lift, statement: text.trim().to_string() }),
            None => Ok(()),
        }
    }

    /// Every enforced rule that refuses `stmt`, the one the message explains first. Empty (and so
    /// without allocation) for an allowed statement.
    fn matching(&self, stmt: &Statement) -> Vec<&'static str> {
        let mut rules = Vec::new();
        let mut add = |on: bool, rule: &'static str| {
            if on {
                rules.push(rule);
            }
        };
        match &stmt.kind {
            // EXPLAIN ANALYZE runs the SELECT, and a plain EXPLAIN of a refused SELECT is no use.
            Kind::Select | Kind::Explain { .. } => {
                add(self.select_into && stmt.into, "select_into");
                add(self.select_star && stmt.select_star, "select_star");
                // Without FROM (`SELECT 1`) there is nothing to scan, so nothing to bound.
                add(self.select_no_time && !stmt.sources.is_empty() && !stmt.has_time_condition, "select_no_time");
            }
            Kind::Delete => add(self.delete, "delete"),
            Kind::Drop(_) => add(self.drop, "drop"),
            Kind::Grant => add(self.grant, "grant"),
            Kind::Revoke => add(self.revoke, "revoke"),
            Kind::Kill => add(self.kill, "kill"),
            Kind::Alter => add(self.alter, "alter"),
            Kind::Create(object) => {
                add(self.create, "create");
                add(self.create_user && object == "USER", "create_user");
            }
            Kind::SetPassword => add(self.set_password, "set_password"),
            _ => {}
        }
        rules
    }
}

/// A statement the policy refused: the rule (one of `Policy::rule_names()`) the message explains, every
/// rule the node's `queryallow` would have to lift for the statement to pass (`rule` first), and the
/// statement text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub lift: Vec<&'static str>,
    pub statement: String,
}

impl Refusal {
    /// What the statement does that the rule forbids, worded to follow "statement `...`".
    fn reason(&self) -> &'static str {
        match self.rule {
            "select_star" => "selects * (name the fields instead)",
            "select_no_time" => "has no time condition (add e.g. WHERE time > now() - 1h)",
            "select_into" => "writes data with SELECT ... INTO",
            "delete" => "deletes data",
            "drop" => "drops data or schema",
            "grant" => "grants privileges",
            "revoke" => "revokes privileges",
            "kill" => "kills a running query",
            "alter" => "alters a retention policy",
            "create" => "creates an object",
            "create_user" => "creates a user",
            "set_password" => "sets a password",
            _ => "is not allowed",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "query forbidden by rule {}: statement `{}` {} (to allow it, add {} to the node's queryallow)",
            self.rule,
            quote(&self.statement),
            self.reason(),
            self.lift.join(",")
        )
    }
}

impl std::error::Error for Refusal {}

/// The statement as a message quotes it: on one line, and cut to `QUOTE_CHARS` characters so a
/// huge query cannot flood a log or an HTTP error body.
fn quote(statement: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for word in statement.split_ascii_whitespace() {
        for c in (!out.is_empty()).then_some(' ').into_iter().chain(word.chars()) {
            if chars == QUOTE_CHARS {
                out.push('…');
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::influxql::classify;
    use super::*;

    fn judge(policy: &Policy, q: &str) -> Result<(), &'static str> {
        let st = classify(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        policy.check(&st, q).map_err(|r| r.rule)
    }

    #[test]
    fn default_policy_matches_the_original() {
        let p = Policy::default();
        let cases: &[(&str, Result<(), &str>)] = &[
            ("select * from cpu", Err("select_star")),
            ("select value from cpu", Err("select_no_time")),
            ("select value from cpu where time < now()", Ok(())),
            ("drop measurement x", Err("drop")),
            ("SELECT *::field FROM cpu WHERE time > now() - 1h", Err("select_star")),
            ("SELECT count(*) FROM cpu WHERE time > now() - 1h", Ok(())),
            ("SELECT a FROM (SELECT * FROM cpu) WHERE time > 0", Err("select_star")),
            ("SELECT max(v) FROM (SELECT v FROM cpu WHERE time > now() - 1h)", Ok(())),
            ("SELECT mean(v) INTO x FROM cpu WHERE time > 0", Err("select_into")),
            ("SELECT 1", Ok(())),
            ("EXPLAIN SELECT value FROM cpu", Err("select_no_time")),
            ("EXPLAIN ANALYZE SELECT * FROM cpu WHERE time > 0", Err("select_star")),
            ("EXPLAIN SELECT value FROM cpu WHERE time > 0", Ok(())),
            ("SHOW MEASUREMENTS", Ok(())),
            ("SHOW TAG KEYS FROM cpu", Ok(())),
            ("SHOW SERIES FROM cpu", Ok(())),
            ("SHOW DATABASES", Ok(())),
            ("DELETE FROM cpu WHERE time < now()", Err("delete")),
            ("DROP DATABASE db", Err("drop")),
            ("DROP SERIES FROM cpu", Err("drop")),
            ("GRANT ALL TO bob", Err("grant")),
            ("REVOKE ALL PRIVILEGES FROM bob", Err("revoke")),
            ("KILL QUERY 1", Err("kill")),
            ("ALTER RETENTION POLICY rp ON db DEFAULT", Err("alter")),
            ("CREATE USER bob WITH PASSWORD 'x'", Err("create_user")),
            ("CREATE DATABASE db", Ok(())),
            ("SET PASSWORD FOR bob = 'x'", Ok(())),
        ];
        for (q, want) in cases {
            assert_eq!(judge(&p, q), *want, "{q:?}");
        }
    }

    #[test]
    fn permissive_refuses_nothing() {
        let p = Policy::permissive();
        for q in ["select * from cpu", "DROP DATABASE db", "CREATE USER u WITH PASSWORD 'p'"] {
            assert_eq!(judge(&p, q), Ok(()), "{q:?}");
        }
    }

    #[test]
    fn lists_adjust_the_defaults() {
        let p = Policy::from_lists(Some("create, set_password"), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(judge(&p, "CREATE DATABASE db"), Err("create"));
        assert_eq!(judge(&p, "CREATE USER u WITH PASSWORD 'p'"), Err("create"));
        assert_eq!(judge(&p, "SET PASSWORD FOR u = 'p'"), Err("set_password"));

        let p = Policy::from_lists(None, Some(" SELECT_STAR , ,drop ,")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.select_star && !p.drop && p.select_no_time);
        assert_eq!(judge(&p, "select * from cpu where time > 0"), Ok(()));
        assert_eq!(judge(&p, "drop measurement x"), Ok(()));

        let p = Policy::from_lists(Some("kill"), Some("kill")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.kill);
        assert_eq!(Policy::from_lists(Some(""), Some(" , ")), Ok(Policy::default()));

        let e = Policy::from_lists(Some("drop, bogus_rule"), None).err().unwrap_or_default();
        assert!(e.contains("bogus_rule") && e.contains("select_star"), "{e}");
        let e = Policy::from_lists(None, Some("nope")).err().unwrap_or_default();
        assert!(e.contains("`nope`"), "{e}");

        for name in Policy::rule_names() {
            let denied = Policy::from_lists(Some(name), None).unwrap_or_else(|e| panic!("{e}"));
            let allowed = Policy::from_lists(None, Some(name)).unwrap_or_else(|e| panic!("{e}"));
            assert_ne!(denied, allowed, "rule {name} has no effect");
        }
        assert_eq!(Policy::rule_names().len(), 12);
    }

    #[test]
    fn message_names_statement_and_rule() {
        let q = "select value from cpu";
        let st = classify(q).unwrap_or_else(|e| panic!("{e}"));
        let refusal = Policy::default().check(&st, q).err();
        assert_eq!(
            refusal.map(|r| r.to_string()).as_deref(),
            Some(
                "query forbidden by rule select_no_time: statement `select value from cpu` has no time condition (add e.g. WHERE time > now() - 1h) (to allow it, add select_no_time to the node's queryallow)"
            )
        );

        let long = format!("SELECT {} FROM cpu", vec!["\"fé\""; 100].join(",\n  "));
        let st = classify(&long).unwrap_or_else(|e| panic!("{e}"));
        let msg = Policy::default().check(&st, &long).err().map(|r| r.to_string()).unwrap_or_default();
        assert!(msg.starts_with("query forbidden by rule select_no_time: statement `SELECT \"fé\", \"fé\""), "{msg}");
        assert!(msg.contains("…` has no time condition"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.chars().count() < 380, "{msg}");

        let st = classify("DROP MEASUREMENT cpu").unwrap_or_else(|e| panic!("{e}"));
        let r = Policy::default().check(&st, "  DROP MEASUREMENT cpu ").err();
        assert_eq!(r.as_ref().map(|r| r.statement.as_str()), Some("DROP MEASUREMENT cpu"));
        assert_eq!(
            r.map(|r| r.to_string()).unwrap_or_default(),
            "query forbidden by rule drop: statement `DROP MEASUREMENT cpu` drops data or schema (to allow it, add drop to the node's queryallow)"
        );
    }

    /// Every rule standing in the way is named, so lifting what the message says is enough.
    #[test]
    fn refusal_names_every_rule_to_lift() {
        let lift = |p: &Policy, q: &str| {
            let st = classify(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
            p.check(&st, q).err().map(|r| (r.rule, r.lift)).unwrap_or_default()
        };
        let p = Policy::default();
        assert_eq!(
            lift(&p, "SELECT * INTO x FROM cpu"),
            ("select_into", vec!["select_into", "select_star", "select_no_time"])
        );
        assert_eq!(lift(&p, "CREATE USER u WITH PASSWORD 'p'"), ("create_user", vec!["create_user"]));
        let strict = Policy::from_lists(Some("create"), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lift(&strict, "CREATE USER u WITH PASSWORD 'p'"), ("create", vec!["create", "create_user"]));
        let st = classify("SELECT * FROM cpu").unwrap_or_else(|e| panic!("{e}"));
        let msg = p.check(&st, "SELECT * FROM cpu").err().map(|r| r.to_string()).unwrap_or_default();
        assert!(msg.ends_with("(to allow it, add select_star,select_no_time to the node's queryallow)"), "{msg}");
        // And lifting exactly those lets it through.
        for q in ["SELECT * INTO x FROM cpu", "SELECT * FROM cpu", "DROP SERIES FROM cpu"] {
            let (_, rules) = lift(&p, q);
            let allowed = Policy::from_lists(None, Some(&rules.join(","))).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(lift(&allowed, q), Default::default(), "{q:?}");
        }
    }

    #[test]
    fn quote_is_char_safe() {
        assert_eq!(quote("  a \n b\t"), "a b");
        let s = "é".repeat(250);
        let q = quote(&s);
        assert_eq!(q.chars().count(), QUOTE_CHARS + 1);
        assert!(q.ends_with('…'));
        assert_eq!(quote(&"x".repeat(QUOTE_CHARS)), "x".repeat(QUOTE_CHARS));
    }
}
