"""Tests of the transformers backend's pure parts (no torch here): the byte
tokenizer, prompts, the shipped dummy config, what a request may ask of the
engine, and how a finished generation becomes an answer. The GPU path itself is
checked by the smoke run on the device machine.

Run from this folder: python3 -m unittest -v test_hf_backend
"""

import json
import os
import subprocess
import sys
import unittest

import hf_backend
import protocol

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = {"temperature": 0.7, "top_p": 0.9, "top_k": 0}


def chat(content, **sampling):
    return {"kind": "chat", "sampling": sampling,
            "messages": [{"role": "system", "content": "You evaluate candidates."},
                         {"role": "user", "content": content}]}


class PackedByteTokenizerTest(unittest.TestCase):
    def test_four_bytes_a_token_counts_like_bpe(self):
        tok = hf_backend.ByteTokenizer(bytes_per_token=4)
        text = "x" * 3150
        self.assertEqual(len(tok.encode(text, add_special_tokens=False)), 788)
        ids = tok.encode("same text", add_special_tokens=False)
        self.assertEqual(ids, tok.encode("same text", add_special_tokens=False))
        self.assertTrue(all(258 < i < tok.vocab_size for i in ids))

    def test_packed_ids_decode_to_four_printable_bytes(self):
        tok = hf_backend.ByteTokenizer(bytes_per_token=4)
        text = tok.decode([1000, 50000, tok.eos_token_id])
        self.assertEqual(len(text), 8)
        self.assertTrue(text.isprintable())


class ByteTokenizerTest(unittest.TestCase):
    def setUp(self):
        self.tok = hf_backend.ByteTokenizer()

    def test_bytes_round_trip(self):
        ids = self.tok.encode("Zürich 東京")
        self.assertEqual(ids[0], 256, "BOS first")
        self.assertEqual(len(ids), 1 + len("Zürich 東京".encode()))
        self.assertEqual(self.tok.decode(ids), "Zürich 東京")
        self.assertEqual(self.tok.decode(ids, skip_special_tokens=False), "<s>Zürich 東京")
        self.assertEqual(self.tok.encode("ab", add_special_tokens=False), [97, 98])

    def test_random_model_ids_decode_to_text_of_their_length(self):
        text = self.tok.decode([97, 257, 1000, 128255, 300])
        self.assertEqual(len(text), 4, "EOS skipped, every other id one character")
        self.assertTrue(text.isprintable())

    def test_chat_template(self):
        messages = protocol.chat_messages(chat("Resume"))
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        self.assertEqual(text, "<|system|>\nYou evaluate candidates.\n<|user|>\nResume\n<|assistant|>\n")
        self.assertEqual(self.tok.apply_chat_template(messages, tokenize=True),
                         list(text[:-len("<|assistant|>\n")].encode()))

    def test_special_ids_must_follow_the_bytes(self):
        with self.assertRaises(ValueError):
            hf_backend.ByteTokenizer(bos_token_id=1)


