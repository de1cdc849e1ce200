"""The vllm backend: vLLM's offline engine, driven request by request.

This is the loop inside vLLM's LLM.generate, opened up. Requests are added to one
LLMEngine as the worker sends them, the main thread steps the engine, and each
request's answer goes out the moment it finishes, so continuous batching goes on
across chunks instead of draining at the end of each one.

The vLLM API used here was checked, with the search tool, against (read, not run):
  - vllm-project/vllm main: vllm/sampling_params.py (SamplingParams fields and
    _verify_args, StructuredOutputsParams, RequestOutputKind.FINAL_ONLY; validation
    errors are VLLMValidationError, a ValueError), vllm/outputs.py (RequestOutput,
    CompletionOutput), vllm/engine/arg_utils.py (EngineArgs field names),
    vllm/v1/engine/utils.py (wait_for_engine_startup copies num_gpu_blocks into the
    front-end's cache_config, so it is known in this process).
  - vllm/v1/engine/llm_engine.py, input_processor.py and output_processor.py of a
    2026 vLLM main (the local-inference-lab/vllm fork): add_request(request_id,
    prompt, params), step(), abort_request(request_ids, internal=False),
    has_unfinished_requests(), get_tokenizer(), vllm_config. vLLM suffixes request
    ids internally, but RequestOutput.request_id and abort_request take the id we
    gave. A raw TokensPrompt dict is still accepted there (with a one-time
    deprecation warning in favour of Renderer.render_cmpl).
  - docs.vllm.ai API pages of vllm.v1.engine.llm_engine for v0.11.0, v0.16.0 and
    v0.17.1 (same constructor and vllm_config attribute).
It needs vLLM >= 0.11: the V1 engine and the structured_outputs names (the old
guided_decoding / GuidedDecodingParams names are gone there).

Only the standard library at module level: vllm is imported inside load().
"""

import os
import queue
import re
import sys
import threading

from protocol import (
    CODE_ENGINE_ERROR,
    CODE_INVALID_REQUEST,
    CODE_PROMPT_TOO_LONG,
    EXIT_ENGINE_FAILED,
    Backend,
    RequestError,
    prompt_token_ids,
    prompt_too_long,
    response_format_type,
    sampling_of,
)

# How long an idle serve loop waits for a command before it looks at stop again.
IDLE_WAIT_SECONDS = 0.05
# How long a broken engine may take to shut down before the runner exits anyway.
EXIT_GRACE_SECONDS = 15.0

# Request fields that map one to one onto SamplingParams fields of the same name.
_PLAIN_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "seed", "presence_penalty",
                          "frequency_penalty", "n")


class VLLMLogTap:
    """Routes this process's stdout and stderr file descriptors through a pipe and
    copies every line on to the real stderr, reading on the way the figures vLLM
    logs but exposes nowhere else to this process: weights, KV-cache and CUDA-graph
    memory are measured in the engine-core process (or its tensor-parallel
    workers), which inherit these descriptors. These lines are where the seed
    report's memory breakdown came from too. A figure whose line never appears
    (another vLLM version, another wording) is simply absent.

    Only load() runs with the tap on this process's own descriptors; restore() puts
    them back, while vLLM's child processes keep writing through the pipe for as
    long as they live."""

    PATTERNS = (
        ("weights_gib", re.compile(r"Model loading took ([0-9.]+) ?GiB")),
        ("kv_cache_gib", re.compile(r"Available KV cache memory: ([0-9.]+) ?GiB")),
        ("graphs_gib", re.compile(r"Graph capturing finished in [0-9.]+ secs?, took (-?[0-9.]+) ?GiB")),
        ("kv_cache_tokens", re.compile(r"GPU KV cache size: ([0-9,]+) tokens")),
        ("max_concurrency", re.compile(r"Maximum concurrency for [0-9,]+ tokens per request: ([0-9.]+)x")),
    )
    _MARK = b"\x1evbatch-log-tap-sync\x1e"

    def __init__(self):
        self.figures = {}
        self._real_out = self._real_err = self._write = None
        self._thread = None
        self._cond = threading.Condition()
        self._marks_sent = 0
        self._marks_seen = 0

    def start(self):
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        self._real_out, self._real_err = os.dup(1), os.dup(2)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        self._write = write_fd  # kept open for sync marks
        self._thread = threading.Thread(target=self._copy, args=(read_fd,), name="vllm-log-tap",
                                        daemon=True)
        self._thread.start()

    def restore(self):
        if self._real_out is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._real_out, 1)
        os.dup2(self._real_err, 2)

    def sync(self, timeout=5.0):
        """Returns once every line written to the pipe before the call was copied."""
        if self._write is None or self._thread is None or not self._thread.is_alive():
            return
        with self._cond:
            self._marks_sent += 1
            target = self._marks_sent
        os.write(self._write, self._MARK + b"\n")
        with self._cond:
            self._cond.wait_for(lambda: self._marks_seen >= target, timeout)

    def close(self):
        """Lets the copier end once vLLM's processes have closed their ends too."""
        if self._write is not None:
            os.close(self._write)
            self._write = None

    def scan(self, line):
        for key, pattern in self.PATTERNS:
            match = pattern.search(line)
            if match:
                self.figures[key] = float(match.group(1).replace(",", ""))

    def _copy(self, read_fd):
        # Nothing here may log: a log line would come back through this very pipe.
        with open(read_fd, "rb") as pipe:
            for line in pipe:
                marks = line.count(self._MARK)
                if marks:
                    line = line.replace(self._MARK, b"")
                    if line == b"\n":
                        line = b""
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(self._real_err, view):]
                except OSError:
                    pass
                try:
                    self.scan(line.decode("utf-8", "replace"))
                except Exception:  # a figure we cannot read is a figure we leave out
                    pass
                if marks:
                    with self._cond:
                        self._marks_seen += marks
                        self._cond.notify_all()


