use super::*;

pub(crate) fn sample() -> ReportData {
    let curve = |start: f64| -> Vec<CurvePoint> {
        (0..=8)
            .map(|i| CurvePoint {
                step: f64::from(i) * 5.0,
                loss: start * (-0.2 * f64::from(i)).exp() + 0.2,
            })
            .collect()
    };
    let variant = |name: &str, method: &str, start: f64, acc: f64| Variant {
        name: name.into(),
        method: method.into(),
        train_curve: curve(start),
        valid_curve: curve(start + 0.3).into_iter().step_by(2).collect(),
        train_seconds: 95.5,
        peak_memory_bytes: 900 << 20,
        trained_tokens_per_second: 51.25,
        adapter_bytes: 3 << 20,
        valid_loss: Some(0.4125),
        accuracy_before: Some(0.0),
        accuracy_after: Some(acc),
        accuracy_before_ci: None,
        accuracy_after_ci: None,
    };
    ReportData {
        pipeline: "quickstart <demo>".into(),
        created: "2026-11-25T18:00:00Z".into(),
        stages: vec![
            StageRun {
                name: "ingest".into(),
                kind: "ingest".into(),
                status: StageStatus::Cached,
                seconds: None,
            },
            StageRun {
                name: "train@method=lora".into(),
                kind: "train".into(),
                status: StageStatus::Ran,
                seconds: Some(95.5),
            },
            StageRun {
                name: "train@method=qlora".into(),
                kind: "train".into(),
                status: StageStatus::Restored,
                seconds: None,
            },
            StageRun {
                name: "report".into(),
                kind: "report".into(),
                status: StageStatus::Ran,
                seconds: Some(0.2),
            },
        ],
        edges: vec![(0, 1), (0, 2), (1, 3), (2, 3)],
        data: vec![DataSplit {
            split: "train".into(),
            examples: 1420,
            mean_chars: 71,
            max_chars: 90,
            tokens: Some(30_123),
            loss_tokens: Some(4_260),
            truncated: Some(0),
        }],
        variants: vec![
            variant("train@method=lora", "lora", 3.0, 0.79),
            variant("train@method=qlora", "qlora", 3.2, 0.74),
        ],
        recommendation: Some(Recommendation {
            variant: Some("train@method=lora".into()),
            reasons: vec!["highest exact match (0.79) within max_memory_gb = 4".into()],
            others: vec!["train@method=qlora ranked 2nd: exact match 0.740 vs 0.790".into()],
        }),
        samples: vec![Sample {
            variant: "train@method=lora".into(),
            prompt: "What is the past tense of the verb 'go'? <b>".into(),
            expected: "went".into(),
            before: "The past tense of go is".into(),
            after: "went".into(),
        }],
        environment: vec![
            ("chip".into(), "AMD EPYC".into()),
            ("mlx".into(), "0.32.2".into()),
        ],
        tuning: None,
        monitoring: None,
        quality: Default::default(),
    }
}

#[test]
fn report_holds_every_section() {
    let html = render(&sample()).unwrap();
    for id in [
        "summary",
        "dag",
        "data",
        "training",
        "comparison",
        "samples",
        "environment",
    ] {
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "missing section {id}"
        );
    }
    assert_eq!(
        html.matches("<svg").count(),
        6,
        "dag, loss, time, memory, tok/s, accuracy"
    );
    assert!(html.contains("Recommended: train@method=lora"));
    assert!(
        html.contains("train@method=qlora ranked 2nd"),
        "the others' reasons"
    );
    assert!(html.contains(">4260<"), "loss tokens in the data section");
    assert!(html.contains("0.000 → 0.790"));
    assert!(html.contains("1420"));
}

#[test]
fn report_is_self_contained() {
    let html = render(&sample()).unwrap();
    let without_svg_ns = html.replace("http://www.w3.org/2000/svg", "");
    for needle in ["http://", "https://", "<script", "<link", "src="] {
        assert!(
            !without_svg_ns.contains(needle),
            "report references `{needle}`"
        );
    }
}

#[test]
fn user_text_is_escaped() {
    let html = render(&sample()).unwrap();
    assert!(html.contains("quickstart &lt;demo&gt;"));
    assert!(html.contains("&#x27;go&#x27;? &lt;b&gt;") || html.contains("&#39;go&#39;? &lt;b&gt;"));
    assert!(!html.contains("<demo>"));
}

