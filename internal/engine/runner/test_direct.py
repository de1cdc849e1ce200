"""Tests of direct.py, the direct-feed baseline: its reading of batch lines, and whole
runs against the sim backend (and the stand-in vllm of contract/).

Run from this folder: python3 -m unittest -v test_direct
"""

import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import direct
import runner

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULTS = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 2000}


def batch_line(custom_id, content, **body):
    body = dict({"model": "m", "messages": [{"role": "system", "content": "You evaluate candidates."},
                                            {"role": "user", "content": content}]}, **body)
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


class RequestOfLineTest(unittest.TestCase):
    def test_batch_form_with_defaults_filling_only_gaps(self):
        request = direct.request_of_line(batch_line("a", "hi", temperature=0.2, stop="END",
                                                    max_completion_tokens=50), 3, DEFAULTS)
        self.assertEqual(request["kind"], "chat")
        self.assertEqual(request["line"], 3)
        self.assertEqual(request["messages"][1], {"role": "user", "content": "hi"})
        self.assertEqual(request["sampling"], {"max_tokens": 50, "temperature": 0.2, "top_p": 0.9,
                                               "stop": ["END"]})

    def test_short_forms_and_completion_logprobs(self):
        request = direct.request_of_line({"custom_id": "p", "prompt": "Once", "logprobs": 2}, 1, {})
        self.assertEqual((request["kind"], request["prompt"]), ("completion", "Once"))
        self.assertEqual(request["sampling"], {"logprobs": True, "top_logprobs": 2})
        request = direct.request_of_line({"custom_id": "m", "messages": [{"role": "user", "content": "x"}]}, 1, {})
        self.assertEqual(request["kind"], "chat")

    def test_unusable_lines(self):
        for obj, reason in [([], "not a JSON object"), ({"prompt": "x"}, "no custom_id"),
                            ({"custom_id": "x", "body": {}}, "no messages and no prompt")]:
            with self.subTest(reason=reason), self.assertRaisesRegex(ValueError, reason):
                direct.request_of_line(obj, 1, {})


class DirectRunTest(unittest.TestCase):
    def run_direct(self, lines, *args, env=None):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "requests.jsonl")
            with open(path, "w") as f:
                for line in lines:
                    f.write(line if isinstance(line, str) else json.dumps(line) + "\n")
            out = os.path.join(tmp, "out.jsonl")
            proc = subprocess.run([sys.executable, os.path.join(HERE, "direct.py"), "--input", path,
                                   "--output", out, *args], capture_output=True, text=True, timeout=120,
                                  env=dict(os.environ, **(env or {})))
            self.assertEqual(proc.returncode, 0, proc.stderr)
            with open(out) as f:
                events = [json.loads(line) for line in f]
        return json.loads(proc.stdout), events, proc.stderr

    def test_sim_run_counts_and_rate(self):
        # 160 equal requests (answers cut at 200 tokens) through 16 slots at 40,000
        # work tokens/s: ten full waves, so the measured rate is the configured one.
        # The prompts are alike, so the prefix cache is off: it would skip their prefill.
        lines = [batch_line(f"c{i}", "r" * 400, max_tokens=200) for i in range(160)]
        lines += ["not json\n", batch_line("n3", "x", n=3)]
        summary, events, stderr = self.run_direct(
            lines, "--backend", "sim", "--config",
            json.dumps({"enable_prefix_caching": False,
                        "sim": {"tokens_per_second": 40000, "batch_size": 16, "load_seconds": 0.05}}))
        self.assertEqual((summary["lines"], summary["requests"], summary["invalid_lines"]), (162, 161, 1))
        self.assertEqual(summary["results"], 160)
        self.assertEqual(summary["errors"], {"invalid_request": 1})
        self.assertTrue(summary["simulated"])
        self.assertEqual(summary["completion_tokens"], 160 * 200)
        self.assertEqual(summary["prompt_tokens"], sum(e.get("prompt_tokens", 0) for e in events))
        self.assertAlmostEqual(summary["tokens_per_second"], 40000, delta=40000 * 0.2)
        self.assertAlmostEqual(summary["seconds"],
                               (summary["prompt_tokens"] + summary["completion_tokens"]) / 40000, delta=0.3)
        self.assertGreaterEqual(summary["load_seconds"], 0.05)
        self.assertEqual(summary["ready"]["kv_cache_tokens"], 16 * 4096)
        self.assertEqual(len(events), 161)
        self.assertIn("line 161 skipped", stderr)

    def test_vllm_stand_in_run(self):
        lines = [batch_line(f"c{i}", f"Resume {i}") for i in range(20)]
        lines.append(batch_line("json", "x", response_format={"type": "json_object"}))
        summary, events, _ = self.run_direct(lines, "--backend", "vllm", "--model", "fake/model",
                                             "--max-model-len", "1024",
                                             env={"PYTHONPATH": os.path.join(HERE, "contract")})
        self.assertEqual((summary["results"], summary["errors"]), (21, {}))
        self.assertFalse(summary["simulated"])
        self.assertEqual(summary["ready"]["weights_gib"], 7.166)
        self.assertEqual(summary["completion_tokens"], sum(e["completion_tokens"] for e in events))
        self.assertGreater(summary["tokens_per_second"], 0)
        answers = {e["id"]: e for e in events}
        self.assertEqual(json.loads(answers["21"]["text"]), {"answer": "fake"})