def engine_args_kwargs(config):
    """EngineArgs keyword arguments from the runner config: only what the run set,
    so vLLM's own defaults hold for the rest."""
    model = config.get("model")
    if not model:
        raise ValueError("the vllm backend needs a model")
    kwargs = {"model": model}
    for key in ("gpu_memory_utilization", "max_model_len", "tensor_parallel_size",
                "kv_cache_dtype", "load_format", "max_num_seqs", "enforce_eager"):
        value = config.get(key)
        if value not in (None, "", 0):
            kwargs[key] = value
    if config.get("enable_prefix_caching") is not None:
        kwargs["enable_prefix_caching"] = bool(config["enable_prefix_caching"])
    return kwargs


class _Job:
    """What the result of one request needs beyond vLLM's output."""
    __slots__ = ("choices", "top_logprobs")

    def __init__(self, choices, top_logprobs):
        self.choices = choices  # report every choice (n > 1, or logprobs wanted)
        self.top_logprobs = top_logprobs  # None: no logprobs


def sampling_kwargs(sampling, structured_outputs_params):
    """SamplingParams keyword arguments for a request's sampling object, and the
    request's _Job. Raises RequestError for what the request got wrong;
    structured_outputs_params (vLLM's class) may raise ValueError."""
    # vLLM's own default is 16 tokens; a request without max_tokens means "up to the
    # end of the context", as in vLLM's OpenAI server.
    kwargs = {"max_tokens": sampling.get("max_tokens")}
    for key in _PLAIN_SAMPLING_FIELDS:
        if sampling.get(key) is not None:
            kwargs[key] = sampling[key]
    stop = sampling.get("stop")
    if stop:
        kwargs["stop"] = [stop] if isinstance(stop, str) else list(stop)
    top = sampling.get("top_logprobs")
    if sampling.get("logprobs"):
        # OpenAI's logprobs=true is the sampled token's logprob; top_logprobs adds
        # that many alternatives, which is what vLLM's logprobs=k returns.
        kwargs["logprobs"] = int(top or 0)
    elif top is not None:
        raise RequestError(CODE_INVALID_REQUEST, "top_logprobs needs logprobs: true")
    fmt = response_format_type(sampling)
    if fmt == "json_schema":
        spec = sampling["response_format"].get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise RequestError(CODE_INVALID_REQUEST,
                               "response_format.json_schema.schema must be an object")
        kwargs["structured_outputs"] = structured_outputs_params(json=schema)
    elif fmt == "json_object":
        kwargs["structured_outputs"] = structured_outputs_params(json_object=True)
    n = sampling.get("n")
    job = _Job(choices=(isinstance(n, int) and n > 1) or "logprobs" in kwargs,
               top_logprobs=kwargs.get("logprobs"))
    return kwargs, job


def add_error_code(error):
    """vLLM rejects a request in add_request with a ValueError; a prompt over the
    context reads "... is longer than the maximum model length of N"."""
    return CODE_PROMPT_TOO_LONG if "maximum model length" in str(error) else CODE_INVALID_REQUEST


def _token_entry(token_id, logprob):
    token = logprob.decoded_token if logprob is not None and logprob.decoded_token is not None else ""
    return {
        "token": token,
        "logprob": logprob.logprob if logprob is not None else None,
        "bytes": list(token.encode("utf-8")),
    }


