"""Tests of runner.py's sim backend and protocol; standard library only.

Run from this folder: python3 -m unittest -v test_runner
(internal/engine's Go tests run it too.)
"""

import json
import logging
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import unittest

import runner

HERE = os.path.dirname(os.path.abspath(__file__))
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "evaluation", "schema": {"type": "object"}}}


def chat(content, **sampling):
    return {"custom_id": "c", "line": 1, "kind": "chat",
            "messages": [{"role": "system", "content": "You evaluate candidates."},
                         {"role": "user", "content": content}],
            "sampling": sampling}


class RecordingEmitter:
    """Collects results with the time they arrived."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def result(self, rid, text, finish_reason, prompt_tokens, completion_tokens, cached_tokens=0):
        with self.lock:
            self.events.append((rid, time.monotonic() - self.started, completion_tokens))

    def error(self, rid, code, message):
        with self.lock:
            self.events.append((rid, code, message))


class SimAnswerTest(unittest.TestCase):
    def test_structured_answer_is_the_evaluation_json(self):
        for fmt in (JSON_SCHEMA, {"type": "json_object"}):
            answer = runner.sim_generate(chat("Resume: MIT, Microsoft", response_format=fmt), 4096)
            doc = json.loads(answer["text"])
            self.assertEqual(set(doc), {"recommendation", "reasoning", "analysis"})
            self.assertIn(doc["recommendation"], ["Strong Yes", "Yes", "Maybe", "No", "Strong No"])
            self.assertTrue(doc["reasoning"])
            analysis = doc["analysis"]
            self.assertEqual(set(analysis), {"educational_pedigree", "company_pedigree",
                                             "trajectory", "is_software_engineer"})
            for key in ("educational_pedigree", "company_pedigree", "trajectory"):
                self.assertEqual(set(analysis[key]), {"rating", "reasoning"})
                self.assertIn(analysis[key]["rating"], ["Great", "Good", "Okay", "Poor"])
                self.assertTrue(analysis[key]["reasoning"])
            self.assertIsInstance(analysis["is_software_engineer"]["value"], bool)
            self.assertTrue(analysis["is_software_engineer"]["reasoning"])
            self.assertEqual(answer["finish_reason"], "stop")

    def test_plain_answer_is_prose(self):
        text = runner.sim_generate(chat("Resume"), 4096)["text"]
        self.assertTrue(text.startswith("Recommendation: "))
        with self.assertRaises(ValueError):
            json.loads(text)

    def test_answers_vary_and_are_deterministic(self):
        texts = {runner.sim_generate(chat(f"Resume {i}", response_format=JSON_SCHEMA), 4096)["text"]
                 for i in range(50)}
        self.assertGreater(len(texts), 45, "different candidates get different evaluations")
        ratings = {json.loads(t)["analysis"]["trajectory"]["rating"] for t in texts}
        self.assertEqual(ratings, {"Great", "Good", "Okay", "Poor"})

        request = chat("Resume 7", response_format=JSON_SCHEMA, seed=3)
        other_id = dict(request, custom_id="another", line=99)
        self.assertEqual(runner.sim_generate(request, 4096), runner.sim_generate(other_id, 4096))
        reseeded = chat("Resume 7", response_format=JSON_SCHEMA, seed=4)
        self.assertNotEqual(runner.sim_generate(request, 4096)["text"],
                            runner.sim_generate(reseeded, 4096)["text"])

    def test_completion_size_matches_the_seed(self):
        sizes = []
        for i in range(400):
            fmt = JSON_SCHEMA if i % 2 else None
            request = chat(f"Resume of candidate {i}", **({"response_format": fmt} if fmt else {}))
            answer = runner.sim_generate(request, 4096)
            self.assertEqual(answer["completion_tokens"], math.ceil(len(answer["text"].encode()) / 4))
            sizes.append(answer["completion_tokens"])
        self.assertAlmostEqual(statistics.mean(sizes), 310, delta=15)
        self.assertGreaterEqual(min(sizes), 225)
        self.assertLessEqual(max(sizes), 370)


class SimTokenTest(unittest.TestCase):
    def test_prompt_tokens_are_bytes_over_four(self):
        request = chat("é" * 10)  # 20 bytes of UTF-8
        self.assertEqual(runner.sim_prompt_tokens(request), math.ceil((24 + 20) / 4))
        parts = {"kind": "chat", "sampling": {}, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "abcd"},
                                         {"type": "image_url", "image_url": {"url": "x"}},
                                         {"type": "text", "text": "efghi"}]}]}
        self.assertEqual(runner.sim_prompt_tokens(parts), 3)
        completion = {"kind": "completion", "prompt": "a" * 41, "sampling": {}}
        self.assertEqual(runner.sim_generate(completion, 4096)["prompt_tokens"], 11)

    def test_max_tokens_truncates(self):
        answer = runner.sim_generate(chat("Resume", max_tokens=7), 4096)
        self.assertEqual(answer["finish_reason"], "length")
        self.assertEqual(answer["completion_tokens"], 7)
        self.assertEqual(len(answer["text"]), 28)

    def test_context_caps_the_completion(self):
        request = chat("x" * (4 * 4000 - 24))  # 4000 prompt tokens with the system message
        answer = runner.sim_generate(request, 4096)
        self.assertEqual(answer["prompt_tokens"], 4000)
        self.assertEqual(answer["completion_tokens"], 96)
        self.assertEqual(answer["finish_reason"], "length")

    def test_stop_sequence_cuts_the_answer(self):
        full = runner.sim_generate(chat("Resume"), 4096)["text"]
        answer = runner.sim_generate(chat("Resume", stop=["\n\n"]), 4096)
        self.assertEqual(answer["text"], full.split("\n\n")[0])
        self.assertEqual(answer["finish_reason"], "stop")
        self.assertEqual(answer["completion_tokens"], math.ceil(len(answer["text"]) / 4))

    def test_requests_the_sim_cannot_honour(self):
        cases = [
            (chat("x" * 20000), runner.CODE_PROMPT_TOO_LONG, "max_model_len is 4096"),
            (chat("x", n=2), runner.CODE_INVALID_REQUEST, "n>1"),
            (chat("x", logprobs=True), runner.CODE_INVALID_REQUEST, "logprobs"),
            (chat("x", top_logprobs=3), runner.CODE_INVALID_REQUEST, "logprobs"),
            (chat("x", max_tokens=0), runner.CODE_INVALID_REQUEST, "max_tokens"),
            (chat("x", response_format={"type": "yaml"}), runner.CODE_INVALID_REQUEST, "response_format"),
            ({"kind": "chat", "messages": [], "sampling": {}}, runner.CODE_INVALID_REQUEST, "no messages"),
        ]
        for request, code, message in cases:
            with self.subTest(message=message, code=code):
                with self.assertRaises(runner.RequestError) as caught:
                    runner.sim_generate(request, 4096)
                self.assertEqual(caught.exception.code, code)
                self.assertIn(message, caught.exception.message)
        self.assertEqual(runner.sim_generate(chat("x", n=1), 4096)["finish_reason"], "stop")


class SimSchedulerTest(unittest.TestCase):
    def backend(self, tokens_per_second, batch_size):
        emitter = RecordingEmitter()
        config = {"backend": "sim", "sim": {"tokens_per_second": tokens_per_second,
                                            "batch_size": batch_size, "load_seconds": 0}}
        backend = runner.SimBackend(config, emitter, logging.getLogger("test"))
        backend.load()
        self.addCleanup(backend.close, False)
        return backend, emitter

    def wait_for(self, emitter, count, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with emitter.lock:
                if len(emitter.events) >= count:
                    return list(emitter.events)
            time.sleep(0.005)
        self.fail(f"{count} results did not arrive within {timeout}s")

    def test_batch_limit_and_per_request_rate(self):
        # 4000 work tokens/s over 2 slots: 2000/s per running request. Each request
        # is 100 completion + 1 prompt token/8 -> ~0.05 s; the third waits for a slot.
        backend, emitter = self.backend(4000, 2)
        for i in range(3):
            backend.submit(str(i), chat("r", max_tokens=100))
        events = self.wait_for(emitter, 3)
        finish = {rid: at for rid, at, _ in events}
        self.assertAlmostEqual(finish["0"], 0.05, delta=0.03)
        self.assertAlmostEqual(finish["1"], 0.05, delta=0.03)
        self.assertAlmostEqual(finish["2"], 0.10, delta=0.04)

    def test_abort_frees_the_slot_and_sends_nothing(self):
        backend, emitter = self.backend(4000, 1)
        backend.submit("long", chat("r"))  # ~0.6 s alone
        backend.submit("short", chat("r", max_tokens=100))
        time.sleep(0.02)
        backend.abort("long")
        events = self.wait_for(emitter, 1)
        self.assertEqual(events[0][0], "short")
        self.assertLess(events[0][1], 0.2)
        time.sleep(0.1)
        self.assertEqual(len(emitter.events), 1)

    def test_duplicate_id_is_an_error(self):
        backend, _ = self.backend(4000, 1)
        backend.submit("1", chat("r"))
        with self.assertRaises(runner.RequestError) as caught:
            backend.submit("1", chat("r"))
        self.assertEqual(caught.exception.code, runner.CODE_ENGINE_ERROR)


def with_system(system, user, **sampling):
    return {"kind": "chat", "sampling": sampling,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": user}]}


class SimPrefixCacheTest(unittest.TestCase):
    SYSTEM = "s" * 1000  # with the separator, 1,001 shared bytes: 15 blocks of 64

    def test_a_shared_prefix_is_served_from_the_cache_in_whole_blocks(self):
        cache = runner.SimPrefixCache(16, 10_000)
        first = with_system(self.SYSTEM, "alice " * 100)
        second = with_system(self.SYSTEM, "bob " * 100)
        self.assertEqual(cache.admit(first, runner.sim_prompt_tokens(first), 300), 0)
        self.assertEqual(cache.admit(second, runner.sim_prompt_tokens(second), 300), 15 * 16)
        # The same prompt again: all of it but the last token the engine computes.
        tokens = runner.sim_prompt_tokens(first)
        self.assertEqual(cache.admit(first, tokens, 300), tokens - 1)

    def test_a_different_first_block_shares_nothing(self):
        cache = runner.SimPrefixCache(16, 10_000)
        cache.admit(with_system(self.SYSTEM, "alice"), 300, 300)
        other = with_system("t" + self.SYSTEM[1:], "alice")
        self.assertEqual(cache.admit(other, runner.sim_prompt_tokens(other), 300), 0)

    def hit_rate(self, order, capacity_blocks):
        cache = runner.SimPrefixCache(16, capacity_blocks)
        cached = prompt = 0
        for request in order:
            tokens = runner.sim_prompt_tokens(request)
            cached += cache.admit(request, tokens, 300)
            prompt += tokens
        return cached / prompt

    def test_a_bounded_cache_evicts_prefixes_that_are_not_reused_soon(self):
        # 8 system prompts of ~400 tokens, 10 requests each. Interleaved, a prompt
        # comes back after 7 others and their own blocks have gone through a cache
        # of 400 blocks (~6 requests); grouped, it is reused at once.
        systems = [f"profile {k} " + "r" * 1600 for k in range(8)]
        requests = [with_system(systems[i % 8], f"resume {i} " + "x" * 1600) for i in range(80)]
        interleaved = self.hit_rate(requests, 400)
        grouped = self.hit_rate(sorted(requests, key=lambda r: r["messages"][0]["content"]), 400)
        self.assertLess(interleaved, 0.05)
        self.assertGreater(grouped, 0.4)  # 9 of 10 requests reuse ~half their prompt
        # A cache that holds everything serves both orders alike.
        self.assertAlmostEqual(self.hit_rate(requests, 100_000), grouped, delta=0.05)

    def test_the_backend_reports_cached_tokens_and_skips_their_prefill(self):
        results = {}

        class Emitter:
            def result(self, rid, text, finish_reason, prompt_tokens, completion_tokens, cached_tokens=0):
                results[rid] = (prompt_tokens, cached_tokens, time.monotonic())

        def run(prefix_caching):
            results.clear()
            config = {"backend": "sim", "enable_prefix_caching": prefix_caching,
                      "sim": {"tokens_per_second": 20_000, "batch_size": 1, "load_seconds": 0}}
            backend = runner.SimBackend(config, Emitter(), logging.getLogger("test"))
            backend.load()
            self.addCleanup(backend.close, False)
            # Prompts of ~2,000 tokens, 1,000 of them shared; 10 completion tokens.
            start = time.monotonic()
            for i in range(2):
                backend.submit(str(i), with_system("s" * 4000, f"{i}" * 4000, max_tokens=10))
            deadline = time.monotonic() + 5
            while len(results) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            self.assertEqual(len(results), 2)
            return results["0"][2] - start, results["1"][2] - results["0"][2], dict(results)

        first, second, got = run(True)
        self.assertEqual(got["0"][1], 0)
        self.assertEqual(got["1"][1], 62 * 16)  # 4,001 shared bytes: 62 whole blocks of 64
        self.assertLess(second, first * 0.7, "the cached half of the prompt costs no prefill")
        _, _, got = run(False)
        self.assertEqual(got["1"][1], 0, "enable_prefix_caching false: nothing cached")


class ProtocolTest(unittest.TestCase):
    def run_runner(self, commands, sim=None, backend="sim"):
        config = {"backend": backend, "model": "m",
                  "sim": dict({"tokens_per_second": 1e6, "load_seconds": 0}, **(sim or {}))}
        proc = subprocess.run(
            [sys.executable, "-u", os.path.join(HERE, "runner.py"), "--config", json.dumps(config)],
            input="".join(json.dumps(c) + "\n" for c in commands),
            capture_output=True, text=True, timeout=60)
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        return proc, events

    def test_ready_results_and_drain_on_eof(self):
        commands = [{"op": "submit", "id": str(i), "request": chat(f"r{i}")} for i in range(5)]
        commands.append({"op": "submit", "id": "bad", "request": chat("r", n=3)})
        proc, events = self.run_runner(commands)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        ready = events[0]
        self.assertEqual(ready["event"], "ready")
        self.assertTrue(ready["simulated"])
        self.assertEqual(ready["backend"], "sim")
        self.assertEqual(ready["versions"]["python"].split(".")[0], "3")
        results = {e["id"]: e for e in events[1:] if e["event"] == "result"}
        errors = {e["id"]: e for e in events[1:] if e["event"] == "error"}
        self.assertEqual(set(results), {"0", "1", "2", "3", "4"})
        self.assertTrue(all(r["simulated"] and r["completion_tokens"] > 0 for r in results.values()))
        self.assertEqual(errors["bad"]["code"], "invalid_request")
        stderr = proc.stderr.strip().splitlines()
        self.assertTrue(stderr)
        for line in stderr:
            self.assertTrue(line.startswith(runner.SIM_LOG_PREFIX), line)
        # The engine's own count of what it was given, rejected requests included.
        self.assertIn("served 6 requests", proc.stderr)

    def test_shutdown_aborts_what_is_left(self):
        commands = [{"op": "submit", "id": "slow", "request": chat("r")}, {"op": "shutdown"}]
        proc, events = self.run_runner(commands, sim={"tokens_per_second": 10})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual([e["event"] for e in events], ["ready"])
        self.assertIn("served 1 requests", proc.stderr)

    def test_nothing_submitted_is_served_0(self):
        proc, _ = self.run_runner([])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("served 0 requests", proc.stderr)

    def test_crash_on_exits_with_status_3(self):
        commands = [{"op": "submit", "id": "x", "request": chat("contains BOOM here")}]
        proc, events = self.run_runner(commands, sim={"crash_on": "BOOM"})
        self.assertEqual(proc.returncode, runner.EXIT_SIM_CRASH)
        self.assertEqual([e["event"] for e in events], ["ready"])
        self.assertIn("crash_on", proc.stderr)

    def test_unknown_backend_fails_to_load(self):
        proc, events = self.run_runner([], backend="nope")
        self.assertEqual(proc.returncode, runner.EXIT_LOAD_FAILED)
        self.assertEqual(events[0]["event"], "failed")
        self.assertIn("unknown backend 'nope'", events[0]["message"])


if __name__ == "__main__":
    unittest.main()
