"""The transformers backend: Hugging Face continuous batching on one GPU.

It is the GPU fallback where vLLM is missing, and the engine of the GPU smoke run:
with load_format=dummy it builds a model from a config shipped in this repository
(models/<name>/config.json) with random bf16 weights, as vLLM's dummy format does,
so a GPU host proves the whole path without downloading weights.

Requests stream in and results stream out through transformers' continuous
batching manager: model.init_continuous_batching(generation_config=...) returns a
ContinuousBatchingManager whose start() runs the batching loop in a thread,
add_request(input_ids=, request_id=, max_new_tokens=) queues a request,
get_result(timeout=) hands back each GenerationOutput (request_id, prompt_ids,
generated_tokens, error, is_finished()) as it finishes, cancel_request(id) aborts
and stop(block=, timeout=) ends it. Checked, with the search tool, against
huggingface/transformers main (src/transformers/generation/continuous_batching/
continuous_api.py, requests.py, cache.py, cb_logits_processors.py), and run on an
H100 with transformers 5.17.0 and torch 2.11.0+cu130: llama-3.6b with dummy
weights, 256 chat requests through direct.py, and the protocol's abort, shutdown,
stop sequences and per-request errors through runner.py.

The manager samples every request with the one GenerationConfig it was started
with (per-request temperature/top_p/top_k only exist in recent versions, behind a
flag), has no per-request seed, no penalties, no logprobs, no n > 1 and no
constrained decoding. So this backend runs one sampling setting per engine
(config "sampling", default temperature 0.7, top_p 0.9: the run defaults of
DESIGN.md) and rejects, for that request alone, what it cannot honour. Stop
sequences are applied to the decoded text afterwards.

Only the standard library at module level: torch and transformers are imported
inside load(), so the pure parts below are testable without them.
"""

import logging
import os
import threading
import time

from protocol import (
    CODE_ENGINE_ERROR,
    CODE_INVALID_REQUEST,
    EXIT_ENGINE_FAILED,
    GIB,
    Backend,
    RequestError,
    prompt_token_ids,
    prompt_too_long,
    response_format_type,
    sampling_of,
)

HERE = os.path.dirname(os.path.abspath(__file__))

# Measured working on the H100 (transformers 5.17, torch 2.11); config
# "attn_implementation" overrides it, e.g. to try "paged|flash_attention_2".
# transformers turns CUDA graphs off by itself where attention needs a mask, as
# SDPA's does; this backend turns them on (continuous_batching_options): on an H200
# they made the 3.6B model 24 % faster on the seed's workload, and its four engines
# on four GPUs ran at 1.000 of four times one (docs/benchmarks.md).
ATTN_IMPLEMENTATION = "paged|sdpa"
DEFAULT_ENGINE_SAMPLING = {"temperature": 0.7, "top_p": 0.9, "top_k": 0}
# The manager admits every request its paged cache holds; the worker keeps this many
# in the engine (config "max_num_seqs" overrides it), so that requests still
# waiting stay with the worker, free to go to whichever engine empties first.
# 256 is vLLM's long-standing default. On four H200s this random-weight model
# ran no faster at ~250 requests an engine than at 64 (docs/benchmarks.md).
DEFAULT_MAX_NUM_SEQS = 256
START_TIMEOUT_SECONDS = 600.0  # building the paged cache (and compiling) can be slow
POLL_SECONDS = 0.1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


# ---------------------------------------------------------------------------
# The byte tokenizer: for a dummy model shipped without tokenizer files. Dummy
# models pack four bytes a token, so a workload costs the GPU what it would with a
# real tokenizer.
DUMMY_BYTES_PER_TOKEN = 4


