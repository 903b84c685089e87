use super::config::GIB;
use super::*;
use crate::report::quality::scored_results as results;
use crate::spec::Stage;

fn variant(name: &str, acc: Option<f64>, mem_gib: f64, secs: f64) -> Variant {
    Variant {
        name: name.into(),
        method: "lora".into(),
        train_curve: vec![],
        valid_curve: vec![],
        train_seconds: secs,
        peak_memory_bytes: (mem_gib * GIB) as u64,
        trained_tokens_per_second: 100.0 / secs,
        adapter_bytes: 1 << 20,
        valid_loss: acc.map(|a| 1.0 - a),
        accuracy_before: Some(0.0),
        accuracy_after: acc,
        accuracy_before_ci: None,
        accuracy_after_ci: None,
    }
}

fn criteria(metric: Metric, mem: Option<f64>, minutes: Option<f64>) -> Criteria {
    Criteria {
        metric,
        direction: None,
        max_memory_gb: mem,
        max_minutes: minutes,
    }
}

fn standing(ranking: &[Ranked], name: &str) -> (Standing, Option<usize>) {
    let r = ranking.iter().find(|r| r.variant == name).unwrap();
    (r.standing, r.rank)
}

#[test]
fn constraints_exclude_and_the_best_of_the_rest_wins() {
    let vs = [
        variant("full", Some(0.9), 6.0, 600.0),
        variant("lora", Some(0.8), 1.0, 120.0),
        variant("qlora", Some(0.7), 0.5, 150.0),
    ];
    let (ranking, r) = recommend(&vs, &criteria(Metric::ExactMatch, Some(2.0), None));
    assert_eq!(r.variant.as_deref(), Some("lora"));
    assert_eq!(
        r.reasons[0], "highest held-out exact match: 0.800 (base model 0.000)",
        "{r:?}"
    );
    assert!(
        r.reasons
            .iter()
            .any(|x| x.contains("within max_memory_gb = 2"))
    );
    assert_eq!(
        r.others,
        [
            "qlora ranked 2nd: held-out exact match 0.700 vs 0.800 for lora",
            "full excluded: peak memory 6.00 GiB exceeds max_memory_gb = 2",
        ]
    );
    assert_eq!(standing(&ranking, "lora"), (Standing::Recommended, Some(1)));
    assert_eq!(
        standing(&ranking, "qlora"),
        (Standing::RankedLower, Some(2))
    );
    assert_eq!(standing(&ranking, "full"), (Standing::Excluded, None));
    assert_eq!(ranking.last().unwrap().variant, "full", "excluded last");

    let (_, r) = recommend(&vs, &criteria(Metric::ExactMatch, None, Some(5.0)));
    assert_eq!(r.variant.as_deref(), Some("lora"), "full took 10 min");
    assert!(
        r.others
            .iter()
            .any(|o| o.contains("training took 10.0 min, over max_minutes = 5"))
    );

    let (_, r) = recommend(&vs, &criteria(Metric::ExactMatch, None, None));
    assert_eq!(r.variant.as_deref(), Some("full"), "no limits: best metric");
}

#[test]
fn direction_follows_the_metric_unless_given() {
    let vs = [
        variant("a", Some(0.6), 1.0, 100.0),
        variant("b", Some(0.9), 2.0, 300.0),
    ];
    let pick = |c: Criteria| recommend(&vs, &c).1.variant.unwrap();
    assert_eq!(
        pick(criteria(Metric::ValidLoss, None, None)),
        "b",
        "lower loss"
    );
    assert_eq!(
        pick(criteria(Metric::TrainSeconds, None, None)),
        "a",
        "faster"
    );
    assert_eq!(pick(criteria(Metric::PeakMemory, None, None)), "a");
    assert_eq!(pick(criteria(Metric::TokensPerSecond, None, None)), "a");
    let mut c = criteria(Metric::ExactMatch, None, None);
    c.direction = Some(Direction::Min);
    assert_eq!(pick(c), "a", "an explicit direction wins");
}

#[test]
fn ties_go_to_less_memory_then_less_time_then_name() {
    let vs = [
        variant("big", Some(0.8), 2.0, 100.0),
        variant("small", Some(0.8), 1.0, 200.0),
    ];
    let (ranking, r) = recommend(&vs, &criteria(Metric::ExactMatch, None, None));
    assert_eq!(r.variant.as_deref(), Some("small"));
    assert!(
        r.reasons[1].contains("tied with big") && r.reasons[1].contains("lower peak memory"),
        "{:?}",
        r.reasons
    );
    assert_eq!(
        ranking[1].reasons[0],
        "tied on held-out exact match (0.800); small was preferred for its lower peak memory (1.00 vs 2.00 GiB)"
    );

    let vs = [
        variant("slow", Some(0.8), 1.0, 200.0),
        variant("fast", Some(0.8), 1.0, 100.0),
    ];
    let (_, r) = recommend(&vs, &criteria(Metric::ExactMatch, None, None));
    assert_eq!(r.variant.as_deref(), Some("fast"));
    assert!(r.reasons[1].contains("shorter training"), "{:?}", r.reasons);

    let vs = [
        variant("b", Some(0.8), 1.0, 100.0),
        variant("a", Some(0.8), 1.0, 100.0),
    ];
    let (_, r) = recommend(&vs, &criteria(Metric::ExactMatch, None, None));
    assert_eq!(r.variant.as_deref(), Some("a"));
    assert!(r.reasons[1].contains("its name"), "{:?}", r.reasons);
}