def openai_logprobs(completion, top):
    """A CompletionOutput's logprobs (one {token_id: Logprob} dict a position, the
    sampled token among them) in the shape of OpenAI's chat choice.logprobs."""
    content = []
    positions = completion.logprobs or []
    for i, token_id in enumerate(completion.token_ids):
        entries = positions[i] if i < len(positions) else {}
        ranked = sorted(entries.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else 1 << 30)
        entry = _token_entry(token_id, entries.get(token_id))
        entry["top_logprobs"] = [_token_entry(t, lp) for t, lp in ranked[:top]]
        content.append(entry)
    return {"content": content}


def result_fields(output, job):
    """The result event's fields of one finished RequestOutput."""
    completions = sorted(output.outputs, key=lambda c: c.index)
    first = completions[0]
    fields = {
        "text": first.text,
        "finish_reason": first.finish_reason or "stop",
        "prompt_tokens": len(output.prompt_token_ids or ()),
        # Every choice's tokens, as OpenAI's usage counts them.
        "completion_tokens": sum(len(c.token_ids) for c in completions),
        "cached_tokens": int(getattr(output, "num_cached_tokens", 0) or 0),
    }
    if job.choices:
        choices = []
        for c in completions:
            choice = {"index": c.index, "text": c.text, "finish_reason": c.finish_reason or "stop",
                      "completion_tokens": len(c.token_ids)}
            if job.top_logprobs is not None:
                choice["logprobs"] = openai_logprobs(c, job.top_logprobs)
            choices.append(choice)
        fields["choices"] = choices
        if job.top_logprobs is not None:
            fields["logprobs"] = choices[0]["logprobs"]
    return fields