class ByteTokenizer:
    """Bytes of UTF-8 become token ids; BOS, EOS and PAD follow the 256 byte ids. It
    answers the calls the runner makes of a Hugging Face tokenizer (encode, decode,
    apply_chat_template). A random-weights model draws ids from its whole
    vocabulary; ids past the specials decode to printable ASCII so that its text
    has the length its token count suggests.

    bytes_per_token > 1 packs that many bytes into one id above the specials, as a
    BPE vocabulary packs about four bytes of English into a token: the GPU then does
    the work a real tokenizer would give it for the same text (a 3,150-byte résumé is
    about 790 tokens, not 3,150). Packed ids cannot be decoded back to the prompt's
    bytes, which nothing needs: only a random-weights model's output is decoded."""

    def __init__(self, vocab_size=128256, bos_token_id=256, eos_token_id=257, pad_token_id=258,
                 bytes_per_token=1):
        if min(bos_token_id, eos_token_id, pad_token_id) < 256:
            raise ValueError("the byte tokenizer's special ids must come after the 256 byte ids")
        if bytes_per_token < 1:
            raise ValueError("bytes_per_token must be at least 1")
        self.vocab_size = vocab_size
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.bytes_per_token = bytes_per_token
        self._specials = {bos_token_id, eos_token_id, pad_token_id}
        self._first_packed = max(self._specials) + 1

    def encode(self, text, add_special_tokens=True):
        data = text.encode("utf-8")
        k = self.bytes_per_token
        if k == 1:
            ids = list(data)
        else:
            span = self.vocab_size - self._first_packed
            ids = [self._first_packed + int.from_bytes(data[i:i + k], "little") % span
                   for i in range(0, len(data), k)]
        return [self.bos_token_id] + ids if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens=True):
        out = bytearray()
        for i in ids:
            if i in self._specials:
                if not skip_special_tokens:
                    out += {self.bos_token_id: b"<s>", self.eos_token_id: b"</s>"}.get(i, b"<pad>")
            elif 0 <= i < 256:
                out.append(i)
            else:
                out.extend(32 + (i + j) % 95 for j in range(self.bytes_per_token))
        return out.decode("utf-8", "replace")

    def apply_chat_template(self, conversation, tokenize=True, add_generation_prompt=False, **_):
        """A plain template: a <|role|> line before each message, and the assistant's
        line when add_generation_prompt asks for the model's turn."""
        text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in conversation)
        if add_generation_prompt:
            text += "<|assistant|>\n"
        return self.encode(text, add_special_tokens=False) if tokenize else text


# ---------------------------------------------------------------------------
# Model configs shipped for load_format=dummy.

def model_dir(model):
    """The folder holding config.json for model: model itself when it is such a
    folder, else models/<model> next to the runner (the worker writes models/ beside
    runner.py) or in this repository's internal/engine/models."""
    if os.path.isfile(os.path.join(model, "config.json")):
        return model
    if os.sep in model or (os.altsep and os.altsep in model) or model.startswith("."):
        raise FileNotFoundError(f"no config.json in {model}")
    for root in (os.path.join(HERE, "models"), os.path.join(HERE, os.pardir, "models")):
        candidate = os.path.join(root, model)
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return os.path.normpath(candidate)
    raise FileNotFoundError(f"no shipped config for model {model!r} (looked for models/{model}/config.json)")


