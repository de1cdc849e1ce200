"""Feeds a JSONL file of OpenAI-Batch requests straight into one runner backend and
prints a JSON summary of what it did and how fast.

It is the GPU baseline of DESIGN.md ("Performance, as we measure it"): tokens/s
through the whole pipeline against the same engine fed directly, on the same GPU in
the same run; target pipeline / direct >= 0.97. "Directly" means no worker, no
Temporal, no S3 and no process protocol: the very Backend classes the runner serves
(runner.BACKENDS), loaded in this process and handed every request at once.

    python3 internal/engine/runner/direct.py --backend transformers \\
        --model llama-3.6b --load-format dummy --input requests.jsonl

The summary (stdout, one JSON object; the log goes to stderr):
  backend, simulated, model, lines, requests (submitted), results, errors (count by
  code), invalid_lines, prompt_tokens, completion_tokens, seconds (first submit to
  last result), tokens_per_second ((prompt + completion) / seconds, the way the seed
  report and vbatch's reports count throughput), completion_tokens_per_second,
  load_seconds, ready (the backend's ready fields).

Sampling fields a line leaves out take --defaults, which default to the workflow's
(temperature 0.7, top_p 0.9, max_tokens 2000): compare runs made with equal ones.
Standard library only, plus whatever the chosen backend imports in its load().
"""

import argparse
import json
import logging
import sys
import threading
import time

import runner
from protocol import CODE_ENGINE_ERROR, RequestError

# The workflow's sampling defaults (DESIGN.md, "The workflow").
WORKFLOW_DEFAULTS = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 2000}

_SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "top_k", "n", "seed", "stop",
                  "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs",
                  "response_format")