class PromptTest(unittest.TestCase):
    """protocol.prompt_token_ids, as both GPU backends tokenize."""

    def test_chat_and_completion(self):
        tok = hf_backend.ByteTokenizer()
        ids = protocol.prompt_token_ids(tok, chat("Resume"))
        self.assertEqual(bytes(ids).decode(), "<|system|>\nYou evaluate candidates.\n<|user|>\nResume\n<|assistant|>\n")
        parts = {"kind": "chat", "sampling": {}, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
        self.assertEqual(bytes(protocol.prompt_token_ids(tok, parts)).decode(), "<|user|>\na\nb\n<|assistant|>\n")
        self.assertEqual(protocol.prompt_token_ids(tok, {"kind": "completion", "prompt": "hi", "sampling": {}}),
                         [256, 104, 105])

    def test_requests_without_text(self):
        tok = hf_backend.ByteTokenizer()
        for request, message in [
            ({"kind": "chat", "messages": [], "sampling": {}}, "no messages"),
            ({"kind": "completion", "prompt": "", "sampling": {}}, "no messages and no prompt"),
            ({"kind": "chat", "sampling": {}, "messages": [{"content": "no role"}]}, "with a role"),
            ({"kind": "chat", "sampling": {}, "messages": [
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "input_audio"),
        ]:
            with self.subTest(message=message), self.assertRaises(protocol.RequestError) as caught:
                protocol.prompt_token_ids(tok, request)
            self.assertEqual(caught.exception.code, protocol.CODE_INVALID_REQUEST)
            self.assertIn(message, caught.exception.message)


class ShippedModelTest(unittest.TestCase):
    def test_llama_3_6b_config(self):
        folder = hf_backend.model_dir("llama-3.6b")
        self.assertTrue(os.path.samefile(folder, os.path.join(HERE, os.pardir, "models", "llama-3.6b")))
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        self.assertEqual(config["model_type"], "llama")
        # The count models/README.md states, and 6.72 GiB of bf16 weights.
        self.assertEqual(hf_backend.llama_parameter_count(config), 3_606_752_256)
        self.assertAlmostEqual(hf_backend.llama_parameter_count(config) * 2 / 2**30, 6.72, places=2)
        tok = hf_backend.ByteTokenizer(config["vocab_size"], config["bos_token_id"], config["eos_token_id"],
                                       config["pad_token_id"])
        self.assertEqual(tok.eos_token_id, 257)

    def test_model_lookup(self):
        self.assertEqual(hf_backend.model_dir(os.path.join(HERE, os.pardir, "models", "llama-3.6b")),
                         os.path.join(HERE, os.pardir, "models", "llama-3.6b"))
        for name in ("no-such-model", "../llama-3.6b", "org/model"):
            with self.subTest(name=name), self.assertRaises(FileNotFoundError):
                hf_backend.model_dir(name)


class SamplingTest(unittest.TestCase):
    def test_what_the_engine_honours(self):
        for sampling in ({}, {"temperature": 0.7, "top_p": 0.9}, {"top_k": 0}, {"top_k": -1},
                         {"max_tokens": 5, "stop": ["\n"]}, {"n": 1}, {"presence_penalty": 0},
                         {"response_format": {"type": "text"}}):
            with self.subTest(sampling=sampling):
                hf_backend.check_sampling(sampling, ENGINE)
        hf_backend.check_sampling({"temperature": 0, "top_p": 0.5}, {"temperature": 0, "top_p": 1, "top_k": 0})

    def test_what_it_rejects(self):
        for sampling, message in [
            ({"response_format": {"type": "json_object"}}, "cannot enforce response_format"),
            ({"n": 2}, "n>1"),
            ({"logprobs": True}, "logprobs"),
            ({"seed": 1}, "per-request seed"),
            ({"frequency_penalty": 0.5}, "frequency_penalty"),
            ({"temperature": 1.0}, "samples every request alike (temperature=0.7 top_p=0.9 top_k=0)"),
            ({"top_p": 0.5}, "this request asks {'top_p': 0.5}"),
            ({"top_k": 40}, "samples every request alike"),
            ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ]:
            with self.subTest(sampling=sampling), self.assertRaises(protocol.RequestError) as caught:
                hf_backend.check_sampling(sampling, ENGINE)
            self.assertEqual(caught.exception.code, protocol.CODE_INVALID_REQUEST)
            self.assertIn(message, caught.exception.message)

    def test_engine_sampling_comes_from_the_config(self):
        self.assertEqual(hf_backend.engine_sampling({}), ENGINE)
        self.assertEqual(hf_backend.engine_sampling({"sampling": {"temperature": 0, "top_p": None}}),
                         {"temperature": 0, "top_p": 0.9, "top_k": 0})

    def test_requests_in_the_engine_at_once(self):
        self.assertEqual(hf_backend.max_num_seqs({}), 256)
        self.assertEqual(hf_backend.max_num_seqs({"max_num_seqs": 64}), 64)
        with self.assertRaises(ValueError):
            hf_backend.max_num_seqs({"max_num_seqs": -1})


class FinishTest(unittest.TestCase):
    def setUp(self):
        self.tok = hf_backend.ByteTokenizer()
        self.eos = {257}

    def test_eos_and_length(self):
        tokens = list(b"Yes.") + [257]
        self.assertEqual(hf_backend.finish(self.tok, tokens, self.eos, 100, []), ("Yes.", "stop", 5))
        self.assertEqual(hf_backend.finish(self.tok, list(b"Yes, bu"), self.eos, 7, []), ("Yes, bu", "length", 7))

    def test_stop_sequence_cuts_text_and_count(self):
        tokens = list(b"first line\nsecond line") + [257]
        text, reason, count = hf_backend.finish(self.tok, tokens, self.eos, 100, ["\n", "zzz"])
        self.assertEqual((text, reason), ("first line", "stop"))
        self.assertEqual(count, len(b"first line\n"), "tokens up to the one that completed the stop")


class ContinuousBatchingConfigTest(unittest.TestCase):
    def test_cuda_graphs_unless_eager(self):
        self.assertEqual(hf_backend.continuous_batching_options({}), {"use_cuda_graph": True})
        self.assertEqual(hf_backend.continuous_batching_options({"enforce_eager": True}), {"use_cuda_graph": False})

    def test_config_fields_go_over_the_defaults(self):
        options = hf_backend.continuous_batching_options(
            {"continuous_batching": {"use_cuda_graph": [False, True], "scheduler_type": "prefill_first"}})
        self.assertEqual(options, {"use_cuda_graph": [False, True], "scheduler_type": "prefill_first"})

    def test_not_an_object_is_refused(self):
        with self.assertRaisesRegex(ValueError, "continuous_batching must be an object"):
            hf_backend.continuous_batching_kwargs({"continuous_batching": True})

    def test_what_reaches_transformers(self):
        try:
            from transformers.generation import ContinuousBatchingConfig  # noqa: F401
        except ImportError:
            # Without the class the defaults give way; fields the config asked for cannot.
            self.assertEqual(hf_backend.continuous_batching_kwargs({}), {})
            with self.assertRaises(ImportError):
                hf_backend.continuous_batching_kwargs({"continuous_batching": {"use_cuda_graph": True}})
            return
        kwargs = hf_backend.continuous_batching_kwargs({"enforce_eager": True})
        self.assertIs(kwargs["continuous_batching_config"].use_cuda_graph, False)


class LoadTest(unittest.TestCase):
    def test_without_torch_the_load_fails_cleanly(self):
        if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0:
            self.skipTest("torch is importable here; this case needs a host without it")
        config = {"backend": "transformers", "model": "llama-3.6b", "load_format": "dummy"}
        proc = subprocess.run([sys.executable, os.path.join(HERE, "runner.py"), "--config", json.dumps(config)],
                              input="", capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, protocol.EXIT_LOAD_FAILED)
        event = json.loads(proc.stdout.splitlines()[0])
        self.assertEqual(event, {"event": "failed", "message": "transformers backend: No module named 'torch'"})


if __name__ == "__main__":
    unittest.main()