#[test]
fn a_run_without_training_still_renders() {
    let mut data = sample();
    data.variants.clear();
    data.samples.clear();
    data.recommendation = None;
    let html = render(&data).unwrap();
    assert!(html.contains("No training in this run."));
    assert!(html.contains("No variants to compare."));
}

#[test]
fn index_lists_reports_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    write_report(dir.path(), "a", "<html>a</html>").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let path = write_report(dir.path(), "b", "<html>b</html>").unwrap();
    assert_eq!(path, dir.path().join("b.html"));
    let index = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    let (a, b) = (index.find("a.html").unwrap(), index.find("b.html").unwrap());
    assert!(b < a, "newest first:\n{index}");
    assert!(!index.contains(">index.html<"));
}

#[test]
fn no_eligible_variant_is_said_with_the_reasons() {
    let mut data = sample();
    data.recommendation = Some(Recommendation {
        variant: None,
        reasons: vec!["none of the 2 variants meets the constraints".into()],
        others: vec!["lora excluded: peak memory 0.88 GiB exceeds max_memory_gb = 0.5".into()],
    });
    let html = render(&data).unwrap();
    assert!(html.contains("No variant meets the constraints"));
    assert!(html.contains("lora excluded: peak memory"));
    assert!(!html.contains("class=\"best\""), "no row is highlighted");
}

#[test]
fn a_tune_stage_adds_a_tuning_section() {
    let mut data = sample();
    assert!(!render(&data).unwrap().contains("id=\"tuning\""));
    data.tuning = Some(tuning::tests::sample());
    let html = render(&data).unwrap();
    assert!(html.contains("id=\"tuning\"") && html.contains("href=\"#tuning\""));
    assert!(html.contains("Hyperparameter search") && html.contains("best so far"));
    assert_eq!(
        html.matches("<svg").count(),
        8,
        "the six charts, the best-so-far curve and the parallel coordinates"
    );
}

/// The parallel-coordinates chart of the tuning section: the chart that follows its
/// heading.
fn parallel_chart(html: &str) -> &str {
    let heading = html
        .find("parallel coordinates:")
        .expect("the chart's heading");
    let start = heading + html[heading..].find("<svg").unwrap();
    let end = start + html[start..].find("</svg>").unwrap();
    &html[start..end]
}