def request_of_line(obj, line, defaults):
    """The runner request (batchfile.Request's JSON shape) of one input line: the
    Batch form {"custom_id","method","url","body"} or the short form with messages or
    prompt at the top. Raises ValueError for a line it cannot use; the pipeline's
    Plan validates far more, this takes what a well-formed file holds."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise ValueError("no custom_id")
    body = obj.get("body") if isinstance(obj.get("body"), dict) else obj
    sampling = {}
    if body.get("max_completion_tokens") is not None:
        sampling["max_tokens"] = body["max_completion_tokens"]
    for key in _SAMPLING_KEYS:
        if body.get(key) is not None and key not in sampling:
            sampling[key] = body[key]
    if isinstance(sampling.get("stop"), str):
        sampling["stop"] = [sampling["stop"]]
    if isinstance(sampling.get("logprobs"), int) and not isinstance(sampling["logprobs"], bool):
        sampling["top_logprobs"] = sampling["logprobs"]  # /v1/completions: logprobs is a count
        sampling["logprobs"] = True
    for key, value in defaults.items():
        sampling.setdefault(key, value)
    request = {"custom_id": custom_id, "line": line, "sampling": sampling}
    if body.get("messages") is not None:
        request.update(kind="chat", messages=body["messages"])
    elif isinstance(body.get("prompt"), str):
        request.update(kind="completion", prompt=body["prompt"])
    else:
        raise ValueError("no messages and no prompt")
    return request


class Tally:
    """The backend's emitter: counts each outcome and remembers when the last came,
    optionally writing each as a JSON line to out. Each outcome also gives a place back
    to room, the feeder's window (see run)."""

    def __init__(self, out=None):
        self._lock = threading.Lock()
        self._out = out
        self.room = None  # a threading.Semaphore while a window is kept
        self.results = 0
        self.errors = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.first_submit = None
        self.last_outcome = None

    def emit(self, event):
        if self._out is not None:
            self._out.write(json.dumps(event, separators=(",", ":")) + "\n")

    def _count(self, event):
        self.last_outcome = time.monotonic()
        self.emit(event)
        if self.room is not None:
            self.room.release()

    def result(self, rid, text, finish_reason, prompt_tokens, completion_tokens, cached_tokens=0, **extra):
        with self._lock:
            self.results += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self._count(dict({"event": "result", "id": rid, "text": text, "finish_reason": finish_reason,
                              "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "cached_tokens": cached_tokens}, **extra))

    def error(self, rid, code, message):
        with self._lock:
            self.errors[code] = self.errors.get(code, 0) + 1
            self._count({"event": "error", "id": rid, "code": code, "message": message})


def read_requests(path, defaults, limit=None):
    """(requests as (id, request) pairs, lines read, invalid lines as {line: reason})."""
    requests, invalid, lines = [], {}, 0
    with open(path, encoding="utf-8") as f:
        for lines, text in enumerate(f, start=1):
            if limit is not None and len(requests) >= limit:
                lines -= 1
                break
            if not text.strip():
                continue
            try:
                request = request_of_line(json.loads(text), lines, defaults)
            except ValueError as e:  # json.JSONDecodeError is one too
                invalid[lines] = str(e)
                continue
            requests.append((str(len(requests) + 1), request))
    return requests, lines, invalid


def queue_margin(batch):
    """How many requests the worker keeps in an engine beyond its batch
    (workers.queueMargin): the window keeps the same."""
    return max(2, batch // 16)


def run(config, requests, tally, log, max_in_flight=None):
    """Loads the backend, feeds it the requests from a feeder thread (as the runner's
    command reader does) while the main thread serves, and returns (ready fields,
    load seconds).

    The feeder keeps at most max_in_flight requests in the backend, submitting the
    next as each has its outcome. None means what the worker keeps: the batch the
    backend says it runs (max_num_seqs) plus the worker's margin, so that the
    baseline runs the engine at the batch the pipeline does; an engine that runs
    whatever it is given (the transformers backend admits all its cache holds) would
    otherwise run another batch here than there. 0 hands over every request at once."""
    backend = runner.BACKENDS[config["backend"]](config, tally, log)
    started = time.monotonic()
    info = backend.load() or {}
    load_seconds = time.monotonic() - started
    if max_in_flight is None:
        batch = int(info.get("max_num_seqs") or 0)
        max_in_flight = batch + queue_margin(batch) if batch else 0
    if max_in_flight:
        tally.room = threading.Semaphore(max_in_flight)
        info = dict(info, direct_max_in_flight=max_in_flight)
    stop = threading.Event()

    def feed():
        try:
            tally.first_submit = time.monotonic()
            for rid, request in requests:
                if tally.room is not None:
                    tally.room.acquire()
                try:
                    backend.submit(rid, request)
                except RequestError as e:
                    tally.error(rid, e.code, e.message)
                except Exception as e:  # one request's failure must not stop the feed
                    log.exception("request %s failed", rid)
                    tally.error(rid, CODE_ENGINE_ERROR, f"{type(e).__name__}: {e}")
        finally:
            stop.set()  # like stdin's end: the backend finishes what it was given

    threading.Thread(target=feed, name="feed", daemon=True).start()
    backend.serve(stop)
    backend.close(True)
    return info, load_seconds


def summary(config, backend_class, info, load_seconds, tally, requests, lines, invalid):
    seconds = (tally.last_outcome - tally.first_submit) if tally.last_outcome and tally.first_submit else 0.0
    tokens = tally.prompt_tokens + tally.completion_tokens
    return {
        "backend": config["backend"],
        "simulated": backend_class.simulated,
        "model": info.get("model") or config.get("model") or "",
        "lines": lines,
        "requests": len(requests),
        "results": tally.results,
        "errors": dict(sorted(tally.errors.items())),
        "invalid_lines": len(invalid),
        "prompt_tokens": tally.prompt_tokens,
        "completion_tokens": tally.completion_tokens,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else 0.0,
        "completion_tokens_per_second": round(tally.completion_tokens / seconds, 1) if seconds > 0 else 0.0,
        "load_seconds": round(load_seconds, 3),
        "ready": info,
    }


def parse_args(argv):
    p = argparse.ArgumentParser(description="feed a JSONL batch straight into one runner backend")
    p.add_argument("--input", required=True, help="JSONL file of OpenAI-Batch request lines")
    p.add_argument("--output", help="write each result/error event to this JSONL file")
    p.add_argument("--backend", default="sim", choices=sorted(runner.BACKENDS))
    p.add_argument("--model", default="")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--tensor-parallel-size", type=int)
    p.add_argument("--kv-cache-dtype")
    p.add_argument("--load-format")
    p.add_argument("--enable-prefix-caching", type=lambda v: v.lower() in ("1", "true", "yes"))
    p.add_argument("--config", default="{}", help="runner config JSON, merged over the flags "
                   "(e.g. '{\"sim\":{\"tokens_per_second\":25000}}')")
    p.add_argument("--defaults", default=json.dumps(WORKFLOW_DEFAULTS),
                   help="sampling defaults for fields a line leaves out, as JSON")
    p.add_argument("--limit", type=int, help="feed only the first N requests")
    p.add_argument("--max-in-flight", type=int,
                   help="keep at most this many requests in the backend (default: its max_num_seqs plus the "
                   "worker's margin, as the pipeline does; 0: every request at once)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    config = {"backend": args.backend, "model": args.model}
    for key in ("max_model_len", "gpu_memory_utilization", "tensor_parallel_size", "kv_cache_dtype",
                "load_format", "enable_prefix_caching"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    config.update(json.loads(args.config))
    summary_stream = runner.take_stdout()  # a library that prints must not corrupt the summary
    log = runner.setup_logging(config["backend"])
    requests, lines, invalid = read_requests(args.input, json.loads(args.defaults), args.limit)
    for line, reason in sorted(invalid.items())[:20]:
        log.warning("line %d skipped: %s", line, reason)
    log.info("feeding %d requests from %s straight into the %s backend", len(requests), args.input,
             config["backend"])
    out = open(args.output, "w", encoding="utf-8") if args.output else None
    try:
        tally = Tally(out)
        info, load_seconds = run(config, requests, tally, log, args.max_in_flight)
    finally:
        if out is not None:
            out.close()
    result = summary(config, runner.BACKENDS[config["backend"]], info, load_seconds, tally, requests,
                     lines, invalid)
    summary_stream.write(json.dumps(result) + "\n")
    summary_stream.flush()
    log.info("%d results, %d errors in %.2fs: %.0f tokens/s (%.0f completion tokens/s)",
             result["results"], sum(result["errors"].values()), result["seconds"],
             result["tokens_per_second"], result["completion_tokens_per_second"])
    logging.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
