//! The continuous batch's KV cache (`pipe_mlx_core::serve::batch`): a sequence decoded in
//! a batch, joining and leaving at different steps beside sequences of other lengths, gets
//! the greedy tokens and (within float tolerance) the logits it gets decoded alone.

use mlx_rs::ops::indexing::{IndexOp, argmax_axis};
use mlx_rs::{Array, Dtype};
use pipe_mlx_core::models::llama::{Llama, tiny_random};
use pipe_mlx_core::serve::batch::{BatchCache, prefill, step_tokens};

const VOCAB: i32 = 97;

fn row_logits(logits: &Array, row: i32) -> Vec<f32> {
    logits
        .index(row)
        .as_dtype(Dtype::Float32)
        .unwrap()
        .as_slice::<f32>()
        .to_vec()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding of `prompt` alone: the logits before each of `steps` tokens.
fn alone(model: &mut Llama, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
    let (mut cache, logits) = prefill(model, prompt).unwrap();
    let mut out = vec![row_logits(&logits, 0)];
    while out.len() < steps {
        let next = argmax(out.last().unwrap());
        let logits = model
            .forward_tokens(&step_tokens(&[next]).unwrap(), Some(&mut cache), None)
            .unwrap()
            .index((.., -1, ..));
        out.push(row_logits(&logits, 0));
    }
    out
}

struct Live {
    seq: usize,
    last: u32,
    logits: Vec<Vec<f32>>,
}

#[test]
fn rows_joining_and_leaving_decode_as_they_do_alone() {
    let mut model = tiny_random(5, VOCAB, 3, true).unwrap();
    let prompts: Vec<Vec<u32>> = vec![
        vec![3, 14, 15, 92, 65],
        vec![35, 89, 79, 32, 38, 46, 26, 43, 38],
        vec![27, 18],
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    ];
    // (joins before step, steps to decode)
    let plan = [(0, 12), (3, 6), (4, 10), (7, 5)];
    let reference: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .zip(&plan)
        .map(|(p, (_, n))| alone(&mut model, p, *n))
        .collect();

    let mut batch = BatchCache::new(&model);
    let mut live: Vec<Live> = Vec::new();
    let mut done: Vec<Option<Vec<Vec<f32>>>> = vec![None; prompts.len()];
    for step in 0..40 {
        for (seq, (join, _)) in plan.iter().enumerate() {
            if *join == step {
                let (cache, logits) = prefill(&mut model, &prompts[seq]).unwrap();
                let first = row_logits(&logits, 0);
                batch.join(&cache).unwrap();
                live.push(Live {
                    seq,
                    last: argmax(&first),
                    logits: vec![first],
                });
            }
        }
        // Rows that have all their logits leave before the step.
        let keep: Vec<usize> = (0..live.len())
            .filter(|&i| live[i].logits.len() < plan[live[i].seq].1)
            .collect();
        for i in (0..live.len()).rev() {
            if !keep.contains(&i) {
                let l = live.remove(i);
                done[l.seq] = Some(l.logits);
            }
        }
        batch.retain(&keep).unwrap();
        assert_eq!(batch.rows(), live.len());
        if live.is_empty() {
            if done.iter().all(Option::is_some) {
                break;
            }
            continue;
        }
        let ids: Vec<u32> = live.iter().map(|l| l.last).collect();
        let mask = batch.key_mask(1);
        let positions = batch.positions();
        let logits = model
            .forward_rows(
                &step_tokens(&ids).unwrap(),
                batch.cache_mut(),
                &mask,
                &positions,
            )
            .unwrap()
            .index((.., -1, ..));
        let greedy = argmax_axis(&logits, -1, None).unwrap();
        let greedy = greedy.as_dtype(Dtype::Uint32).unwrap();
        for (row, l) in live.iter_mut().enumerate() {
            let v = row_logits(&logits, row as i32);
            l.last = greedy.as_slice::<u32>()[row];
            assert_eq!(l.last, argmax(&v));
            l.logits.push(v);
        }
    }
    for (seq, got) in done.iter().enumerate() {
        let got = got.as_ref().expect("every sequence finished");
        let want = &reference[seq];
        assert_eq!(got.len(), want.len(), "sequence {seq}");
        for (step, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(
                argmax(g),
                argmax(w),
                "sequence {seq} step {step}: greedy token"
            );
            let d = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-4, "sequence {seq} step {step}: logits differ by {d}");
        }
    }
}

#[test]
fn trimming_keeps_the_longest_live_width() {
    let mut model = tiny_random(1, VOCAB, 1, false).unwrap();
    let mut batch = BatchCache::new(&model);
    let (long, _) = prefill(&mut model, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let (short, _) = prefill(&mut model, &[9, 10, 11]).unwrap();
    batch.join(&short).unwrap();
    batch.join(&long).unwrap();
    assert_eq!(batch.width(), 8);
    assert_eq!(batch.positions().as_slice::<i32>(), [3, 8]);
    assert_eq!(
        batch.key_mask(0).as_slice::<i32>()[..8],
        [0, 0, 0, 0, 0, 1, 1, 1]
    );
    batch.retain(&[0]).unwrap();
    assert_eq!((batch.rows(), batch.width()), (1, 3));
    batch.retain(&[]).unwrap();
    assert_eq!((batch.rows(), batch.width()), (0, 0));
}