def llama_parameter_count(config):
    """Parameters of a Llama-shaped decoder from its config.json fields: embeddings,
    per layer q/k/v/o projections, gated MLP and two RMSNorms, final norm, and an
    LM head unless tied to the embeddings."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads") or heads
    inter = config["intermediate_size"]
    vocab = config["vocab_size"]
    attn = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
    if config.get("attention_bias"):
        attn += heads * head_dim + 2 * kv * head_dim + hidden
    mlp = 3 * hidden * inter
    layer = attn + mlp + 2 * hidden
    embed = vocab * hidden
    head = 0 if config.get("tie_word_embeddings") else vocab * hidden
    return embed + config["num_hidden_layers"] * layer + hidden + head


# ---------------------------------------------------------------------------
# Requests: what the manager can honour, and what becomes of its output.

def engine_sampling(config):
    sampling = dict(DEFAULT_ENGINE_SAMPLING)
    sampling.update({k: v for k, v in (config.get("sampling") or {}).items() if v is not None})
    return sampling


def max_num_seqs(config):
    value = int(config.get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS)
    if value < 1:
        raise ValueError("max_num_seqs must be at least 1")
    return value


def continuous_batching_options(config):
    """The ContinuousBatchingConfig fields this engine runs with: CUDA graphs unless
    config "enforce_eager" (as vLLM runs), then config "continuous_batching", a
    dict of ContinuousBatchingConfig fields, over them."""
    options = config.get("continuous_batching") or {}
    if not isinstance(options, dict):
        raise ValueError("continuous_batching must be an object of ContinuousBatchingConfig fields")
    return dict({"use_cuda_graph": not config.get("enforce_eager")}, **options)


def continuous_batching_kwargs(config):
    """init_continuous_batching's keyword for continuous_batching_options. A
    transformers without ContinuousBatchingConfig runs with its own defaults unless
    the config asked for fields, which it then cannot honour."""
    options = continuous_batching_options(config)
    try:
        from transformers.generation import ContinuousBatchingConfig
    except ImportError:
        if config.get("continuous_batching"):
            raise
        return {}
    return {"continuous_batching_config": ContinuousBatchingConfig(**options)}


def check_sampling(sampling, engine):
    """Raises RequestError for a sampling field this engine cannot honour. engine is
    the engine's one sampling setting (temperature, top_p, top_k); a request may
    leave those out or repeat them, not ask for others."""
    def reject(what):
        raise RequestError(CODE_INVALID_REQUEST, f"transformers backend {what}")

    if response_format_type(sampling) != "text":
        reject("cannot enforce response_format")
    n = sampling.get("n")
    if n is not None and n != 1:
        reject("does not support n>1")
    if sampling.get("logprobs") or sampling.get("top_logprobs") is not None:
        reject("does not support logprobs")
    if sampling.get("seed") is not None:
        reject("has no per-request seed")
    for key in ("presence_penalty", "frequency_penalty"):
        if sampling.get(key) not in (None, 0, 0.0):
            reject(f"does not support {key}")
    max_tokens = sampling.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise RequestError(CODE_INVALID_REQUEST, "max_tokens must be a positive integer")

    def differs(key, engine_value, disabled):
        asked = sampling.get(key)
        if asked is None:
            return False
        if asked in disabled:
            asked = disabled[0]
        return abs(float(asked) - float(engine_value)) > 1e-6

    greedy = float(engine["temperature"]) == 0
    if differs("temperature", engine["temperature"], ()) or not greedy and (
            differs("top_p", engine["top_p"] or 1.0, (1.0,))
            or differs("top_k", engine["top_k"] or 0, (0, -1))):
        asked = {k: sampling[k] for k in ("temperature", "top_p", "top_k") if sampling.get(k) is not None}
        reject(f"samples every request alike (temperature={engine['temperature']} "
               f"top_p={engine['top_p']} top_k={engine['top_k']}); this request asks {asked}")


def stop_sequences(sampling):
    stop = sampling.get("stop") or []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


def finish(tokenizer, tokens, eos_ids, max_new_tokens, stops):
    """(text, finish_reason, completion_tokens) of a finished generation. A stop
    sequence cuts the text before it and counts the tokens up to the one that
    completed it: the manager cannot stop on a string, so the model ran on to EOS
    or its token limit, and that extra work is not the answer's."""
    tokens = list(tokens)
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    if cut >= 0:
        lo, hi = 1, len(tokens)  # the fewest tokens whose text holds a stop sequence
        while lo < hi:
            mid = (lo + hi) // 2
            if any(s in tokenizer.decode(tokens[:mid], skip_special_tokens=True) for s in stops):
                hi = mid
            else:
                lo = mid + 1
        return text[:cut], "stop", lo
    if tokens and tokens[-1] in eos_ids:
        return text, "stop", len(tokens)
    return text, "length" if len(tokens) >= max_new_tokens else "stop", len(tokens)


def _eos_ids(value):
    if value is None:
        return set()
    return {value} if isinstance(value, int) else {int(v) for v in value}


