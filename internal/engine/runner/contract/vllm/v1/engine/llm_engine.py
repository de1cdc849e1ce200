"""vllm.v1.engine.llm_engine: a fake LLMEngine with real vLLM's methods and
signatures (from_engine_args, add_request, step, abort_request,
has_unfinished_requests, get_num_unfinished_requests, get_tokenizer, vllm_config)
and behaviour the runner relies on: FINAL_ONLY outputs arrive once per request
when it finishes, requests finish in the order their answers end (not the order
they came), add_request rejects an over-long prompt with a ValueError, and the
output's request_id is the id the caller gave. See ../../../README.md."""

import json
import os
import subprocess
import sys
import time

from vllm.exceptions import VLLMValidationError
from vllm.logprobs import Logprob
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind, SamplingParams

_BOS, _EOS, _OFFSET = 1, 2, 3  # byte b is token b + 3, as in a byte-fallback vocabulary


def _env_float(name, default):
    value = os.environ.get(name)
    return float(value) if value else default


class FakeTokenizer:
    """Byte-level, with a ChatML chat template that starts with the text "<s>"."""

    bos_token_id = _BOS
    eos_token_id = _EOS

    def encode(self, text, add_special_tokens=True, **kwargs):
        ids = [b + _OFFSET for b in text.encode("utf-8")]
        return [_BOS] + ids if add_special_tokens else ids

    def decode(self, token_ids, skip_special_tokens=False, **kwargs):
        return bytes(t - _OFFSET for t in token_ids if t >= _OFFSET).decode("utf-8", "replace")

    def apply_chat_template(self, conversation, tools=None, documents=None, chat_template=None,
                            add_generation_prompt=False, continue_final_message=False, tokenize=True,
                            padding=False, truncation=False, max_length=None, return_tensors=None,
                            return_dict=False, return_assistant_tokens_mask=False, tokenizer_kwargs=None,
                            **kwargs):
        text = "<s>"
        for message in conversation:
            if message["role"] not in ("system", "user", "assistant", "tool"):
                raise ValueError(f"Unknown role {message['role']!r} in the chat template")
            # A Jinja template concatenating a list would not render text; be as strict.
            text += "<|im_start|>" + message["role"] + "\n" + message["content"] + "<|im_end|>\n"
        if add_generation_prompt:
            text += "<|im_start|>assistant\n"
        return self.encode(text, add_special_tokens=False) if tokenize else text


