"""Tests of the runner's vllm backend against the stand-in vllm of contract/ (see
contract/README.md); standard library only.

Run from this folder: python3 -m unittest -v test_vllm_backend
"""

import json
import logging
import os
import subprocess
import sys
import threading
import time
import unittest

import protocol
import vllm_backend

HERE = os.path.dirname(os.path.abspath(__file__))
CONTRACT = os.path.join(HERE, "contract")

# Field names of real vLLM, transcribed from vLLM main's vllm/sampling_params.py
# (SamplingParams and StructuredOutputsParams) and vllm/engine/arg_utils.py
# (EngineArgs; only the fields checked there). The stand-in may take no keyword
# outside these, and the backend may pass none.
REAL_SAMPLING_PARAMS_FIELDS = {
    "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p",
    "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens",
    "logprobs", "prompt_logprobs", "prompt_logprob_token_ids", "prompt_logprob_start",
    "logprob_token_ids", "flat_logprobs", "detokenize", "skip_special_tokens",
    "spaces_between_special_tokens", "include_stop_str_in_output", "output_kind", "stream_interval",
    "skip_clone", "structured_outputs", "logit_bias", "allowed_token_ids", "extra_args", "bad_words",
    "skip_reading_prefix_cache", "thinking_token_budget", "repetition_detection",
    "routed_experts_prompt_start", "trace_decode_token_ids",
}
REAL_STRUCTURED_OUTPUTS_FIELDS = {
    "json", "regex", "choice", "grammar", "json_object", "disable_any_whitespace",
    "disable_additional_properties", "whitespace_pattern", "structural_tag",
}
REAL_ENGINE_ARGS_FIELDS = {
    "model", "tokenizer", "skip_tokenizer_init", "tokenizer_mode", "trust_remote_code",
    "download_dir", "load_format", "dtype", "kv_cache_dtype", "seed", "max_model_len",
    "pipeline_parallel_size", "tensor_parallel_size", "block_size", "enable_prefix_caching",
    "gpu_memory_utilization", "max_num_batched_tokens", "max_num_seqs", "max_logprobs",
    "disable_log_stats", "revision", "quantization", "enforce_eager",
}

SCHEMA = {"type": "object", "properties": {"recommendation": {"type": "string", "enum": ["Yes", "No"]},
                                           "score": {"type": "number"}, "swe": {"type": "boolean"}}}


def setUpModule():
    sys.path.insert(0, CONTRACT)


def tearDownModule():
    sys.path.remove(CONTRACT)
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


def chat(content, system="You evaluate candidates.", **sampling):
    return {"custom_id": "c", "line": 1, "kind": "chat",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}],
            "sampling": sampling}


def chatml(messages):
    """The stand-in tokenizer's template: one token a byte, BOS written as text."""
    text = "<s>" + "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n"


class RecordingEmitter:
    def __init__(self):
        self.events = []
        self.cond = threading.Condition()

    def result(self, rid, text, finish_reason, prompt_tokens, completion_tokens, cached_tokens=0, **extra):
        self._add(dict(event="result", id=rid, text=text, finish_reason=finish_reason,
                       prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                       cached_tokens=cached_tokens, at=time.monotonic(), **extra))

    def error(self, rid, code, message):
        self._add(dict(event="error", id=rid, code=code, message=message, at=time.monotonic()))

    def _add(self, event):
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait(self, count, timeout=10):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.events) >= count, timeout):
                raise AssertionError(f"{count} events did not arrive in {timeout}s: {self.events}")
            return {e["id"]: e for e in self.events}