class _Job:
    __slots__ = ("prompt_tokens", "max_new_tokens", "stops")

    def __init__(self, prompt_tokens, max_new_tokens, stops):
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.stops = stops


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, config, emitter, log):
        super().__init__(config, emitter, log)
        self.sampling = engine_sampling(config)
        self.attn_implementation = config.get("attn_implementation") or ATTN_IMPLEMENTATION
        self.manager = None
        self.tokenizer = None
        self.max_model_len = 0
        self._eos = set()
        self._lock = threading.Lock()
        self._live = {}  # id -> _Job, from submit until its event or its abort
        self._stopping = threading.Event()
        self._collector = threading.Thread(target=self._collect, name="hf-results", daemon=True)

    def load(self):
        import torch  # first: a host without it reads "No module named 'torch'"
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        if not torch.cuda.is_available():
            raise RuntimeError("the transformers backend runs on a CUDA GPU and torch sees none")
        model_name = self.config.get("model") or ""
        dummy = self.config.get("load_format") == "dummy"
        torch.manual_seed(int(self.sampling.get("seed") or 0))  # the same random weights each start
        if dummy:
            folder = model_dir(model_name)
            hf_config = AutoConfig.from_pretrained(folder)
            with torch.device("cuda"):
                model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16,
                                                         attn_implementation=self.attn_implementation)
            if any(os.path.exists(os.path.join(folder, f)) for f in TOKENIZER_FILES):
                self.tokenizer = AutoTokenizer.from_pretrained(folder)
            else:
                self.tokenizer = ByteTokenizer(hf_config.vocab_size, hf_config.bos_token_id,
                                               hf_config.eos_token_id, hf_config.pad_token_id,
                                               bytes_per_token=DUMMY_BYTES_PER_TOKEN)
        else:
            model = AutoModelForCausalLM.from_pretrained(model_name, dtype=torch.bfloat16,
                                                         attn_implementation=self.attn_implementation,
                                                         device_map="cuda")
            self.tokenizer = AutoTokenizer.from_pretrained(model_name)
        model.eval()
        self.max_model_len = int(self.config.get("max_model_len")
                                 or getattr(model.config, "max_position_embeddings", 0) or 4096)
        eos = getattr(model.generation_config, "eos_token_id", None) if model.generation_config else None
        if eos is None:
            eos = getattr(self.tokenizer, "eos_token_id", None)
        self._eos = _eos_ids(eos)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        temperature = float(self.sampling["temperature"])
        generation_config = GenerationConfig(
            max_new_tokens=self.max_model_len,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=float(self.sampling["top_p"]) if temperature > 0 else None,
            top_k=int(self.sampling["top_k"] or 0) if temperature > 0 else None,
            eos_token_id=sorted(self._eos) if self._eos else None,
            pad_token_id=pad if pad is not None else (min(self._eos) if self._eos else None),
        )
        self.manager = model.init_continuous_batching(generation_config=generation_config,
                                                      **continuous_batching_kwargs(self.config))
        self.manager.start()
        # The batching loop builds its paged KV cache in its own thread; wait for it,
        # so the ready event can say how large it is.
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while getattr(self.manager, "batch_processor", None) is None:
            if not self.manager.is_running():
                raise RuntimeError("the continuous batching loop stopped while starting; see the log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the continuous batching loop was not up within {START_TIMEOUT_SECONDS:.0f}s")
            time.sleep(POLL_SECONDS)
        self._collector.start()
        info = self._ready_info(torch, transformers, model, dummy)
        self.log.info("loaded %s (%s): %s", model_name,
                      "random weights, load_format=dummy" if dummy else "pretrained weights",
                      " ".join(f"{k}={v}" for k, v in sorted(info.items()) if k != "versions"))
        return info

    def _ready_info(self, torch, transformers, model, dummy):
        parameters = sum(p.numel() for p in model.parameters())
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        info = {
            "model": self.config.get("model"),
            "max_model_len": self.max_model_len,
            "max_num_seqs": max_num_seqs(self.config),
            "weights_gib": round(weight_bytes / GIB, 3),
            "parameters": parameters,
            "dummy_weights": dummy,
            "attn_implementation": self.attn_implementation,
            "sampling": self.sampling,
            "cuda_memory_allocated_gib": round(torch.cuda.memory_allocated() / GIB, 3),
            "cuda_memory_reserved_gib": round(torch.cuda.memory_reserved() / GIB, 3),
            "versions": {"torch": str(torch.__version__), "transformers": str(transformers.__version__)},
        }
        # What the manager settled on: CUDA graphs (varlen, decode) and async batching
        # are decided from the attention implementation where the config leaves them
        # unset, and they decide how much CPU each step costs.
        cb_config = getattr(self.manager, "continuous_batching_config", None)
        for field in ("use_cuda_graph", "use_async_batching"):
            value = getattr(cb_config, field, None)
            if value is not None:
                info[field] = list(value) if isinstance(value, tuple) else value
        cache = getattr(self.manager.batch_processor, "cache", None)
        blocks, block_size = getattr(cache, "num_blocks", None), getattr(cache, "block_size", None)
        if blocks and block_size:
            info["kv_cache_tokens"] = int(blocks) * int(block_size)
            info["max_concurrency"] = round(info["kv_cache_tokens"] / self.max_model_len, 2)
        tensors = list(getattr(cache, "key_cache", []) or []) + list(getattr(cache, "value_cache", []) or [])
        if tensors:
            info["kv_cache_gib"] = round(sum(t.numel() * t.element_size() for t in tensors) / GIB, 3)
        return info

    def submit(self, rid, request):
        sampling = sampling_of(request)
        check_sampling(sampling, self.sampling)
        ids = prompt_token_ids(self.tokenizer, request)
        if len(ids) >= self.max_model_len:
            raise prompt_too_long(len(ids), self.max_model_len)
        room = self.max_model_len - len(ids)
        max_new = min(sampling.get("max_tokens") or room, room)
        with self._lock:
            if rid in self._live:
                raise RequestError(CODE_ENGINE_ERROR, f"duplicate request id {rid}")
            self._live[rid] = _Job(len(ids), max_new, stop_sequences(sampling))
        try:
            self.manager.add_request(input_ids=ids, request_id=rid, max_new_tokens=max_new)
        except Exception:
            with self._lock:
                self._live.pop(rid, None)
            raise

    def abort(self, rid):
        with self._lock:
            if self._live.pop(rid, None) is None:
                return
        self.manager.cancel_request(rid)

    def close(self, drain):
        if drain:
            while self._pending() and self.manager.is_running():
                time.sleep(POLL_SECONDS)
        else:
            with self._lock:
                ids, self._live = list(self._live), {}
            for rid in ids:
                self.manager.cancel_request(rid)
        self._stopping.set()
        self.manager.stop(block=True, timeout=30)
        self._collector.join(timeout=5)
        with self._lock:
            unanswered, self._live = self._live, {}
        for rid in unanswered:
            self.emitter.error(rid, CODE_ENGINE_ERROR, "the engine stopped without answering")

    def _pending(self):
        with self._lock:
            return bool(self._live)

    def _collect(self):
        """Hands each finished generation to the emitter as it comes."""
        while True:
            output = self.manager.get_result(timeout=POLL_SECONDS)
            if output is None:
                if self._stopping.is_set():
                    return
                if not self.manager.is_running() and self._pending():
                    self._engine_failed()
                continue
            with self._lock:
                job = self._live.pop(output.request_id, None)
                if job is not None and output.error is None and not output.is_finished():
                    self._live[output.request_id] = job  # a partial output: wait for the end
                    continue
            if job is None:
                continue  # aborted
            if output.error is not None:
                # A failure in the batching loop fails every request it holds, then
                # ends the loop: that is the engine breaking, not this request.
                deadline = time.monotonic() + 1.0
                while self.manager.is_running() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not self.manager.is_running() and not self._stopping.is_set():
                    self._engine_failed()
                self.emitter.error(output.request_id, CODE_ENGINE_ERROR, str(output.error))
                continue
            try:
                text, reason, completion = finish(self.tokenizer, output.generated_tokens, self._eos,
                                                  job.max_new_tokens, job.stops)
            except Exception as e:
                self.log.exception("request %s: decoding failed", output.request_id)
                self.emitter.error(output.request_id, CODE_ENGINE_ERROR, f"{type(e).__name__}: {e}")
                continue
            prompt = len(output.prompt_ids) if getattr(output, "prompt_ids", None) else job.prompt_tokens
            self.emitter.result(output.request_id, text, reason, prompt, completion, 0)

    def _engine_failed(self):
        # In-process engine, no child processes to stop: exit at once, so the worker
        # restarts the engine and retries the chunks it held.
        self.log.critical("the continuous batching loop died with %d requests in flight; "
                          "exiting with status %d", len(self._live), EXIT_ENGINE_FAILED)
        logging.shutdown()
        os._exit(EXIT_ENGINE_FAILED)