def _schema_value(schema):
    """A value that satisfies a simple JSON schema, as constrained decoding would give."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {k: _schema_value(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_schema_value(schema.get("items") or {})]
    return {"string": "fake", "boolean": True, "integer": 1, "number": 1.5}.get(kind)


class _Sequence:
    def __init__(self, request_id, prompt_ids, params, tokenizer, max_model_len, cached, fail):
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.params = params
        self.cached = cached
        self.fail = fail
        self.done = 0
        budget = max_model_len - len(prompt_ids)
        if params.max_tokens is not None:
            budget = min(budget, params.max_tokens)
        self.choices = [self._plan(tokenizer, i, budget) for i in range(params.n)]
        self.steps_needed = max(len(c[1]) for c in self.choices)

    def _plan(self, tokenizer, index, budget):
        structured = self.params.structured_outputs
        if structured is not None and structured.json is not None:
            schema = structured.json if isinstance(structured.json, dict) else json.loads(structured.json)
            text = json.dumps(_schema_value(schema))
        elif structured is not None and structured.json_object:
            text = json.dumps({"answer": "fake"})
        else:
            tail = tokenizer.decode(self.prompt_ids[-24:])
            text = (f"Fake vLLM answer {index} to a {len(self.prompt_ids)}-token prompt ending {tail!r}. "
                    + "The candidate's record reads well overall. " * 6)
        stop_reason = None
        cuts = [text.find(s) for s in self.params.stop if s in text]
        if cuts:
            cut = min(cuts)
            stop_reason = next(s for s in self.params.stop if text.find(s) == cut)
            text = text[:cut]
            tokens = tokenizer.encode(text, add_special_tokens=False)
            reason = "stop"
        else:
            tokens = tokenizer.encode(text, add_special_tokens=False) + [_EOS]
            reason = "stop"
        if len(tokens) > budget:
            tokens, reason, stop_reason = tokens[:budget], "length", None
        return index, tokens, reason, stop_reason

    def output(self, tokenizer, finished):
        completions = []
        for index, tokens, reason, stop_reason in self.choices:
            shown = tokens if finished else tokens[:self.done]
            logprobs = None
            if self.params.logprobs is not None:
                logprobs = []
                for t in shown:
                    entry = {t: Logprob(logprob=-0.25, rank=1, decoded_token=tokenizer.decode([t]))}
                    for j in range(self.params.logprobs):
                        alt = t + 1 + j
                        entry[alt] = Logprob(logprob=-1.5 - j, rank=2 + j, decoded_token=tokenizer.decode([alt]))
                    logprobs.append(entry)
            completions.append(CompletionOutput(
                index=index, text=tokenizer.decode(shown), token_ids=list(shown),
                cumulative_logprob=-0.25 * len(shown) if logprobs is not None else None,
                logprobs=logprobs, finish_reason=reason if finished else None,
                stop_reason=stop_reason if finished else None))
        return RequestOutput(request_id=self.request_id, prompt=None, prompt_token_ids=list(self.prompt_ids),
                             prompt_logprobs=None, outputs=completions, finished=finished,
                             num_cached_tokens=self.cached)


class LLMEngine:
    """Legacy LLMEngine for backwards compatibility."""

    def __init__(self, vllm_config, executor_class=None, log_stats=False, aggregate_engine_logging=False,
                 usage_context=None, stat_loggers=None, mm_registry=None, use_cached_outputs=False,
                 multiprocess_mode=False):
        self.vllm_config = vllm_config
        self.model_config = vllm_config.model_config
        self.log_stats = log_stats
        self.tokenizer = FakeTokenizer()
        self._running = {}
        self._prompts = []
        self._step_seconds = _env_float("VBATCH_FAKE_VLLM_STEP_SECONDS", 0.005)
        self._tokens_per_step = int(_env_float("VBATCH_FAKE_VLLM_TOKENS_PER_STEP", 4))
        self._fail_on = os.environ.get("VBATCH_FAKE_VLLM_FAIL_ON", "")

    @classmethod
    def from_engine_args(cls, engine_args, usage_context=None, stat_loggers=None,
                         enable_multiprocessing=False):
        vllm_config = engine_args.create_engine_config(usage_context)
        _engine_core_startup_log(vllm_config)
        return cls(vllm_config=vllm_config, log_stats=not engine_args.disable_log_stats,
                   usage_context=usage_context, stat_loggers=stat_loggers)

    def get_tokenizer(self):
        return self.tokenizer

    def get_num_unfinished_requests(self):
        return len(self._running)

    def has_unfinished_requests(self):
        return bool(self._running)

    def add_request(self, request_id, prompt, params, arrival_time=None, lora_request=None,
                    tokenization_kwargs=None, trace_headers=None, priority=0, prompt_text=None):
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a string, got {type(request_id)}")
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be either SamplingParams or PoolingParams, but got {type(params).__name__}")
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        elif isinstance(prompt, dict) and "prompt_token_ids" in prompt:
            ids = list(prompt["prompt_token_ids"])
        elif isinstance(prompt, dict) and "prompt" in prompt:
            ids = self.tokenizer.encode(prompt["prompt"])
        else:
            raise TypeError(f"unsupported prompt {type(prompt).__name__}")
        max_model_len = self.model_config.max_model_len
        if not ids:
            raise VLLMValidationError("The decoder prompt cannot be empty")
        if len(ids) > max_model_len:
            raise VLLMValidationError(
                f"The decoder prompt (length {len(ids)}) is longer than the maximum model length of "
                f"{max_model_len}. Make sure that `max_model_len` is no smaller than the number of text tokens.")
        if len(ids) == max_model_len:
            raise VLLMValidationError(
                f"The decoder prompt (length {len(ids)}) plus the number of requested output tokens (at least 1) "
                f"is longer than the maximum model length of {max_model_len}.")
        if params.logprobs is not None and params.logprobs > self.model_config.max_logprobs:
            raise VLLMValidationError(f"Requested sample logprobs of {params.logprobs}, which is greater "
                                      f"than max allowed: {self.model_config.max_logprobs}")
        cached = 0
        if self.vllm_config.cache_config.enable_prefix_caching:
            block = self.vllm_config.cache_config.block_size
            for earlier in self._prompts:
                common = 0
                for a, b in zip(earlier, ids):
                    if a != b:
                        break
                    common += 1
                cached = max(cached, min(common, len(ids) - 1) // block * block)
        self._prompts.append(ids)
        fail = bool(self._fail_on) and self._fail_on in self.tokenizer.decode(ids)
        self._running[request_id] = _Sequence(request_id, ids, params, self.tokenizer, max_model_len,
                                              cached, fail)
        return request_id

    def abort_request(self, request_ids, internal=False):
        aborted = [r for r in request_ids if self._running.pop(r, None) is not None]
        print(f"[fake vllm] abort_request({sorted(request_ids)}): aborted {len(aborted)}",
              file=sys.stderr, flush=True)

    def step(self):
        time.sleep(self._step_seconds)
        for seq in self._running.values():
            if seq.fail:
                print("[fake vllm] EngineCore_DP0 died: CUDA error: an illegal memory access was "
                      "encountered", file=sys.stderr, flush=True)
                raise RuntimeError("EngineCore encountered an issue. See stack trace (above) for the root cause.")
        outputs = []
        for rid, seq in list(self._running.items()):
            seq.done += self._tokens_per_step
            finished = seq.done >= seq.steps_needed
            if finished:
                del self._running[rid]
            if finished or seq.params.output_kind != RequestOutputKind.FINAL_ONLY:
                outputs.append(seq.output(self.tokenizer, finished))
        return outputs


def _engine_core_startup_log(vllm_config):
    """What vLLM's engine-core process prints while it starts, from a child process
    writing to the stdout it inherited, as the real one does."""
    cache = vllm_config.cache_config
    tokens = cache.num_gpu_blocks * cache.block_size
    mml = vllm_config.model_config.max_model_len
    prefix = "(EngineCore_DP0 pid=4242) INFO 11-27 12:00:{:02d} [{}] "
    lines = [
        prefix.format(20, "gpu_model_runner.py:2602") + "Model loading took 7.1659 GiB and 3.041 seconds",
        prefix.format(29, "gpu_worker.py:298") + f"Available KV cache memory: {tokens * 131072 / (1 << 30):.2f} GiB",
        prefix.format(29, "kv_cache_utils.py:1087") + f"GPU KV cache size: {tokens:,} tokens",
        prefix.format(29, "kv_cache_utils.py:1091") + f"Maximum concurrency for {mml:,} tokens per request: "
                                                     f"{tokens / mml:.2f}x",
        prefix.format(38, "gpu_model_runner.py:3480") + "Graph capturing finished in 9 secs, took 0.52 GiB",
    ]
    subprocess.run([sys.executable, "-c", "import sys; sys.stdout.write(sys.argv[1])", "\n".join(lines) + "\n"],
                   check=True)