class FakeMatchesVLLMTest(unittest.TestCase):
    """The stand-in is only worth its tests if it takes what real vLLM takes."""

    def test_keyword_sets_are_real_vllm_names(self):
        import inspect

        from vllm import EngineArgs, SamplingParams
        from vllm.sampling_params import StructuredOutputsParams
        sampling = set(inspect.signature(SamplingParams).parameters)
        self.assertLessEqual(sampling, REAL_SAMPLING_PARAMS_FIELDS)
        self.assertEqual(set(inspect.signature(StructuredOutputsParams).parameters),
                         REAL_STRUCTURED_OUTPUTS_FIELDS)
        self.assertLessEqual(set(inspect.signature(EngineArgs).parameters), REAL_ENGINE_ARGS_FIELDS)

    def test_rejects_what_vllm_rejects(self):
        from vllm import EngineArgs, SamplingParams
        from vllm.sampling_params import StructuredOutputsParams
        with self.assertRaises(TypeError):
            SamplingParams(guided_decoding={"json": {}})  # the pre-0.11 name
        with self.assertRaises(TypeError):
            EngineArgs(model="m", gpu_util=0.5)
        for bad in ({"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"max_tokens": 0},
                    {"presence_penalty": 3}, {"top_k": -2}, {"stop": [""]}, {"n": 2, "temperature": 0}):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                SamplingParams(**bad)
        with self.assertRaises(ValueError):
            StructuredOutputsParams()
        with self.assertRaises(ValueError):
            StructuredOutputsParams(json={}, json_object=True)


class SamplingMappingTest(unittest.TestCase):
    def kwargs(self, **sampling):
        from vllm.sampling_params import StructuredOutputsParams
        return vllm_backend.sampling_kwargs(sampling, StructuredOutputsParams)

    def test_no_max_tokens_means_the_rest_of_the_context(self):
        kwargs, job = self.kwargs()
        self.assertEqual(kwargs, {"max_tokens": None})  # not vLLM's default of 16
        self.assertFalse(job.choices)

    def test_every_field_maps_to_its_vllm_name(self):
        kwargs, _ = self.kwargs(max_tokens=50, temperature=0.7, top_p=0.9, top_k=40, seed=7, n=1,
                                stop="END", presence_penalty=0.5, frequency_penalty=-0.5)
        self.assertEqual(kwargs, {"max_tokens": 50, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                                  "seed": 7, "n": 1, "stop": ["END"], "presence_penalty": 0.5,
                                  "frequency_penalty": -0.5})
        self.assertLessEqual(set(kwargs) | {"output_kind", "structured_outputs", "logprobs"},
                             REAL_SAMPLING_PARAMS_FIELDS)

    def test_response_format_becomes_structured_outputs(self):
        kwargs, _ = self.kwargs(response_format={"type": "json_schema",
                                                 "json_schema": {"name": "e", "schema": SCHEMA}})
        self.assertEqual(kwargs["structured_outputs"].json, SCHEMA)
        self.assertIsNone(kwargs["structured_outputs"].json_object)
        kwargs, _ = self.kwargs(response_format={"type": "json_object"})
        self.assertIs(kwargs["structured_outputs"].json_object, True)
        self.assertIsNone(kwargs["structured_outputs"].json)
        kwargs, _ = self.kwargs(response_format={"type": "text"})
        self.assertNotIn("structured_outputs", kwargs)
        for fmt in ({"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": "x"}},
                    {"type": "yaml"}):
            with self.subTest(fmt=fmt), self.assertRaises(protocol.RequestError) as caught:
                self.kwargs(response_format=fmt)
            self.assertEqual(caught.exception.code, protocol.CODE_INVALID_REQUEST)

    def test_logprobs(self):
        kwargs, job = self.kwargs(logprobs=True, top_logprobs=3)
        self.assertEqual(kwargs["logprobs"], 3)
        self.assertEqual((job.choices, job.top_logprobs), (True, 3))
        kwargs, job = self.kwargs(logprobs=True)
        self.assertEqual((kwargs["logprobs"], job.top_logprobs), (0, 0))
        with self.assertRaises(protocol.RequestError):
            self.kwargs(top_logprobs=2)

    def test_engine_args_take_only_what_the_run_set(self):
        self.assertEqual(vllm_backend.engine_args_kwargs({"backend": "vllm", "model": "m"}), {"model": "m"})
        config = {"model": "m", "gpu_memory_utilization": 0.85, "max_model_len": 8192,
                  "enable_prefix_caching": False, "tensor_parallel_size": 2, "kv_cache_dtype": "fp8",
                  "load_format": "dummy", "max_num_seqs": 512, "enforce_eager": True, "sim": {"ignored": True}}
        kwargs = vllm_backend.engine_args_kwargs(config)
        self.assertEqual(kwargs, {"model": "m", "gpu_memory_utilization": 0.85, "max_model_len": 8192,
                                  "enable_prefix_caching": False, "tensor_parallel_size": 2,
                                  "kv_cache_dtype": "fp8", "load_format": "dummy", "max_num_seqs": 512,
                                  "enforce_eager": True})
        self.assertLessEqual(set(kwargs), REAL_ENGINE_ARGS_FIELDS)
        with self.assertRaises(ValueError):
            vllm_backend.engine_args_kwargs({"backend": "vllm"})


