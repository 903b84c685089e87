"""Clients of a deployed `pipe serve`, with the official `openai` client (run by deploy.rs).

Usage:
  deploy_client.py answers URL NAME VERSION
      NAME is answered by VERSION: the response names VERSION, its greedy text is
      VERSION's own, and the base model answers otherwise.
  deploy_client.py loop URL NAME READY UNTIL
      Ask NAME again and again, one request at a time, until version UNTIL answers (or a
      hundred requests failed); touch READY after the first answer. Prints JSON: the
      `model` of every answer, in order, and every failure.
  deploy_client.py adapters URL
      Prints the names of the loaded adapters (the admin route), as JSON.
PIPE_API_KEY, when set, is sent as the bearer token.
Exit status 0 means the checks passed (or the loop ran); AssertionError says what was seen.
"""

import json
import os
import sys
import urllib.request

import openai

QUESTION = "What is the past tense of the verb '{}'? Answer with one word."


# A server started with --api-key wants it on every request, admin routes included.
API_KEY = os.environ.get("PIPE_API_KEY") or "unused"


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=600)


def ask(c, model, verb, max_tokens=24):
    return c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION.format(verb)}],
        temperature=0,
        max_tokens=max_tokens,
    )


def answers(url, name, version):
    c = client(url)
    ids = [m.id for m in c.models.list().data]
    assert name in ids and version in ids, ids
    routed, direct, base = ask(c, name, "walk"), ask(c, version, "walk"), ask(c, "base", "walk")
    r, d, b = (x.choices[0].message.content for x in (routed, direct, base))
    print(f"{name}: {r!r} | {version}: {d!r} | base: {b!r}")
    assert routed.model == version, f"{name} was answered by {routed.model}, not {version}"
    assert r == d, f"{name} answered {r!r}, {version} itself {d!r}"
    assert r != b, f"{name} answered as the base model does: {r!r}"


def loop(url, name, ready, until):
    c = client(url)
    seen, failures = [], []
    while until not in seen:
        try:
            seen.append(ask(c, name, "walk", max_tokens=3).model)
        except Exception as e:  # every failure is the test's business
            failures.append(f"{type(e).__name__}: {e}")
            if len(failures) > 100:
                break
        if seen and not os.path.exists(ready):
            open(ready, "w").close()
    print(json.dumps({"models": seen, "failures": failures}))


def adapters(url):
    request = urllib.request.Request(
        url + "/admin/adapters", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        print(json.dumps([a["name"] for a in json.loads(r.read())["adapters"]]))


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    {"answers": answers, "loop": loop, "adapters": adapters}[what](*args)
