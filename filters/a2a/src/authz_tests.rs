use super::*;
use crate::config::Config;
use tollgate_core::config::load;

fn config(json: &str) -> Policy {
    load::<Config>(json.as_bytes()).unwrap().compile().unwrap().authz
}

fn subject<'a>(caller: &'a str, obo: Option<&'a str>, target: &'a str, method: &'a str) -> Subject<'a> {
    Subject { caller, on_behalf_of: obo, target, method }
}

#[test]
fn first_match_wins_and_default_applies() {
    let c = config(
        r#"{"authz":{"default":"deny","rules":[
            {"id":"no-cancel","callers":["agent-*"],"methods":["tasks/cancel"],"effect":"allow_originator"},
            {"id":"b-only-from-a","callers":["agent-a"],"targets":["agent-b"],"effect":"allow"},
            {"callers":["alice"],"on_behalf_of":["bob"],"effect":"allow"}]}}"#,
    );
    let v = evaluate(&c, &subject("agent-x", None, "agent-b", "CancelTask"));
    assert_eq!((v.effect, v.rule_id), (RuleEffect::AllowOriginator, Some("no-cancel")));
    let v = evaluate(&c, &subject("agent-a", None, "agent-b", "SendMessage"));
    assert_eq!((v.effect, v.rule_id), (RuleEffect::Allow, Some("b-only-from-a")));
    let v = evaluate(&c, &subject("agent-a", None, "agent-c", "SendMessage"));
    assert_eq!((v.effect, v.rule_id), (RuleEffect::Deny, None));
    assert_eq!(evaluate(&c, &subject("alice", Some("bob"), "x", "GetTask")).rule_id, Some("rules[2]"));
    assert_eq!(evaluate(&c, &subject("alice", None, "x", "GetTask")).effect, RuleEffect::Deny);
}

#[test]
fn empty_config_allows() {
    let c = config("{}");
    assert_eq!(evaluate(&c, &subject(ANONYMOUS, None, "t", "SendMessage")).effect, RuleEffect::Allow);
    assert_eq!(evaluate(&Policy::default(), &subject(ANONYMOUS, None, "t", "SendMessage")).effect, RuleEffect::Allow);
}

#[test]
fn a_rule_matches_by_its_own_methods() {
    // Rules carry their method globs: a policy built by hand matches like a compiled one.
    let rule = |methods: &[&str], effect| Rule {
        id: "r".into(),
        callers: vec![Glob::new("*")],
        on_behalf_of: vec![],
        targets: vec![Glob::new("*")],
        methods: methods.iter().map(|m| Glob::new(m)).collect(),
        effect,
    };
    let p = Policy::new(RuleEffect::Allow, vec![rule(&["CancelTask"], RuleEffect::Deny)]);
    assert_eq!(evaluate(&p, &subject("a", None, "t", "CancelTask")).effect, RuleEffect::Deny);
    assert_eq!(evaluate(&p, &subject("a", None, "t", "GetTask")).effect, RuleEffect::Allow);
}

#[test]
fn originator_check() {
    assert!(originator_allows("alice", Some("alice")));
    assert!(!originator_allows("mallory", Some("alice")));
    assert!(!originator_allows("alice", None), "unknown originator: refused");
    assert!(!originator_allows(ANONYMOUS, Some(ANONYMOUS)), "anonymous owns nothing");
}

#[test]
fn list_tasks_is_filtered_for_the_authenticated_and_refused_to_the_anonymous() {
    assert_eq!(super::originator_check("ListTasks", "alice"), OriginatorCheck::FilterList);
    assert_eq!(super::originator_check("ListTasks", ANONYMOUS), OriginatorCheck::Refuse);
    for m in ["GetTask", "CancelTask", "SubscribeToTask", "GetTaskPushNotificationConfig", "ListTaskPushNotificationConfigs"] {
        assert_eq!(super::originator_check(m, "alice"), OriginatorCheck::Task, "{m}");
        assert_eq!(super::originator_check(m, ANONYMOUS), OriginatorCheck::Task, "{m}: then refused by originator_allows");
    }
}