class VLLMBackend(Backend):
    """The reader thread validates and tokenizes each request (tokenizers release the
    GIL, so this overlaps the engine's steps) and queues it; the main thread owns
    the LLMEngine, which is not thread-safe: between two steps it adds what was
    queued and aborts what was cancelled."""

    name = "vllm"

    def __init__(self, config, emitter, log):
        super().__init__(config, emitter, log)
        self.engine = None
        self.tokenizer = None
        self.max_model_len = 0
        self._commands = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = {}  # id -> _Job, from submit until its event or its abort
        self._in_engine = set()  # ids added to the engine; the serving thread's alone
        self._tap = VLLMLogTap()

    def load(self):
        import vllm  # first: a host without vLLM reads "No module named 'vllm'"
        from vllm import EngineArgs, LLMEngine, SamplingParams
        try:
            from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        except ImportError as e:
            raise RuntimeError(f"vLLM {getattr(vllm, '__version__', '?')} is too old: the runner "
                               "needs >= 0.11 (StructuredOutputsParams)") from e
        self._sampling_params = SamplingParams
        self._structured_outputs_params = StructuredOutputsParams
        self._final_only = RequestOutputKind.FINAL_ONLY

        args = EngineArgs(**engine_args_kwargs(self.config))
        self._tap.start()
        try:
            self.engine = LLMEngine.from_engine_args(args)
        finally:
            self._tap.sync()
            self._tap.restore()
        vllm_config = self.engine.vllm_config
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        self.tokenizer = self.engine.get_tokenizer()
        info = {"model": self.config.get("model"), "max_model_len": self.max_model_len}
        info.update(self._memory_figures(vllm_config))
        # The scheduler's batch: the worker keeps the queue just deeper than it.
        max_num_seqs = getattr(getattr(vllm_config, "scheduler_config", None), "max_num_seqs", None)
        if max_num_seqs:
            info["max_num_seqs"] = int(max_num_seqs)
        versions = {"vllm": str(getattr(vllm, "__version__", "unknown"))}
        torch = sys.modules.get("torch")  # vLLM imported it; we need not
        if torch is not None:
            versions["torch"] = str(getattr(torch, "__version__", "unknown"))
        info["versions"] = versions
        self.log.info("loaded %s: max_model_len=%d %s", info["model"], self.max_model_len,
                      " ".join(f"{k}={v}" for k, v in sorted(info.items())
                               if k not in ("model", "max_model_len", "versions")))
        return info

    def _memory_figures(self, vllm_config):
        figures = self._tap.figures
        out = {}
        cache = vllm_config.cache_config
        blocks, block_size = getattr(cache, "num_gpu_blocks", None), getattr(cache, "block_size", None)
        if blocks and block_size:
            out["kv_cache_tokens"] = int(blocks) * int(block_size)
        elif "kv_cache_tokens" in figures:
            out["kv_cache_tokens"] = int(figures["kv_cache_tokens"])
        # vLLM logs memory per GPU; tensor-parallel ranks hold equal shards.
        tp = int(self.config.get("tensor_parallel_size") or 1)
        for key in ("weights_gib", "kv_cache_gib", "graphs_gib"):
            if key in figures:
                out[key] = round(figures[key] * tp, 3)
        if "max_concurrency" in figures:
            out["max_concurrency"] = figures["max_concurrency"]
        elif out.get("kv_cache_tokens"):
            out["max_concurrency"] = round(out["kv_cache_tokens"] / self.max_model_len, 2)
        return out

    def submit(self, rid, request):
        sampling = sampling_of(request)
        ids = prompt_token_ids(self.tokenizer, request)
        if len(ids) >= self.max_model_len:
            raise prompt_too_long(len(ids), self.max_model_len)
        try:
            kwargs, job = sampling_kwargs(sampling, self._structured_outputs_params)
            # An answer ends with the context, whatever max_tokens asked: said here so
            # it holds in every vLLM version (the sim backend does the same).
            room = self.max_model_len - len(ids)
            kwargs["max_tokens"] = room if kwargs["max_tokens"] is None else min(kwargs["max_tokens"], room)
            kwargs["output_kind"] = self._final_only  # one output a request, when done
            params = self._sampling_params(**kwargs)
        except ValueError as e:  # vLLM's validation of a sampling value
            raise RequestError(CODE_INVALID_REQUEST, str(e)) from e
        with self._lock:
            if rid in self._live:
                raise RequestError(CODE_ENGINE_ERROR, f"duplicate request id {rid}")
            self._live[rid] = job
        self._commands.put(("add", rid, {"prompt_token_ids": ids}, params))

    def abort(self, rid):
        with self._lock:
            if self._live.pop(rid, None) is None:
                return
        self._commands.put(("abort", rid, None, None))

    def serve(self, stop):
        try:
            while not stop.is_set():
                self._turn()
        except Exception:
            self._engine_failed()

    def close(self, drain):
        try:
            if drain:
                while not self._commands.empty() or self.engine.has_unfinished_requests():
                    self._turn()
            elif self._in_engine:
                self.engine.abort_request(sorted(self._in_engine))
                self._in_engine.clear()
        except Exception:
            self._engine_failed()
        with self._lock:
            unanswered, self._live = self._live, {}
        if drain:
            for rid in unanswered:  # never expected: the engine lost a request
                self.emitter.error(rid, CODE_ENGINE_ERROR, "the engine finished without answering")
        self._tap.close()

    def _turn(self):
        """One pass of the serving loop: take the queued commands (waiting for one
        while the engine is idle), then step the engine if it has work."""
        self._take_commands(wait=not self.engine.has_unfinished_requests())
        if self.engine.has_unfinished_requests():
            self._deliver(self.engine.step())

    def _take_commands(self, wait):
        try:
            command = self._commands.get(timeout=IDLE_WAIT_SECONDS) if wait else self._commands.get_nowait()
        except queue.Empty:
            return
        while True:
            self._apply(*command)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return

    def _apply(self, op, rid, prompt, params):
        if op == "abort":
            if rid in self._in_engine:
                self._in_engine.discard(rid)
                self.engine.abort_request([rid])
            return
        with self._lock:
            if rid not in self._live:
                return  # aborted before it reached the engine
        try:
            self.engine.add_request(rid, prompt, params)
        except ValueError as e:
            self._fail(rid, add_error_code(e), str(e))
            return
        except Exception as e:  # one request's failure must not stop the others
            self.log.exception("request %s: add_request failed", rid)
            self._fail(rid, CODE_ENGINE_ERROR, f"{type(e).__name__}: {e}")
            return
        self._in_engine.add(rid)

    def _fail(self, rid, code, message):
        with self._lock:
            if self._live.pop(rid, None) is None:
                return
        self.emitter.error(rid, code, message)

    def _deliver(self, outputs):
        for output in outputs:
            if not output.finished:
                continue
            rid = output.request_id
            self._in_engine.discard(rid)
            with self._lock:
                job = self._live.pop(rid, None)
            if job is None:
                continue  # aborted while it ran
            try:
                fields = result_fields(output, job)
            except Exception as e:
                self.log.exception("request %s: reading vLLM's output failed", rid)
                self.emitter.error(rid, CODE_ENGINE_ERROR, f"{type(e).__name__}: {e}")
                continue
            self.emitter.result(rid, **fields)

    def _engine_failed(self):
        """The engine itself broke (an engine-core crash, CUDA OOM): every request in
        it is lost, so the runner exits and the worker restarts it and retries the
        chunks. It exits through SystemExit so vLLM's exit handlers stop its engine
        processes, which would otherwise hold the GPU; a watchdog ends the process
        if they hang."""
        self.log.critical("the vLLM engine failed; exiting with status %d", EXIT_ENGINE_FAILED,
                          exc_info=True)
        self._tap.sync()  # the engine core's own traceback reaches the log first
        watchdog = threading.Timer(EXIT_GRACE_SECONDS, os._exit, args=(EXIT_ENGINE_FAILED,))
        watchdog.daemon = True
        watchdog.start()
        raise SystemExit(EXIT_ENGINE_FAILED)