#[test]
fn missing_metrics_exclude_and_nothing_eligible_says_why() {
    let vs = [
        variant("evaluated", Some(0.5), 1.0, 100.0),
        variant("unevaluated", None, 0.5, 50.0),
    ];
    let (_, r) = recommend(&vs, &criteria(Metric::ExactMatch, None, None));
    assert_eq!(r.variant.as_deref(), Some("evaluated"));
    assert_eq!(
        r.others,
        ["unevaluated excluded: no exact match (no evaluation given)"]
    );

    let (ranking, r) = recommend(&vs, &criteria(Metric::ExactMatch, Some(0.1), None));
    assert_eq!(r.variant, None);
    assert!(r.reasons[0].contains("none of the 2 variants"), "{r:?}");
    assert_eq!(r.others.len(), 2);
    assert!(
        r.others[1].contains("peak memory 0.50 GiB exceeds")
            && r.others[1].contains("no exact match")
    );
    assert!(ranking.iter().all(|x| x.standing == Standing::Excluded));

    let (ranking, r) = recommend(&[], &criteria(Metric::ValidLoss, None, None));
    assert_eq!((ranking.len(), r.variant), (0, None));
    assert_eq!(r.reasons, ["there are no variants to compare"]);
}

#[test]
fn globs_match_whole_segments() {
    assert!(glob_match("runs/sweep/r*", "runs/sweep/r8-lr0.0001"));
    assert!(glob_match("runs/*/lora", "runs/a/lora/"));
    assert!(glob_match("runs/r?", "runs/r8"));
    assert!(!glob_match("runs/r?", "runs/r16"));
    assert!(!glob_match(
        "runs/sweep/r*",
        "runs/sweep/raw/past_tense.json"
    ));
    assert!(!glob_match("runs/sweep/r*", "runs/sweep"));
    assert!(glob_match("runs/x", "runs/x"));
}

#[test]
fn bad_entries_are_named() {
    let err = |with: serde_json::Value| check(&with).unwrap_err().to_string();
    let e = err(serde_json::json!({"variants": [{"train": "runs/a"}], "out": "o"}));
    assert!(e.contains("`runs/a` needs a `name`"), "{e}");
    let e = err(serde_json::json!({"variants": [{"glob": "r*", "name": "x"}], "out": "o"}));
    assert!(e.contains("drop `name`"), "{e}");
    let e = err(serde_json::json!({"variants": [], "out": "o"}));
    assert!(e.contains("`variants`: is empty"), "{e}");
    let e = err(serde_json::json!({"variants": [{"glob": "r*"}], "metric": "acuracy", "out": "o"}));
    assert!(e.contains("acuracy") && e.contains("exact_match"), "{e}");
    let e = err(serde_json::json!({"variants": [{"glob": "r*"}], "max_memory_gb": -1, "out": "o"}));
    assert!(
        e.contains("`max_memory_gb` must be a positive number"),
        "{e}"
    );
}

fn stage(name: &str, kind: super::super::Kind, outs: &[&str], with: serde_json::Value) -> Stage {
    Stage {
        kind,
        outs: outs.iter().map(|o| (*o).to_owned()).collect(),
        config: with,
        ..Stage::bare(name)
    }
}