#[test]
fn the_tuning_section_draws_every_trial_across_the_parameters_and_ranks_importance() {
    let mut data = sample();
    let tuning = tuning::tests::sample();
    let trials = tuning.trials.len();
    data.tuning = Some(tuning);
    let html = render(&data).unwrap();
    let chart = parallel_chart(&html);
    // One axis per parameter, named, plus the objective's; log ticks on the log axes.
    for axis in [">learning_rate<", ">lora.rank<", ">eval.tuned.exact_match<"] {
        assert!(chart.contains(axis), "{axis} in {chart}");
    }
    assert!(
        chart.contains(">1e-4<") && chart.contains(">32<"),
        "{chart}"
    );
    // One line per trial, each titled with its trial; the pruned one dashed, the best bold.
    assert_eq!(chart.matches("<polyline").count(), trials);
    for i in 0..trials {
        assert!(chart.contains(&format!("<title>trial {i}: ")), "trial {i}");
    }
    assert_eq!(
        chart.matches(r#"stroke-dasharray="6 4" opacity"#).count(),
        1
    );
    assert_eq!(
        chart
            .matches(r#"stroke="currentColor" stroke-width="3.5""#)
            .count(),
        2,
        "the best line and its legend"
    );
    // The importance table names the method and keeps the order, most important first.
    let table = &html[html.find("Parameter importance").unwrap()..];
    assert!(table.contains("Method: first-order Sobol indices of the GP posterior mean"));
    let rank = table
        .find("<td>lora.rank</td><td class=\"num\">0.610</td>")
        .unwrap();
    let lr = table
        .find("<td>learning_rate</td><td class=\"num\">0.270</td>")
        .unwrap();
    assert!(rank < lr, "most important first");
    assert!(table.contains("interactions between parameters account for 0.12"));
}

/// One evaluated example for the error-analysis fixtures.
fn result(
    i: usize,
    category: &str,
    base: bool,
    tuned: bool,
) -> pipe_schema::evaluate::ExampleResult {
    pipe_schema::evaluate::ExampleResult {
        id: format!("{i:016x}"),
        category: Some(category.into()),
        prompt: format!("verb <{i}> & co"),
        expected: "went".into(),
        before: "The past".into(),
        after: if tuned {
            "went".into()
        } else {
            "<b>goed</b>".into()
        },
        base_correct: base,
        tuned_correct: tuned,
    }
}

#[test]
fn intervals_draw_error_bars_and_fill_the_table() {
    let mut data = sample();
    for (v, k) in data.variants.iter_mut().zip([79, 74]) {
        v.accuracy_before_ci = crate::stats::rate(0, 100);
        v.accuracy_after_ci = crate::stats::rate(k, 100);
    }
    let html = render(&data).unwrap();
    // Two bars per variant, each with its error bar.
    assert_eq!(html.matches(r#"<g class="errorbar""#).count(), 4, "{html}");
    assert!(html.contains("95% interval"), "the bars' tooltips");
    let lora = crate::stats::rate(79, 100).unwrap();
    let cell = format!(
        "0.000 [0.000, {:.3}] → 0.790 [{:.3}, {:.3}]",
        crate::stats::rate(0, 100).unwrap().high,
        lora.low,
        lora.high
    );
    assert!(html.contains(&cell), "{cell} in the table");
    assert!(lora.low < 0.79 && 0.79 < lora.high);
    // Without intervals the chart keeps its plain bars.
    assert!(!render(&sample()).unwrap().contains("errorbar"));
}

#[test]
fn the_error_analysis_lists_categories_mistakes_and_disagreements_escaped() {
    use super::quality::{PairedTest, Quality, VariantAnalysis};
    let a: Vec<_> = (0..30)
        .map(|i| {
            result(
                i,
                if i % 3 == 0 { "irregular" } else { "regular" },
                false,
                i % 5 != 0,
            )
        })
        .collect();
    let b: Vec<_> = (0..30)
        .map(|i| {
            result(
                i,
                if i % 3 == 0 { "irregular" } else { "regular" },
                false,
                i % 4 != 0,
            )
        })
        .collect();
    let categories = vec![pipe_schema::evaluate::CategoryScore {
        category: "irregular".into(),
        base: crate::stats::rate(0, 10).unwrap(),
        tuned: crate::stats::rate(6, 10).unwrap(),
    }];
    let paired = PairedTest::of("lora", &a, "qlora", &b).unwrap();
    assert_eq!(paired.test.n, 30);
    let mut data = sample();
    data.quality = Quality {
        variants: vec![
            VariantAnalysis::of("lora", &categories, &a),
            VariantAnalysis::of("qlora", &[], &b),
        ],
        paired: vec![paired.clone()],
    };
    let html = render(&data).unwrap();
    assert!(html.contains(r#"id="errors""#) && html.contains(r##"href="#errors""##));
    assert!(html.contains("Exact match per category"));
    assert!(
        html.contains("<td>irregular</td><td class=\"num\">10</td>"),
        "{html}"
    );
    assert!(html.contains("lora: 6 of 30 wrong"), "0, 5, 10, 15, 20, 25");
    assert!(html.contains("qlora: 8 of 30 wrong"));
    assert!(html.contains("Where lora and qlora disagree"));
    let disagree = paired.test.only_a + paired.test.only_b;
    assert_eq!(paired.disagreements.len(), disagree);
    assert!(html.contains(&format!("{disagree} examples right under one only")));
    // Data text is escaped: no raw tag from a prompt or an answer reaches the page.
    assert!(html.contains("verb &lt;5&gt; &amp; co") && html.contains("&lt;b&gt;goed&lt;/b&gt;"));
    assert!(!html.contains("<b>goed"));
    // Long lists are capped, the totals kept.
    let many: Vec<_> = (0..100)
        .map(|i| result(i, "regular", false, false))
        .collect();
    let v = VariantAnalysis::of("full", &[], &many);
    assert_eq!((v.wrong.len(), v.wrong_total), (quality::MAX_LISTED, 100));
    data.quality.variants = vec![v];
    assert!(
        render(&data)
            .unwrap()
            .contains("full: 100 of 100 wrong, the first 20 listed")
    );
}