class CountingBackend(runner.Backend):
    """Answers each request a few milliseconds after its submit, from its own thread,
    and counts how many it held at once."""

    name = "counting"

    def __init__(self, config, emitter, log):
        super().__init__(config, emitter, log)
        self.lock = threading.Lock()
        self.held = self.most_held = 0
        self.answers = queue.Queue()

    def load(self):
        threading.Thread(target=self.answer, daemon=True).start()
        return {"max_num_seqs": self.config.get("max_num_seqs")}

    def submit(self, rid, request):
        with self.lock:
            self.held += 1
            self.most_held = max(self.most_held, self.held)
        self.answers.put(rid)

    def answer(self):
        while True:
            rid = self.answers.get()
            time.sleep(0.002)
            with self.lock:
                self.held -= 1
            self.emitter.result(rid, "ok", "stop", 10, 1)

    def serve(self, stop):
        stop.wait()
        while True:
            with self.lock:
                if self.held == 0:
                    return
            time.sleep(0.005)

    def abort(self, rid):
        pass


class WindowTest(unittest.TestCase):
    """The baseline keeps the engine at the batch the worker keeps it at."""

    def setUp(self):
        runner.BACKENDS["counting"] = CountingBackend
        self.addCleanup(runner.BACKENDS.pop, "counting")

    def run_counting(self, config, max_in_flight=None):
        backends = []
        runner.BACKENDS["counting"] = lambda *args: backends.append(CountingBackend(*args)) or backends[-1]
        requests = [(str(i), {"custom_id": f"c{i}"}) for i in range(200)]
        tally = direct.Tally()
        info, _ = direct.run(dict(config, backend="counting"), requests, tally, logging.getLogger("test"),
                             max_in_flight)
        self.assertEqual(tally.results, 200, "every request answered")
        return backends[0].most_held, info

    def test_the_batch_and_the_workers_margin(self):
        most, info = self.run_counting({"max_num_seqs": 32})
        self.assertEqual(info["direct_max_in_flight"], 32 + 2)
        self.assertLessEqual(most, 34)
        self.assertGreaterEqual(most, 30, "the window is kept full")

    def test_an_explicit_window_and_none(self):
        most, _ = self.run_counting({"max_num_seqs": 32}, max_in_flight=5)
        self.assertLessEqual(most, 5)
        most, info = self.run_counting({"max_num_seqs": 32}, max_in_flight=0)
        self.assertNotIn("direct_max_in_flight", info)
        self.assertGreater(most, 34, "every request at once")

    def test_a_backend_without_a_batch_takes_every_request(self):
        most, info = self.run_counting({})
        self.assertNotIn("direct_max_in_flight", info)
        self.assertGreater(most, 34)


if __name__ == "__main__":
    unittest.main()