class LogTapTest(unittest.TestCase):
    def test_reads_vllm_start_up_lines(self):
        tap = vllm_backend.VLLMLogTap()
        for line in [
            # vLLM 0.11-era wording
            "(EngineCore_DP0 pid=212) INFO 10-06 12:00:20 [gpu_model_runner.py:2602] "
            "Model loading took 7.1659 GiB and 3.041312 seconds",
            "(EngineCore_DP0 pid=212) INFO 10-06 12:00:31 [gpu_worker.py:298] Available KV cache memory: 58.21 GiB",
            "(EngineCore_DP0 pid=212) INFO 10-06 12:00:31 [kv_cache_utils.py:1087] GPU KV cache size: 1,271,600 tokens",
            "(EngineCore_DP0 pid=212) INFO 10-06 12:00:31 [kv_cache_utils.py:1091] "
            "Maximum concurrency for 8,192 tokens per request: 155.22x",
            "(EngineCore_DP0 pid=212) INFO 10-06 12:00:40 [gpu_model_runner.py:3480] "
            "Graph capturing finished in 8 secs, took 0.31 GiB",
            "INFO:     Application startup complete.",
        ]:
            tap.scan(line)
        self.assertEqual(tap.figures, {"weights_gib": 7.1659, "kv_cache_gib": 58.21, "kv_cache_tokens": 1271600,
                                       "max_concurrency": 155.22, "graphs_gib": 0.31})
        tap = vllm_backend.VLLMLogTap()
        tap.scan("Model loading took 55.22 GiB memory and 20.3s")  # newer wording
        self.assertEqual(tap.figures, {"weights_gib": 55.22})