#[test]
fn globs_expand_to_the_stages_that_write_the_matches() {
    use super::super::Kind;
    let with = serde_json::json!({
        "variants": [
            {"name": "base", "train": "runs/base"},
            {"glob": "runs/sweep/r*", "eval": "eval/{dir}.json"},
        ],
        "out": "runs/sweep/compare",
    });
    let mut stages = vec![
        stage(
            "fetch",
            Kind::CMD,
            &["runs/sweep/raw/data.json"],
            serde_json::Value::Null,
        ),
        stage(
            "train@r=8",
            Kind::TRAIN,
            &["runs/sweep/r8"],
            serde_json::Value::Null,
        ),
        stage(
            "train@r=16",
            Kind::TRAIN,
            &["runs/sweep/r16"],
            serde_json::Value::Null,
        ),
        stage(
            "two",
            Kind::CMD,
            &["runs/sweep/ra", "runs/sweep/rb"],
            serde_json::Value::Null,
        ),
        stage("compare", Kind::COMPARE, &["runs/sweep/compare"], with),
    ];
    let outcome = expand_globs(&mut stages);
    assert_eq!(outcome, vec![(4, Ok(8))]);
    let c = &stages[4];
    let names: Vec<&str> = c.config["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["base", "train@r=8", "train@r=16", "two: ra", "two: rb"]
    );
    assert_eq!(c.config["variants"][2]["eval"], "eval/r16.json");
    assert!(c.deps.contains(&"runs/sweep/r8".to_owned()));
    assert!(c.deps.contains(&"eval/r8.json".to_owned()));
    assert!(!c.deps.iter().any(|d| d.contains("raw")), "{:?}", c.deps);

    stages[4].config["variants"] = serde_json::json!([{"glob": "nothing/*"}]);
    let outcome = expand_globs(&mut stages);
    assert!(
        matches!(&outcome[0], (4, Err(e)) if e.contains("`nothing/*` matches no stage's outs")),
        "{outcome:?}"
    );
}

/// A variant scored on `r` (its accuracy and interval from the results) with an adapter
/// of `adapter_mib` and `secs` of training.
fn scored(
    name: &str,
    r: &[pipe_schema::evaluate::ExampleResult],
    adapter_mib: u64,
    secs: f64,
) -> Variant {
    let right = r.iter().filter(|x| x.tuned_correct).count();
    let mut v = variant(name, Some(right as f64 / r.len() as f64), 1.0, secs);
    v.adapter_bytes = adapter_mib << 20;
    v.accuracy_after_ci = crate::stats::rate(right, r.len());
    v.accuracy_before_ci = crate::stats::rate(0, r.len());
    v
}

fn evaluated<'a>(name: &'a str, r: &'a [pipe_schema::evaluate::ExampleResult]) -> Evaluated<'a> {
    Evaluated {
        variant: name,
        categories: &[],
        results: r,
    }
}

#[test]
fn a_distinguishable_winner_is_kept_even_when_it_costs_more() {
    // 90 vs 60 of 100, the better one right wherever the other is: 30 discordant, all one way.
    let (big, small) = (results(100, |i| i < 90), results(100, |i| i < 60));
    let vs = [
        scored("big", &big, 8, 200.0),
        scored("small", &small, 1, 100.0),
    ];
    let d = decide(
        &vs,
        &[evaluated("big", &big), evaluated("small", &small)],
        &criteria(Metric::ExactMatch, None, None),
    );
    assert_eq!(d.recommendation.variant.as_deref(), Some("big"));
    let t = &d.quality.paired[0];
    assert!(t.distinguishable && t.test.p_value < 1e-6, "{t:?}");
    assert_eq!((t.test.only_a, t.test.only_b, t.test.n), (30, 0, 100));
    assert!(
        d.recommendation.reasons[0].starts_with("highest held-out exact match: 0.900 [")
            && d.recommendation.reasons[0].contains("100 examples"),
        "{:?}",
        d.recommendation.reasons
    );
    assert!(
        d.recommendation.reasons[1]
            .starts_with("better than small at 95% on the same examples: difference +0.300"),
        "{:?}",
        d.recommendation.reasons
    );
    assert_eq!(
        standing(&d.ranking, "small"),
        (Standing::RankedLower, Some(2))
    );
    assert!(
        d.ranking[1].reasons[0].contains("worse at 95%"),
        "{:?}",
        d.ranking[1]
    );
}

