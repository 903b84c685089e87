"""Conformance checks of `pipe serve` with the official `openai` client (run by serve.rs).

Usage: serve_openai.py BASE_URL ADAPTER_DIR CHECK
Every check raises AssertionError with what it saw; exit status 0 means all passed.
"""

import json
import sys
import threading
import time
import urllib.error
import urllib.request

import openai

URL, ADAPTER_DIR, CHECK = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=600)

QUESTION = "What is the past tense of the verb '{}'? Answer with one word."
STORY = "Once upon a time, in a small village by the sea,"


def ask(model, verb, **kw):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION.format(verb)}],
        temperature=kw.pop("temperature", 0),
        max_tokens=kw.pop("max_tokens", 24),
        **kw,
    )
    return r


def raw(method, path, body=None, headers=None):
    """(status, parsed JSON body, headers) of a raw HTTP request."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def words(text):
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


def check_basics():
    models = [m.id for m in client.models.list().data]
    assert models[0] == "base" and "past" in models, models

    base, past = ask("base", "walk"), ask("past", "walk")
    b, p = base.choices[0].message.content, past.choices[0].message.content
    print("base:", repr(b), "| past:", repr(p))
    assert words(p) == ["walked"], f"the past-tense adapter answered {p!r}"
    assert len(words(b)) > 1, f"the base model answered {b!r}, not a sentence"
    assert base.object == "chat.completion" and base.model == "base"
    assert past.choices[0].finish_reason == "stop"
    u = past.usage
    assert u.prompt_tokens > 10 and u.completion_tokens >= 1, u
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens

    # Completions: plain text continues; max_tokens ends it with "length".
    c = client.completions.create(model="base", prompt=STORY, max_tokens=12, temperature=0)
    assert c.object == "text_completion" and c.choices[0].finish_reason == "length", c
    assert c.usage.completion_tokens == 12 and len(c.choices[0].text) > 10, c

    # Streaming: chunks rebuild the same greedy text, usage comes last with no choices.
    full = ask("base", "swim", max_tokens=30).choices[0].message.content
    stream = client.chat.completions.create(
        model="base",
        messages=[{"role": "user", "content": QUESTION.format("swim")}],
        temperature=0,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full, (text, full)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0, chunks[-1]
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    # Completions stream too.
    parts = list(client.completions.create(
        model="base", prompt=STORY, max_tokens=12, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts if p.choices) == c.choices[0].text

    # Stop strings, including one that spans token boundaries, in both modes.
    long = client.completions.create(model="base", prompt=STORY, max_tokens=40, temperature=0)
    t = long.choices[0].text
    cut = t.find(" ", len(t) // 2)
    stop = t[cut - 3:cut + 3]
    assert len(stop.strip()) >= 2, t
    want = t[:t.find(stop)]
    for streamed in (False, True):
        r = client.completions.create(model="base", prompt=STORY, max_tokens=40,
                                      temperature=0, stop=[stop, "zzzz"], stream=streamed)
        got = "".join(x.choices[0].text for x in r if x.choices) if streamed \
            else r.choices[0].text
        assert got == want, (streamed, stop, got, want)

    # Log probabilities: greedy tokens carry the top alternative's probability.
    r = ask("base", "walk", max_tokens=5, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) >= 1 and all(len(t.top_logprobs) == 3 for t in content)
    for t in content:
        assert t.logprob <= 0 and abs(t.logprob - t.top_logprobs[0].logprob) < 1e-4, t
    cl = client.completions.create(model="base", prompt=STORY, max_tokens=4,
                                   temperature=0, logprobs=2)
    assert len(cl.choices[0].logprobs.token_logprobs) == 4

    # Seeded sampling repeats; other seeds differ; sampling filters are accepted.
    def sample(seed):
        return client.completions.create(
            model="base", prompt=STORY, max_tokens=20, temperature=1.0, top_p=0.95,
            seed=seed, extra_body={"top_k": 40, "min_p": 0.02, "repetition_penalty": 1.1},
        ).choices[0].text
    assert sample(1) == sample(1)
    assert len({sample(s) for s in (1, 2, 3)}) > 1


def check_errors():
    try:
        ask("no-such-model", "walk")
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        assert e.body["code"] == "model_not_found", e.body
    try:
        ask("base", "walk", max_tokens=10**6)
        raise AssertionError("an over-long request was accepted")
    except openai.BadRequestError as e:
        assert e.body["code"] == "context_length_exceeded", e.body
    for bad, field in [({"temperature": 5}, "temperature"), ({"top_p": 0}, "top_p"),
                       ({"n": 2}, "n")]:
        try:
            ask("base", "walk", **bad)
            raise AssertionError(f"{bad} was accepted")
        except openai.BadRequestError as e:
            assert e.body["param"] == field, e.body
    status, body, _ = raw("POST", "/v1/chat/completions", b'{"model": "base", "messages": [')
    assert status == 400 and body["error"]["type"] == "invalid_request_error", body
    status, body, _ = raw("POST", "/v1/completions", b'{"prompt": "' + b"a" * (2 << 20) + b'"}')
    assert status == 413 and "error" in body, (status, body)
    status, body, _ = raw("GET", "/v1/nothing")
    assert status == 404 and "error" in body


def check_concurrency():
    verbs = ["walk", "swim", "eat", "run", "go", "see", "write", "take"]
    alone = [ask("base", v, max_tokens=20).choices[0].message.content for v in verbs]
    alone += [ask("past", v, max_tokens=8).choices[0].message.content for v in verbs[:4]]
    together = [None] * len(alone)

    def worker(i):
        if i < len(verbs):
            together[i] = ask("base", verbs[i], max_tokens=20).choices[0].message.content
        else:
            together[i] = ask("past", verbs[i - len(verbs)], max_tokens=8).choices[0].message.content
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(alone))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone, list(zip(alone, together))


def long_stream():
    return client.completions.create(model="base", prompt=STORY, max_tokens=4000,
                                     temperature=0, stream=True,
                                     extra_body={"ignore_eos": True})


def health():
    return raw("GET", "/health")[1]


def check_disconnect():
    # The server runs with --max-batch 1 --max-queue 1: two requests fill it.
    a, b = long_stream(), long_stream()
    next(iter(a))
    try:
        client.completions.create(model="base", prompt=STORY, max_tokens=2)
        raise AssertionError("a third request was accepted at capacity")
    except openai.RateLimitError as e:
        assert e.response.headers.get("retry-after") == "1", e.response.headers
        assert e.body["code"] == "rate_limit_exceeded"
    a.close()
    b.close()
    deadline = time.time() + 30
    while health()["in_flight"] != 0:
        assert time.time() < deadline, f"disconnected clients still hold slots: {health()}"
        time.sleep(0.05)
    r = client.completions.create(model="base", prompt=STORY, max_tokens=2, temperature=0)
    assert r.usage.completion_tokens == 2


def check_hot_swap():
    results, errors = {}, []
    past_answer = ask("past", "walk", max_tokens=8).choices[0].message.content

    def worker(i, model):
        try:
            r = ask(model, "walk", max_tokens=8 if model != "base" else 24)
            results[i] = (model, r.choices[0].message.content)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errors.append((i, model, repr(e)))

    threads = []
    for i in range(6):
        threads.append(threading.Thread(target=worker, args=(i, ["base", "past"][i % 2])))
        threads[-1].start()
    status, body, _ = raw("POST", "/admin/adapters", {"name": "past2", "path": ADAPTER_DIR})
    assert status == 200 and body["added"] == "past2", body
    for i in range(6, 12):
        threads.append(threading.Thread(target=worker, args=(i, ["past", "past2"][i % 2])))
        threads[-1].start()
    time.sleep(0.5)
    status, body, _ = raw("DELETE", "/admin/adapters/past")
    assert status == 200 and [a["name"] for a in body["adapters"]] == ["past2"], body
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 12
    for i, (model, text) in results.items():
        if model != "base":
            assert text == past_answer, (i, model, text, past_answer)
    try:
        ask("past", "walk")
        raise AssertionError("a removed adapter still answers")
    except openai.NotFoundError:
        pass
    ids = [m.id for m in client.models.list().data]
    assert "past" not in ids and "past2" in ids, ids
    status, body, _ = raw("POST", "/admin/adapters", {"name": "x", "path": "/nonexistent"})
    assert status == 400 and "error" in body, body


def check_api_key():
    try:
        ask("base", "walk")
        raise AssertionError("a request without the API key was accepted")
    except openai.AuthenticationError:
        pass
    keyed = openai.OpenAI(base_url=URL + "/v1", api_key="sesame", max_retries=0)
    r = keyed.completions.create(model="base", prompt=STORY, max_tokens=2)
    assert r.usage.completion_tokens == 2
    assert raw("GET", "/health")[0] == 200


{
    "basics": check_basics,
    "errors": check_errors,
    "concurrency": check_concurrency,
    "disconnect": check_disconnect,
    "hot_swap": check_hot_swap,
    "api_key": check_api_key,
}[CHECK]()
print("ok", CHECK)
