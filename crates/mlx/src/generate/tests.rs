//! Generation on tiny random-weight models: the KV cache and batching must not change
//! what the model computes.

use super::*;
use crate::models::llama::{Llama, tiny_random};
use crate::test_support::max_abs_diff;
use crate::tokenizer::{Tokenizer, toy};

fn ids(v: &[i32]) -> Array {
    Array::from_slice(v, &[1, v.len() as i32])
}

/// Greedy decoding that recomputes the whole sequence every step (no cache).
fn greedy_uncached(model: &mut Llama, prompt: &[i32], n: usize) -> Vec<i32> {
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let logits = model.forward_tokens(&ids(&seq), None, None).unwrap();
        let last = logits.index((.., -1, ..));
        let next = argmax_axis(&last, -1, None).unwrap().item_exact::<u32>();
        seq.push(next as i32);
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn kv_cache_logits_equal_full_recompute() {
    for qkv_bias in [false, true] {
        let mut model = tiny_random(1, 50, 2, qkv_bias).unwrap();
        let seq = [3, 17, 8, 42, 5, 9, 11];
        let full = model.forward_tokens(&ids(&seq), None, None).unwrap();
        let mut cache = model.new_cache();
        let first = model
            .forward_tokens(&ids(&seq[..4]), Some(&mut cache), None)
            .unwrap();
        assert!(max_abs_diff(&first, &full.index((.., 0..4, ..))) < 1e-4);
        // A second multi-token chunk against a non-empty cache (chunked prefill): the
        // causal mask must line up with the cached positions.
        let mut chunked = cache.clone();
        let second = model
            .forward_tokens(&ids(&seq[4..]), Some(&mut chunked), None)
            .unwrap();
        assert!(max_abs_diff(&second, &full.index((.., 4.., ..))) < 1e-4);
        for (i, &t) in seq.iter().enumerate().skip(4) {
            let step = model
                .forward_tokens(&ids(&[t]), Some(&mut cache), None)
                .unwrap();
            let d = max_abs_diff(&step, &full.index((.., i as i32..i as i32 + 1, ..)));
            assert!(d < 1e-4, "position {i}: {d}");
        }
        assert_eq!(cache.offset(), seq.len() as i32);
    }
}

#[test]
fn cached_generation_equals_uncached_generation() {
    let vocab = toy("smollm");
    let tok = Tokenizer::from_gguf(&vocab).unwrap();
    let mut model = tiny_random(2, vocab.tokens.len() as i32, 2, false).unwrap();
    let prompt: Vec<u32> = vec![5, 80, 81, 90, 100];
    let options = GenerateOptions {
        max_tokens: 12,
        ..Default::default()
    };
    let (g, stats) = generate(&mut model, &tok, &prompt, &options, &mut |_| {}).unwrap();
    let p: Vec<i32> = prompt.iter().map(|&x| x as i32).collect();
    let expected = greedy_uncached(&mut model, &p, g.tokens.len());
    let got: Vec<i32> = g.tokens.iter().map(|&x| x as i32).collect();
    assert_eq!(got, expected);
    assert_eq!(stats.prompt_tokens, 5);
}

#[test]
fn batched_generation_equals_unbatched() {
    let vocab = toy("smollm");
    let tok = Tokenizer::from_gguf(&vocab).unwrap();
    let mut model = tiny_random(3, vocab.tokens.len() as i32, 2, true).unwrap();
    let prompts: Vec<Vec<u32>> = vec![vec![10, 11, 12, 13, 14, 15], vec![200, 3], vec![7, 8, 9]];
    let options = GenerateOptions {
        max_tokens: 8,
        ..Default::default()
    };
    let (batch, _) = generate_batch(&mut model, &tok, &prompts, &options).unwrap();
    for (p, b) in prompts.iter().zip(&batch) {
        let (single, _) = generate(&mut model, &tok, p, &options, &mut |_| {}).unwrap();
        assert_eq!(single.tokens, b.tokens, "prompt {p:?}");
        assert_eq!(single.text, b.text);
    }
}

#[test]
fn padded_prompt_logits_match_unpadded() {
    let mut model = tiny_random(4, 64, 2, false).unwrap();
    let seq = [4, 9, 16, 25];
    let alone = model.forward_tokens(&ids(&seq), None, None).unwrap();
    let padded = ids(&[0, 0, 4, 9, 16, 25]);
    let mask = Array::from_slice(&[0, 0, 1, 1, 1, 1], &[1, 6]);
    let out = model.forward_tokens(&padded, None, Some(&mask)).unwrap();
    let d = max_abs_diff(&out.index((.., 2.., ..)), &alone);
    assert!(d < 1e-4, "{d}");
}

#[test]
fn sampling_is_seeded_and_top_p_keeps_the_head() {
    let logits = Array::from_slice(&[0.0f32, 10.0, 9.5, -5.0], &[1, 4]);
    let s = Sampling {
        temperature: 1.0,
        top_p: 0.5,
        seed: 0,
    };
    for seed in 0..20 {
        let key = random::key(seed).unwrap();
        // Token 1 alone holds > 50% of the mass: top-p 0.5 must always pick it.
        assert_eq!(sample(&logits, &s, &key).unwrap().item_exact::<u32>(), 1);
    }
    let wide = Sampling { top_p: 1.0, ..s };
    let picks: Vec<u32> = (0..2)
        .map(|_| {
            let key = random::key(7).unwrap();
            sample(&logits, &wide, &key).unwrap().item_exact::<u32>()
        })
        .collect();
    assert_eq!(picks[0], picks[1], "same seed, same pick");
    let greedy = Sampling::default();
    let key = random::key(0).unwrap();
    assert_eq!(
        sample(&logits, &greedy, &key).unwrap().item_exact::<u32>(),
        1
    );
}

#[test]
fn streaming_holds_back_partial_stop_strings() {
    let tok = Tokenizer::from_gguf(&toy("smollm")).unwrap();
    let mut s = TextStream::new();
    let stops = vec!["lo!".to_owned()];
    let mut shown = String::new();
    for ch in "hello!".chars() {
        let id = tok.encode(&ch.to_string(), false).unwrap()[0];
        let hit = s.push(&tok, id, &stops).unwrap();
        if let Some(at) = hit {
            s.text.truncate(at);
            shown.push_str(&s.delta(&stops, true));
            break;
        }
        shown.push_str(&s.delta(&stops, false));
        assert!(!shown.contains("lo"), "{shown}");
    }
    assert_eq!(shown, "hel");
}