#[test]
fn indistinguishable_variants_fall_back_to_the_cheaper_one_with_the_numbers() {
    // 82 vs 80 of 100: 4 examples right under `big` only, 2 under `small` only.
    let big = results(100, |i| i < 82);
    let small = results(100, |i| i < 78 || (82..84).contains(&i));
    let vs = [
        scored("big", &big, 8, 100.0),
        scored("small", &small, 1, 150.0),
    ];
    let d = decide(
        &vs,
        &[evaluated("big", &big), evaluated("small", &small)],
        &criteria(Metric::ExactMatch, Some(4.0), None),
    );
    let t = &d.quality.paired[0];
    assert_eq!((t.test.only_a, t.test.only_b), (4, 2));
    assert!(!t.distinguishable);
    assert!((t.test.p_value - crate::stats::mcnemar(4, 2)).abs() < 1e-12);
    assert!(
        t.test.low < 0.0 && t.test.high > 0.0,
        "the interval spans 0: {t:?}"
    );
    let r = &d.recommendation;
    assert_eq!(r.variant.as_deref(), Some("small"), "{r:?}");
    assert!(
        r.reasons[0].contains("0.800 [")
            && r.reasons[0].contains("for small vs 0.820 [")
            && r.reasons[0].contains("not distinguishable at 95%")
            && r.reasons[0].contains("exact McNemar p = 0.688 (4 vs 2 of 100 examples"),
        "{:?}",
        r.reasons
    );
    assert_eq!(
        r.reasons[1],
        "so the cheaper one: small has the smaller adapter (1.00 vs 8.00 MiB)"
    );
    assert!(
        r.reasons[2].contains("within max_memory_gb = 4"),
        "the limits still hold"
    );
    assert_eq!(
        standing(&d.ranking, "small"),
        (Standing::Recommended, Some(1))
    );
    assert_eq!(
        standing(&d.ranking, "big"),
        (Standing::RankedLower, Some(2))
    );
    assert_eq!(d.ranking[0].variant, "small");
    assert!(
        r.others[0].starts_with("big ranked 2nd: highest held-out exact match (0.820 [")
            && r.others[0].contains("small has the smaller adapter"),
        "{:?}",
        r.others
    );

    // The same, but the top variant is also the cheaper: it stays, and says so.
    let vs = [
        scored("big", &big, 1, 100.0),
        scored("small", &small, 8, 150.0),
    ];
    let d = decide(
        &vs,
        &[evaluated("big", &big), evaluated("small", &small)],
        &criteria(Metric::ExactMatch, None, None),
    );
    assert_eq!(d.recommendation.variant.as_deref(), Some("big"));
    assert!(
        d.recommendation.reasons[1].starts_with("not distinguishable from small at 95%")
            && d.recommendation.reasons[1]
                .ends_with("big is also the cheaper: the smaller adapter (1.00 vs 8.00 MiB)"),
        "{:?}",
        d.recommendation.reasons
    );
}

#[test]
fn pairs_follow_ids_not_positions_and_ties_go_to_the_cheaper() {
    // Identical answers, listed in another order: a tie, p = 1, no difference.
    let a = results(50, |i| i % 3 != 0);
    let mut b = a.clone();
    b.reverse();
    let vs = [scored("slow", &a, 2, 300.0), scored("fast", &b, 2, 100.0)];
    let d = decide(
        &vs,
        &[evaluated("slow", &a), evaluated("fast", &b)],
        &criteria(Metric::ExactMatch, None, None),
    );
    let t = &d.quality.paired[0];
    assert_eq!((t.test.n, t.test.only_a, t.test.only_b), (50, 0, 0));
    assert_eq!(t.test.p_value, 1.0);
    assert!(t.disagreements.is_empty());
    assert_eq!(d.recommendation.variant.as_deref(), Some("fast"));
    assert!(
        d.recommendation
            .reasons
            .iter()
            .any(|r| r.contains("the shorter training (100.0 vs 300.0 s")),
        "{:?}",
        d.recommendation.reasons
    );
    assert!(
        !d.recommendation
            .reasons
            .iter()
            .any(|r| r.starts_with("tied with")),
        "the test replaces the tie rule's sentence"
    );
    // Equal cost in every respect: the name decides, deterministically.
    let vs = [scored("b", &a, 2, 100.0), scored("a", &b, 2, 100.0)];
    let d = decide(
        &vs,
        &[evaluated("b", &a), evaluated("a", &b)],
        &criteria(Metric::ExactMatch, None, None),
    );
    assert_eq!(d.recommendation.variant.as_deref(), Some("a"));
}

#[test]
fn without_per_example_results_or_for_other_metrics_no_test_is_claimed() {
    let a = results(100, |i| i < 82);
    let b = results(100, |i| i < 80);
    let vs = [scored("a", &a, 8, 100.0), scored("b", &b, 1, 100.0)];
    // b's evaluation predates per-example results: ranked by the point estimate, and said.
    let d = decide(
        &vs,
        &[evaluated("a", &a), evaluated("b", &[])],
        &criteria(Metric::ExactMatch, None, None),
    );
    assert_eq!(d.recommendation.variant.as_deref(), Some("a"));
    assert!(d.quality.paired.is_empty());
    assert!(
        d.recommendation
            .reasons
            .iter()
            .any(|r| r.contains("b was not tested against a")),
        "{:?}",
        d.recommendation.reasons
    );
    assert!(
        d.ranking[1]
            .reasons
            .iter()
            .any(|r| r.contains("not tested"))
    );
    // Other metrics are not accuracies: no test, the plain ranking.
    let d = decide(
        &vs,
        &[evaluated("a", &a), evaluated("b", &b)],
        &criteria(Metric::TrainSeconds, None, None),
    );
    assert!(d.quality.paired.is_empty());
    assert_eq!(d.quality.variants.len(), 2, "the error analysis stays");
    assert_eq!(d.quality.variants[0].wrong_total, 18);
}
