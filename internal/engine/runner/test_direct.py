"""Tests of direct.py, the direct-feed baseline: its reading of batch lines, and whole
runs against the sim backend (and the stand-in vllm of contract/).

Run from this folder: python3 -m unittest -v test_direct
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import direct

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


if __name__ == "__main__":
    unittest.main()