class BackendTest(unittest.TestCase):
    """The backend in this process, its serving loop in a thread of its own."""

    def start(self, **config):
        emitter = RecordingEmitter()
        config = dict({"backend": "vllm", "model": "fake/model", "max_model_len": 1024,
                       "gpu_memory_utilization": 0.5, "enable_prefix_caching": True}, **config)
        backend = vllm_backend.VLLMBackend(config, emitter, logging.getLogger("test"))
        info = backend.load()
        stop = threading.Event()
        server = threading.Thread(target=backend.serve, args=(stop,), daemon=True)
        server.start()

        def finish(drain=True):
            stop.set()
            server.join(5)
            backend.close(drain)
        self.addCleanup(lambda: stop.is_set() or finish(False))
        return backend, emitter, info, finish

    def test_ready_fields(self):
        _, _, info, _ = self.start()
        self.assertEqual(info["max_model_len"], 1024)
        self.assertEqual(info["kv_cache_tokens"], 2048 * 16)  # num_gpu_blocks * block_size
        self.assertEqual(info["weights_gib"], 7.166)  # from the engine core's log line
        self.assertEqual(info["kv_cache_gib"], 4.0)
        self.assertEqual(info["graphs_gib"], 0.52)
        self.assertEqual(info["max_concurrency"], 32.0)  # vLLM's own figure, from its log
        self.assertEqual(info["versions"]["vllm"], "0.11.0+vbatch.contract")

    def test_results_stream_as_each_finishes(self):
        backend, emitter, _, finish = self.start()
        backend.submit("long", chat("Resume one"))
        backend.submit("short", chat("Resume two", max_tokens=4))
        events = emitter.wait(2)
        self.assertLess(events["short"]["at"], events["long"]["at"] - 0.05,
                        "the short answer waited for the long one")
        self.assertEqual(events["short"]["finish_reason"], "length")
        self.assertEqual(events["short"]["completion_tokens"], 4)
        long = events["long"]
        self.assertEqual(long["finish_reason"], "stop")
        rendered = chatml(chat("Resume one")["messages"])
        self.assertEqual(long["prompt_tokens"], len(rendered.encode()), "the chat template's tokens")
        self.assertIn("<|im_start|>assistant\\n", long["text"], "the generation prompt was appended")
        self.assertEqual(long["completion_tokens"], len(long["text"].encode()) + 1, "answer bytes + EOS")
        # Batching goes on across calls: a request submitted now joins the running engine.
        backend.submit("later", {"kind": "completion", "prompt": "Once", "sampling": {"max_tokens": 3}})
        later = emitter.wait(3)["later"]
        self.assertEqual((later["prompt_tokens"], later["completion_tokens"]), (5, 3), "BOS + 4 bytes")
        finish()

    def test_per_request_failures_stay_with_their_request(self):
        backend, emitter, _, finish = self.start()
        failures = {
            "too-long": (chat("x" * 1100), protocol.CODE_PROMPT_TOO_LONG, "max_model_len is 1024"),
            "exactly-full": (chat("y" * (1024 - len(chatml(chat("")["messages"])))),
                             protocol.CODE_PROMPT_TOO_LONG, "prompt is 1024 tokens"),
            "cold": (chat("x", temperature=-1), protocol.CODE_INVALID_REQUEST, "temperature must be non-negative"),
            "top-p": (chat("x", top_p=1.5), protocol.CODE_INVALID_REQUEST, "top_p must be in (0, 1]"),
            "greedy-n": (chat("x", temperature=0, n=2), protocol.CODE_INVALID_REQUEST, "greedy"),
            "image": ({"kind": "chat", "sampling": {}, "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
                protocol.CODE_INVALID_REQUEST, "image_url"),
            "role": ({"kind": "chat", "sampling": {}, "messages": [{"role": "robot", "content": "hi"}]},
                     protocol.CODE_INVALID_REQUEST, "chat template"),
        }
        for rid, (request, code, message) in failures.items():
            with self.subTest(rid=rid), self.assertRaises(protocol.RequestError) as caught:
                backend.submit(rid, request)
            self.assertEqual(caught.exception.code, code)
            self.assertIn(message, caught.exception.message)
        # Rejected by vLLM's add_request rather than by SamplingParams: still this request alone.
        backend.submit("many-logprobs", chat("x", logprobs=True, top_logprobs=25))
        backend.submit("fine", chat("x", max_tokens=2))
        events = emitter.wait(2)
        self.assertEqual(events["many-logprobs"]["code"], protocol.CODE_INVALID_REQUEST)
        self.assertIn("greater than max allowed: 20", events["many-logprobs"]["message"])
        self.assertEqual(events["fine"]["event"], "result")
        finish()

    def test_structured_outputs_and_logprobs_reach_the_answer(self):
        backend, emitter, _, finish = self.start()
        backend.submit("json", chat("x", response_format={"type": "json_schema",
                                                          "json_schema": {"name": "e", "schema": SCHEMA}}))
        backend.submit("object", chat("x", response_format={"type": "json_object"}))
        backend.submit("lp", chat("x", max_tokens=3, logprobs=True, top_logprobs=2))
        events = emitter.wait(3)
        self.assertEqual(json.loads(events["json"]["text"]), {"recommendation": "Yes", "score": 1.5, "swe": True})
        self.assertEqual(json.loads(events["object"]["text"]), {"answer": "fake"})
        content = events["lp"]["logprobs"]["content"]
        self.assertEqual([c["token"] for c in content], ["F", "a", "k"])
        self.assertEqual(content[0]["logprob"], -0.25)
        self.assertEqual(content[0]["bytes"], [70])
        self.assertEqual([t["token"] for t in content[0]["top_logprobs"]], ["F", "G"])
        self.assertEqual(len(events["lp"]["choices"]), 1)
        finish()

    def test_the_context_caps_the_answer(self):
        backend, emitter, _, finish = self.start(max_model_len=200)
        backend.submit("capped", chat("Resume", max_tokens=2000))
        answer = emitter.wait(1)["capped"]
        self.assertEqual(answer["finish_reason"], "length")
        self.assertEqual(answer["prompt_tokens"] + answer["completion_tokens"], 200)
        finish()

    def test_prefix_cache_hits_are_reported(self):
        backend, emitter, _, finish = self.start()
        system = "A long shared system prompt about how to evaluate candidates. " * 2
        backend.submit("first", chat("one", system=system, max_tokens=2))
        emitter.wait(1)
        backend.submit("second", chat("two", system=system, max_tokens=2))
        events = emitter.wait(2)
        self.assertEqual(events["first"]["cached_tokens"], 0)
        self.assertGreater(events["second"]["cached_tokens"], 100)
        self.assertEqual(events["second"]["cached_tokens"] % 16, 0, "whole blocks")
        finish()

    def test_abort_drops_the_request_and_sends_nothing(self):
        backend, emitter, _, finish = self.start()
        backend.submit("doomed", chat("Resume"))
        time.sleep(0.05)
        backend.abort("doomed")
        backend.abort("never-seen")  # harmless
        backend.submit("kept", chat("Resume", max_tokens=2))
        events = emitter.wait(1)
        time.sleep(0.5)  # the doomed answer needs ~0.45 s: it would be here by now
        self.assertEqual(list(events), ["kept"])
        self.assertEqual(len(emitter.events), 1)
        finish()
        self.assertFalse(backend.engine.has_unfinished_requests())

    def test_shutdown_without_drain_aborts_what_is_running(self):
        backend, emitter, _, finish = self.start()
        backend.submit("a", chat("Resume"))
        backend.submit("b", chat("Resume"))
        time.sleep(0.05)
        finish(drain=False)
        self.assertFalse(backend.engine.has_unfinished_requests())
        self.assertEqual(emitter.events, [])

    def test_duplicate_id_is_an_error(self):
        backend, emitter, _, finish = self.start()
        backend.submit("1", chat("Resume"))
        with self.assertRaises(protocol.RequestError) as caught:
            backend.submit("1", chat("Resume"))
        self.assertEqual(caught.exception.code, protocol.CODE_ENGINE_ERROR)
        finish()


class ProtocolTest(unittest.TestCase):
    """runner.py with backend vllm, as the worker starts it."""

    def run_runner(self, commands, config=None, env=None):
        config = dict({"backend": "vllm", "model": "fake/model", "max_model_len": 512}, **(config or {}))
        proc = subprocess.run(
            [sys.executable, "-u", os.path.join(HERE, "runner.py"), "--config", json.dumps(config)],
            input="".join(json.dumps(c) + "\n" for c in commands), capture_output=True, text=True,
            timeout=60, env=dict(os.environ, PYTHONPATH=CONTRACT, **(env or {})))
        return proc, [json.loads(line) for line in proc.stdout.splitlines()]

    def test_engine_failure_exits_4(self):
        commands = [{"op": "submit", "id": "ok", "request": chat("fine", max_tokens=2)},
                    {"op": "submit", "id": "boom", "request": chat("this one has POISON in it")}]
        proc, events = self.run_runner(commands, env={"VBATCH_FAKE_VLLM_FAIL_ON": "POISON",
                                                      "VBATCH_FAKE_VLLM_STEP_SECONDS": "0.05"})
        self.assertEqual(proc.returncode, protocol.EXIT_ENGINE_FAILED, proc.stderr)
        self.assertEqual(events[0]["event"], "ready")
        # "ok" is answered only if it finished in a step before "boom" joined the batch.
        self.assertLessEqual({e["id"] for e in events[1:]}, {"ok"})
        self.assertTrue(all(e["event"] == "result" for e in events[1:]), events)
        self.assertIn("illegal memory access", proc.stderr, "the engine core's own words reach the log")
        self.assertIn("the vLLM engine failed; exiting with status 4", proc.stderr)

    def test_load_failure_says_why(self):
        proc, events = self.run_runner([], config={"model": "missing/model"})
        self.assertEqual(proc.returncode, protocol.EXIT_LOAD_FAILED)
        self.assertEqual(events[0]["event"], "failed")
        self.assertIn("missing/model is not a local folder", events[0]["message"])
        self.assertIn("OSError", proc.stderr, "the traceback is in the log")

    def test_stdout_carries_only_protocol_lines(self):
        proc, events = self.run_runner([{"op": "submit", "id": "1", "request": chat("x", max_tokens=1)}])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual([e["event"] for e in events], ["ready", "result"])
        # The engine core's start-up lines went to the log, and were read on the way.
        self.assertIn("Graph capturing finished in 9 secs, took 0.52 GiB", proc.stderr)
        self.assertEqual(events[0]["graphs_gib"], 0.52)


if __name__ == "__main__":
    unittest.main()
